"""Cost of the reliability index of one VQA answer (M = 10) relative to one greedy answer (a benchmark, not a test).

For each of ``--questions`` held-out VQA questions of the demo data (half closed, half open; the
``test`` split), one run, after a warm-up question:

1. ``greedy``: :func:`model.generation.greedy_answer` (the answer itself);
2. ``index``: the reliability index of that answer: M answers drawn in ONE batched ``generate``
   call (:func:`model.generation.sample_answers`, ``num_return_sequences=M``, temperature 1.0,
   top-p 0.9), clustered (yes/no rule for closed questions, all-MiniLM-L6-v2 embeddings for open
   ones; the embedding model is loaded during the warm-up, not timed) and scored with the three
   estimators (:func:`validation.reliability.answer_reliability`).

Reported: the median over questions of ``index / greedy`` (target: within 3x, thanks to batched
sampling; M sequential greedy-like calls would cost about M x), and of ``(greedy + index) / greedy``
(the cost of answering WITH the index), plus the median seconds of each part.

Run: ``python benchmarks/reliability_bench.py [--questions 20] [--checkpoint runs/demo/audio/model]``
after the demo data and a checkpoint exist. Writes ``benchmarks/out/reliability_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.generation import greedy_answer
from validation.prognosis_assistant import load_assistant
from validation.reliability import (
    ModelSampler,
    answer_reliability,
    equivalence_for,
    item_prompt,
    select_items,
)
from validation.uncertainty import EmbeddingEquivalence, ExactMatch


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _one(model, processor, sampler, item, *, data_root, m, open_eq, seed) -> dict:
    images, prompt = item_prompt(item.row, data_root)
    budget = item.max_new_tokens
    t_g, greedy = _time(
        lambda: greedy_answer(model, processor, images=images, prompt=prompt, max_new_tokens=budget)
    )
    t_i, rel = _time(
        lambda: answer_reliability(
            sampler, images=images, prompt=prompt, num_samples=m, max_new_tokens=budget,
            equivalence=equivalence_for(item.gold, open_eq), seed=seed,
        ).scores()
    )  # fmt: skip
    return {
        "id": item.row["id"], "family": item.family, "greedy_s": t_g, "index_s": t_i,
        "greedy_tokens": len(greedy.token_ids), "semantic_entropy": rel["semantic_entropy"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Time greedy answers and their reliability index; print and write the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/demo/audio/model")
    ap.add_argument("--data-root", default="data/demo")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--m", type=int, default=10, help="sampled answers of the index")
    ap.add_argument("--equivalence", choices=("embedding", "exact"), default="embedding")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/reliability_bench.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    items, _ = select_items(
        Path(args.data_root) / "curated" / "shards", split="test", n_vqa=args.questions + 1, n_reports=0
    )
    model, processor = load_assistant(args.checkpoint)
    sampler = ModelSampler(model, processor)
    open_eq = EmbeddingEquivalence() if args.equivalence == "embedding" else ExactMatch()
    kw = {"data_root": args.data_root, "m": args.m, "open_eq": open_eq}
    warm = next(it for it in items if it.family == "vqa_open")  # loads the embedding model too
    _one(model, processor, sampler, warm, seed=0, **kw)
    rows = [_one(model, processor, sampler, it, seed=i, **kw) for i, it in enumerate(items) if it is not warm]
    ratio = [r["index_s"] / r["greedy_s"] for r in rows]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "checkpoint": args.checkpoint, "m": args.m, "questions": len(rows),
        "open_equivalence": type(open_eq).__name__,
        "median_greedy_s": round(statistics.median(r["greedy_s"] for r in rows), 4),
        "median_index_s": round(statistics.median(r["index_s"] for r in rows), 4),
        "median_index_over_greedy": round(statistics.median(ratio), 2),
        "median_answer_with_index_over_greedy": round(statistics.median(1 + x for x in ratio), 2),
        "max_index_over_greedy": round(max(ratio), 2),
        "within_3x": statistics.median(ratio) <= 3.0,
        "per_question": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"{len(rows)} questions, M = {args.m}: median greedy {result['median_greedy_s'] * 1000:.0f} ms, "
        f"median index {result['median_index_s'] * 1000:.0f} ms -> index / greedy = "
        f"{result['median_index_over_greedy']}x (max {result['max_index_over_greedy']}x), "
        f"answer + index = {result['median_answer_with_index_over_greedy']}x greedy; "
        f"within 3x: {result['within_3x']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
