"""What each design choice buys for localisation (an experiment, not a test).

Trains the demo tiny VLM from scratch with the same budget (``--steps`` SFT steps of batch 16 on
the demo curated mix, plain PyTorch loop of :mod:`benchmarks._loop`) once per variant, each
variant changing ONE design choice of the platform's model, then scores held-out lesion
localisation and region detection (mean IoU, :mod:`validation.task_families`) against the best
constant box (the mean training box):

================  ===========================================================================
variant           change against ``full`` (the platform's design)
================  ===========================================================================
full              conv stem to an 8x8 grid, fixed 2D sin-cos positions, coordinate tokens
                  with smooth init, the whole task mix, 64 px images
learned_pos       learned vision position table (plain ViT / LLaVA)
no_pos            no vision position embedding at all
random_coord      coordinate tokens with random (not smooth) initial embeddings
digit_coords      no coordinate tokens: numbers are BPE digit pieces
lesion_boxes_only task mix without the region tasks (boxes supervised by lesions only)
image_32          32 px images (same 8x8 grid, one stem stage less)
================  ===========================================================================

Run: ``python benchmarks/localisation_ablation.py --data data/demo --steps 800 [--variants ...]``
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
from model.data.io import iter_parquet_rows
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
}
FAMILIES = ("lesion_localisation", "region_detection")


def run_variant(name: str, spec: dict, *, rows, items, tokenizers, data_root, steps, arch, seed) -> dict:
    """Train one variant from scratch and score its held-out localisation."""
    tok = tokenizers[spec.get("coordinate_tokens", True)]
    a = {**arch, **spec.get("arch", {})}
    model = build_tiny_vlm_for_tokenizer(
        tok, seed=seed, smooth_coordinates=spec.get("smooth_coordinates", True), **a
    )
    proc = XMedProcessor.for_model(tok, model.config)
    train = [r for r in rows if r["task"] not in spec.get("drop_tasks", ())]
    plan = batch_plan(len(train), steps=steps, batch_size=16, seed=seed)
    res = train_plain(
        model, lambda i: proc.encode_example(train[i], data_root), plan, pad_id=tok.pad_token_id
    )
    scores = score_all(items, model_predictions(model, proc, items, data_root=data_root, progress=False))
    return {
        "variant": name,
        "train_rows": len(train),
        "seconds": round(res.seconds, 1),
        "final_loss": round(res.last_loss, 3),
        **{fam: round(scores[fam]["mean_iou"], 4) for fam in FAMILIES},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/demo")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--per-family", type=int, default=150)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
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
        if it.family in FAMILIES
    ]
    constant = score_all(items, majority_predictions(items, majority_answers(shards)))
    need = {VARIANTS[v].get("coordinate_tokens", True) for v in args.variants}
    tokenizers = {
        c: train_tokenizer(iter_training_texts(shards), vocab_size=vocab, coordinate_tokens=c) for c in need
    }
    results = [{"variant": "constant_box", **{f: round(constant[f]["mean_iou"], 4) for f in FAMILIES}}]
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
                seed=args.seed,
            )
        )
        print(json.dumps(results[-1]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"steps": args.steps, "batch_size": 16, "results": results}, indent=2))
    print("\n| variant | lesion mIoU | region mIoU | final loss | train s |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['variant']} | {r['lesion_localisation']:.3f} | {r['region_detection']:.3f} | "
            f"{r.get('final_loss', '')} | {r.get('seconds', '')} |"
        )


if __name__ == "__main__":
    main()
