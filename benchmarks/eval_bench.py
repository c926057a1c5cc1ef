"""Evaluation throughput of the benchmark runner (a benchmark, not a test).

The demo checkpoint answers the demo mirror of the registry (``validation/benchmarks/registry.yaml``,
entries ``demo_*``, ``--limit`` items per task family) twice through
:func:`validation.benchmarks.run_suite`, into a fresh prediction cache:

1. ``uncached``: greedy generation (batched, per token budget) + scoring + bootstrap CIs;
2. ``cached``: the same call again: predictions read from the cache (the model is never loaded),
   scoring + bootstrap CIs.

Items/s are reported for each pass (end to end, bootstrap included) and per benchmark (generation +
scoring seconds of each pass), with the item-loading time (reading the curated shards) apart.

Run: ``python benchmarks/eval_bench.py [--limit 8] [--checkpoint runs/demo/sft/model]`` after the
demo data and the SFT checkpoint exist. Writes ``benchmarks/out/eval_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validation.benchmarks import VLMPredictor, load_items, load_registry, run_suite


def _pass(specs, predictor, *, data_root: str, cache: Path, n_boot: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    suite = run_suite(
        specs, {"sft": predictor}, candidate="sft", data_root=data_root, cache_dir=cache, n_boot=n_boot
    )
    return time.perf_counter() - t0, suite.results["sft"]


def main(argv: list[str] | None = None) -> int:
    """Run both passes and print/write the throughput table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/demo/sft/model")
    ap.add_argument("--data-root", default="data/demo")
    ap.add_argument("--limit", type=int, default=8, help="items per task family (and guardrail side)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/out/eval_bench.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    reg = load_registry()
    specs = [
        s.model_copy(update={"limit": args.limit}) for s in reg.specs.values() if s.name.startswith("demo_")
    ]
    t0 = time.perf_counter()
    n_items = sum(len(load_items(s, data_root=args.data_root)) for s in specs)  # also warms the shard cache
    load_s = time.perf_counter() - t0
    predictor = VLMPredictor(args.checkpoint, batch_size=args.batch_size, progress=False)
    t0 = time.perf_counter()
    predictor.load()  # timed apart: the first benchmark should not carry the model load
    model_load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cold_s, cold = _pass(specs, predictor, data_root=args.data_root, cache=Path(tmp), n_boot=args.n_boot)
        predictor.release()
        warm_pred = VLMPredictor(args.checkpoint, batch_size=args.batch_size, progress=False)
        warm_s, warm = _pass(specs, warm_pred, data_root=args.data_root, cache=Path(tmp), n_boot=args.n_boot)
    if not all(r.cached for r in warm.values()):
        raise RuntimeError("the second pass regenerated answers: the prediction cache did not hit")
    rows = {
        name: {
            "items": len(r.items),
            "uncached_s": round(r.seconds, 3),
            "uncached_items_per_s": round(len(r.items) / r.seconds, 2),
            "cached_s": round(warm[name].seconds, 4),
        }
        for name, r in cold.items()
    }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "checkpoint": args.checkpoint,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "n_boot": args.n_boot,
        "items": n_items,
        "load_items_s": round(load_s, 2),
        "load_model_s": round(model_load_s, 2),
        "uncached": {"seconds": round(cold_s, 2), "items_per_s": round(n_items / cold_s, 2)},
        "cached": {"seconds": round(warm_s, 2), "items_per_s": round(n_items / warm_s, 2)},
        "speedup_cached": round(cold_s / warm_s, 1),
        "per_benchmark": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'benchmark':26s} {'items':>5s} {'uncached s':>10s} {'items/s':>8s} {'cached s':>9s}")
    for name, r in rows.items():
        print(
            f"{name:26s} {r['items']:5d} {r['uncached_s']:10.2f} {r['uncached_items_per_s']:8.2f} {r['cached_s']:9.3f}"
        )
    print(
        f"total {n_items} items: uncached {cold_s:.1f}s ({n_items / cold_s:.2f} items/s), "
        f"cached {warm_s:.1f}s ({n_items / warm_s:.1f} items/s), x{cold_s / warm_s:.1f}; "
        f"loading items {load_s:.1f}s, model {model_load_s:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
