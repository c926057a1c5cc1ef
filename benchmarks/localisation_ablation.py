"""What each design choice buys (an experiment, not a test).

Trains the demo tiny VLM from scratch with the same budget (``--steps`` SFT steps of batch 16 on
the demo SFT mix with its task weights and loss weighting, plain PyTorch loop of
:mod:`benchmarks._loop`) once per variant, each variant changing ONE design choice of the
platform's model or recipe, then scores every short-answer task family on held-out items
(:mod:`validation.task_families`; reports are left out to save generation time), localisation
against the best constant box (the mean training box):

================  ===========================================================================
variant           change against ``full`` (the platform's design)
================  ===========================================================================
full              conv stem to an 8x8 grid, fixed 2D sin-cos positions, coordinate tokens
                  with smooth init, the demo SFT task weights and loss weighting, 64 px images
learned_pos       learned vision position table (plain ViT / LLaVA)
no_pos            no vision position embedding at all
random_coord      coordinate tokens with random (not smooth) initial embeddings
digit_coords      no coordinate tokens: numbers are BPE digit pieces
lesion_boxes_only task mix without the region tasks (boxes supervised by lesions only)
image_32          32 px images (same 8x8 grid, one stem stage less)
token_loss        every answer token weighs the same in the loss (long answers dominate)
mimetic_vision    mimetic initialisation of the vision transformer's attention (W_k = W_q, W_o W_v ~ -I)
================  ===========================================================================

Run: ``python benchmarks/localisation_ablation.py --data data/demo --steps 700 [--variants ...]``
(the demo data must exist: ``make run``). Prints a table and writes
``benchmarks/out/localisation_ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._loop import batch_plan, train_plain
from benchmarks.sft_mix_experiment import weighted_pool
from model.data.io import iter_parquet_rows
from model.recipes.config import load_recipe_config
from model.tokenizer import iter_training_texts, train_tokenizer
from model.vlm import XMedProcessor, build_tiny_vlm_for_tokenizer, read_architecture
from validation.task_families import (
    collect_items,
    majority_answers,
    majority_predictions,
    model_predictions,
    score_all,
)

REGION_TASKS = {"region_detection", "region_recognition", "region_vqa"}
VARIANTS: dict[str, dict] = {
    "full": {},
    "learned_pos": {"arch": {"position_embedding": "learned"}},
    "no_pos": {"arch": {"position_embedding": "none"}},
    "random_coord": {"smooth_coordinates": False},
    "digit_coords": {"coordinate_tokens": False},
    "lesion_boxes_only": {"drop_tasks": REGION_TASKS},
    "image_32": {"arch": {"image_size": 32}},
    "token_loss": {"loss_weighting": "token"},
    "mimetic_vision": {"arch": {"mimetic_vision": True}},
}
LOCALISATION = ("lesion_localisation", "region_detection")


#: ``--mix localisation``: only the box tasks (lesions up-weighted), the sharpest test of the vision
#: tower's spatial design; ``--mix demo``: the demo SFT config's task weights.
LOCALISATION_MIX = {"region_detection": 0.3, "lesion_detection": 3.0}


def run_variant(
    name: str, spec: dict, *, rows, items, tokenizers, data_root, steps, arch, sft, weights, seed
) -> dict:
    """Train one variant from scratch and score its held-out items."""
    tok = tokenizers[spec.get("coordinate_tokens", True)]
    a = {**arch, **spec.get("arch", {})}
    model = build_tiny_vlm_for_tokenizer(
        tok, seed=seed, smooth_coordinates=spec.get("smooth_coordinates", True), **a
    )
    proc = XMedProcessor.for_model(tok, model.config)
    dropped = {t: 0.0 for t in spec.get("drop_tasks", ())}
    pool = weighted_pool(rows, {**weights, **dropped}, seed)
    plan = [[pool[i] for i in b] for b in batch_plan(len(pool), steps=steps, batch_size=16, seed=seed)]
    res = train_plain(
        model,
        lambda i: proc.encode_example(rows[i], data_root),
        plan,
        pad_id=tok.pad_token_id,
        lr=sft.optim.lr,
        warmup=sft.optim.warmup_steps,
        loss_weighting=spec.get("loss_weighting", sft.train.loss_weighting),
    )
    scores = score_all(items, model_predictions(model, proc, items, data_root=data_root, progress=False))
    return {
        "variant": name,
        "train_rows": len(pool),
        "seconds": round(res.seconds, 1),
        "final_loss": round(res.last_loss, 3),
        **{fam: round(next(iter(m.values())), 4) for fam, m in scores.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/demo")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--per-family", type=int, default=150)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mix", choices=["demo", "localisation"], default="demo")
    ap.add_argument("--out", default="benchmarks/out/localisation_ablation.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    shards = data / "curated" / "shards"
    arch, vocab = read_architecture("model/configs/model/demo.yaml")
    arch["with_audio"] = False
    rows = [r for r in iter_parquet_rows(shards) if r["split"] == "train"]
    items = [
        it
        for it in collect_items(shards, per_family=args.per_family, seed=args.seed)
        if it.family != "report"
    ]
    constant = score_all(items, majority_predictions(items, majority_answers(shards)))
    sft = load_recipe_config("sft", "demo")
    weights = dict(sft.data.task_weights)
    if args.mix == "localisation":
        weights = {t: LOCALISATION_MIX.get(t, 0.0) for t in {r["task"] for r in rows}}
        items = [it for it in items if it.family in LOCALISATION]
        constant = {f: constant[f] for f in LOCALISATION}
    need = {VARIANTS[v].get("coordinate_tokens", True) for v in args.variants}
    tokenizers = {
        c: train_tokenizer(iter_training_texts(shards), vocab_size=vocab, coordinate_tokens=c) for c in need
    }
    results = [{"variant": "majority", **{f: round(next(iter(m.values())), 4) for f, m in constant.items()}}]
    for name in args.variants:
        t0 = time.perf_counter()
        results.append(
            run_variant(
                name,
                VARIANTS[name],
                rows=rows,
                items=items,
                tokenizers=tokenizers,
                data_root=data,
                steps=args.steps,
                arch=arch,
                sft=sft,
                weights=weights,
                seed=args.seed,
            )
        )
        print(json.dumps(results[-1]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"steps": args.steps, "batch_size": 16, "mix": args.mix, "results": results}, indent=2)
    )
    fams = [f for f in constant if f in results[-1]]
    print("\n| variant | " + " | ".join(fams) + " |\n|---|" + "---:|" * len(fams))
    for r in results:
        print(f"| {r['variant']} | " + " | ".join(f"{r[f]:.3f}" for f in fams) + " |")


if __name__ == "__main__":
    main()
