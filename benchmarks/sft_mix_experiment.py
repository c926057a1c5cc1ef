"""One SFT run of the demo model on a chosen task mix, scored per task family (an experiment).

The runs behind the "design choices" table of ``benchmarks/README.md``: the demo tiny VLM built
from scratch (demo architecture, the demo base model's tokenizer), ``STEPS`` optimizer steps of
batch 16 drawn at random (with replacement across batches) from a task-weighted pool of the demo
train rows, the plain PyTorch loop of :mod:`benchmarks._loop` (warmup 50, cosine), then greedy
answers to 80 held-out items per family (reports left out) scored by
:mod:`validation.task_families`.

Run::

    python benchmarks/sft_mix_experiment.py --steps 1400 --lr 2e-3 --loss-weighting square \\
        --weights '{"region_detection": 0.25, "single_label": 1.5, "lesion_detection": 3}'

Tasks missing from ``--weights`` weigh 1; weight 0 drops a task.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._loop import train_plain
from model.data.io import iter_parquet_rows
from model.tokenizer import load_tokenizer
from model.vlm import XMedProcessor, build_tiny_vlm_for_tokenizer, read_architecture
from validation.task_families import collect_items, headline, model_predictions, score_all


def weighted_pool(rows: list[dict], weights: dict[str, float], seed: int) -> list[int]:
    """Row indices: each task repeated ``int(w)`` times + a seeded ``frac(w)`` share of its rows."""
    rng = random.Random(seed)
    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_task.setdefault(r["task"], []).append(i)
    pool: list[int] = []
    for task, idx in sorted(by_task.items()):
        w = weights.get(task, 1.0)
        pool += idx * int(w) + rng.sample(idx, round((w - int(w)) * len(idx)))
    return pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/demo")
    ap.add_argument("--tokenizer", default="runs/demo/base_model/model")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--loss-weighting", choices=["token", "sample", "square"], default="token")
    ap.add_argument("--weights", default="{}", help="JSON task -> weight")
    ap.add_argument("--warmup-steps", type=int, default=0, help="steps drawn from --warmup-weights first")
    ap.add_argument("--warmup-weights", default="{}", help="JSON task -> weight; unlisted tasks weigh 0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    shards = data / "curated" / "shards"
    tok = load_tokenizer(args.tokenizer)
    arch, _ = read_architecture("model/configs/model/demo.yaml")
    arch["with_audio"] = False
    model = build_tiny_vlm_for_tokenizer(tok, seed=args.seed, **arch)
    proc = XMedProcessor.for_model(tok, model.config)
    rows = [r for r in iter_parquet_rows(shards) if r["split"] == "train"]
    pool = weighted_pool(rows, json.loads(args.weights), args.seed)
    rng = random.Random(args.seed)
    warm = json.loads(args.warmup_weights)
    warm_pool = weighted_pool(rows, {t: warm.get(t, 0.0) for t in {r["task"] for r in rows}}, args.seed)
    plan = [[warm_pool[j] for j in rng.sample(range(len(warm_pool)), 16)] for _ in range(args.warmup_steps)]
    plan += [
        [pool[j] for j in rng.sample(range(len(pool)), 16)] for _ in range(args.steps - args.warmup_steps)
    ]
    res = train_plain(
        model,
        lambda i: proc.encode_example(rows[i], data),
        plan,
        pad_id=tok.pad_token_id,
        warmup=50,
        lr=args.lr,
        loss_weighting=args.loss_weighting,
    )
    items = [it for it in collect_items(shards, per_family=80) if it.family != "report"]
    scores = score_all(items, model_predictions(model, proc, items, data_root=data, progress=False))
    print(
        json.dumps(
            {"steps": res.steps, "seconds": round(res.seconds, 1), "last_loss": round(res.last_loss, 3)}
        )
    )
    print(json.dumps({f: round(v, 3) for f, (_, v) in headline(scores).items()}))
    print(json.dumps(scores["guardrail"]))


if __name__ == "__main__":
    main()
