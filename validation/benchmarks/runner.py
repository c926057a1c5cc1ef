"""Evaluate checkpoints on the registry's benchmarks: batched answers, a prediction cache, scores, CIs.

* A :class:`~validation.benchmarks.predictors.Predictor` answers items; answers are cached per
  (fingerprint, benchmark, items digest) (:func:`~validation.benchmarks.predictors.cached_predictions`).
* :func:`run_suite` loads each benchmark's items ONCE, has every system answer the same items,
  scores them with the entry's metrics (per-item terms kept), and adds bootstrap CIs of each system
  and paired-bootstrap CIs of ``candidate - baseline`` for every baseline
  (:mod:`validation.benchmarks.compare`).

CLI (writes the results table, plots and JSON into ``--out``, see :mod:`validation.benchmarks.report`)::

    python -m validation.benchmarks.runner --data-root data/demo --out reports/bench \\
        --checkpoint base=runs/demo/base_model/model --checkpoint candidate=runs/demo/sft/model \\
        [--registry FILE] [--benchmark demo_vqa ...] [--majority] [--benchmarks-root DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validation.benchmarks.compare import Interval, bootstrap_ci, paired_bootstrap
from validation.benchmarks.importers import load_items
from validation.benchmarks.items import BenchmarkItem
from validation.benchmarks.predictors import MajorityPredictor, Predictor, VLMPredictor, cached_predictions
from validation.benchmarks.registry import BenchmarkSpec, load_registry
from validation.benchmarks.scoring import score_metrics
from validation.benchmarks.terms import ItemScores

__all__ = [
    "BenchmarkResult",
    "MajorityPredictor",
    "Predictor",
    "SuiteResult",
    "VLMPredictor",
    "cached_predictions",
    "incomplete_metrics",
    "main",
    "run_benchmarks",
    "run_suite",
]

log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """One system on one benchmark: answers, metric values with per-item terms, per-group values."""

    benchmark: str
    family: str
    system: str
    fingerprint: str
    items: list[BenchmarkItem]
    predictions: list[str]
    scores: dict[str, ItemScores]
    cached: bool
    seconds: float

    @property
    def values(self) -> dict[str, float]:
        """Metric -> value."""
        return {m: s.value for m, s in self.scores.items()}

    def by_group(self) -> dict[str, dict[str, dict[str, float]]]:
        """Metric -> group field -> group value -> metric value (ratio metrics only)."""
        return {m: g for m, s in self.scores.items() if (g := s.by_group(self.items))}

    def to_dict(self, *, with_answers: bool = True) -> dict[str, Any]:
        """JSON-able summary (answers with ids and golds when ``with_answers``)."""
        out: dict[str, Any] = {
            "benchmark": self.benchmark,
            "family": self.family,
            "system": self.system,
            "fingerprint": self.fingerprint,
            "n_items": len(self.items),
            "metrics": self.values,
            "by_group": self.by_group(),
            "cached": self.cached,
            "seconds": self.seconds,
        }
        if with_answers:
            out["answers"] = [
                {"id": it.id, "gold": it.gold, "prediction": p} for it, p in zip(self.items, self.predictions)
            ]
        return out


@dataclass
class SuiteResult:
    """Every system on every benchmark, with CIs (per system) and differences (candidate - baseline)."""

    candidate: str
    systems: list[str]
    specs: dict[str, BenchmarkSpec]
    results: dict[str, dict[str, BenchmarkResult]]
    intervals: dict[str, dict[str, dict[str, Interval]]] = field(default_factory=dict)
    differences: dict[str, dict[str, dict[str, Interval]]] = field(default_factory=dict)
    n_boot: int = 1000
    seed: int = 0

    @property
    def baselines(self) -> list[str]:
        """Every system but the candidate, in order."""
        return [s for s in self.systems if s != self.candidate]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``results.json``)."""
        ivs = lambda d: {b: {m: iv.to_dict() for m, iv in ms.items()} for b, ms in d.items()}
        return {
            "candidate": self.candidate,
            "systems": self.systems,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "benchmarks": {n: s.model_dump() for n, s in self.specs.items()},
            "results": {s: {b: r.to_dict() for b, r in rs.items()} for s, rs in self.results.items()},
            "intervals": {s: ivs(d) for s, d in self.intervals.items()},
            "differences": {s: ivs(d) for s, d in self.differences.items()},
        }


def _evaluate(
    spec: BenchmarkSpec,
    items: list[BenchmarkItem],
    system: str,
    predictor: Predictor,
    cache_dir: str | os.PathLike | None,
) -> BenchmarkResult:
    t0 = time.perf_counter()
    preds, cached = cached_predictions(predictor, spec.name, items, cache_dir)
    scores = score_metrics(spec.metrics, items, preds)
    seconds = time.perf_counter() - t0
    result = BenchmarkResult(
        spec.name, spec.family, system, predictor.fingerprint, items, preds, scores, cached, seconds
    )
    log.info("%s / %s (%d items, %.1fs): %s", system, spec.name, len(items), seconds, result.values)
    return result


def run_suite(
    specs: Sequence[BenchmarkSpec],
    systems: Mapping[str, Predictor],
    *,
    candidate: str,
    data_root: str | os.PathLike | None = None,
    benchmarks_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> SuiteResult:
    """Evaluate every system on the same items of every benchmark; CIs and paired differences.

    Args:
        specs: registry entries to run.
        systems: name -> predictor, in table order (e.g. majority, base, champion, candidate).
        candidate: the system compared with every other one.
        data_root: the profile's data root (demo entries).
        benchmarks_root: root of relative benchmark file paths.
        cache_dir: prediction cache folder (None: no cache); TSV images are extracted to its
            ``images/`` subfolder (None: kept in memory).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Raises:
        KeyError: ``candidate`` is not a system.
        ValueError: no benchmark, or one named twice.
        MetricUndefinedError: a listed metric cannot be computed on a benchmark (never skipped).
    """
    if candidate not in systems:
        raise KeyError(f"candidate {candidate!r} is not among the systems {list(systems)}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"benchmarks must be non-empty and unique, got {names}")
    for spec in specs:
        spec.source_path(benchmarks_root)  # fail before any generation when a file is missing
    image_dir = Path(cache_dir) / "images" if cache_dir is not None else None
    items = {
        s.name: load_items(s, data_root=data_root, benchmarks_root=benchmarks_root, image_dir=image_dir)
        for s in specs
    }
    suite = SuiteResult(candidate, list(systems), {s.name: s for s in specs}, {}, n_boot=n_boot, seed=seed)
    for name, predictor in systems.items():
        suite.results[name] = {}
        for spec in specs:
            suite.results[name][spec.name] = _evaluate(spec, items[spec.name], name, predictor, cache_dir)
        if hasattr(predictor, "release"):
            predictor.release()
    _add_intervals(suite)
    return suite


def _add_intervals(suite: SuiteResult) -> None:
    boot = {"n_boot": suite.n_boot, "seed": suite.seed}
    for name, by_bench in suite.results.items():
        suite.intervals[name] = {
            b: {m: bootstrap_ci(s, **boot) for m, s in r.scores.items()} for b, r in by_bench.items()
        }
    cand = suite.results[suite.candidate]
    for base in suite.baselines:
        suite.differences[base] = {
            b: {m: paired_bootstrap(cand[b].scores[m], r.scores[m], **boot) for m in r.scores}
            for b, r in suite.results[base].items()
        }


def incomplete_metrics(suite: SuiteResult) -> list[str]:
    """Every (system, benchmark, metric) of the registry entries without a finite value and CI.

    A blocking asset check fails when this is non-empty (``run_suite`` already raises on an
    undefined metric; this re-checks a finished or reloaded result).
    """
    missing = []
    for system in suite.systems:
        for bench, spec in suite.specs.items():
            for metric in spec.metrics:
                iv = suite.intervals.get(system, {}).get(bench, {}).get(metric)
                if iv is None or not all(math.isfinite(v) for v in (iv.value, iv.ci_low, iv.ci_high)):
                    missing.append(f"{system}/{bench}/{metric}")
    return missing


def run_benchmarks(
    *,
    checkpoints: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    registry: str | os.PathLike | None = None,
    benchmarks: Sequence[str] | None = None,
    candidate: str | None = None,
    majority: bool = False,
    benchmarks_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> SuiteResult:
    """The whole benchmark step (what the ``benchmark_results`` asset calls): evaluate, compare, write.

    Args:
        checkpoints: system name -> checkpoint folder, in table order (e.g. base, champion, candidate).
        out_dir: results folder, replaced atomically (see :func:`validation.benchmarks.report.write_results`).
        data_root: the profile's data root (demo entries; ``--majority`` reads its curated train split).
        registry: registry YAML (default: the shipped one).
        benchmarks: entry names (default: all).
        candidate: the compared system (default: the last checkpoint).
        majority: add the ``majority`` constant baseline first.
        benchmarks_root: root of relative benchmark file paths.
        cache_dir: prediction cache (default ``<out_dir>/../.bench_cache``).
        limit: override every entry's ``limit`` (quick runs).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        batch_size: prompts per ``generate`` call.
        device: where the checkpoints run (e.g. ``"cuda"``; None: CPU).
        progress: progress bars.

    Returns:
        The suite result (also written to ``out_dir``).

    Raises:
        ValueError: no checkpoint, or ``majority`` without ``data_root``.
    """
    from validation.benchmarks.report import write_results

    if not checkpoints:
        raise ValueError("give at least one checkpoint (name -> folder)")
    reg = load_registry(registry)
    specs = reg.select(benchmarks)
    if limit is not None:
        specs = [s.model_copy(update={"limit": limit}) for s in specs]
    systems: dict[str, Predictor] = {}
    if majority:
        if data_root is None:
            raise ValueError("the majority baseline needs data_root (its curated train split)")
        systems["majority"] = MajorityPredictor.from_curated(Path(data_root) / "curated" / "shards")
    for name, path in checkpoints.items():
        systems[name] = VLMPredictor(path, batch_size=batch_size, device=device, progress=progress)
    cache = cache_dir if cache_dir is not None else Path(out_dir).parent / ".bench_cache"
    suite = run_suite(
        specs,
        systems,
        candidate=candidate or list(checkpoints)[-1],
        data_root=data_root,
        benchmarks_root=benchmarks_root,
        cache_dir=cache,
        n_boot=n_boot,
        seed=seed,
    )
    write_results(suite, out_dir)
    return suite


def _checkpoint_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--checkpoint expects NAME=PATH, got {text!r}")
    return name, path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", help="registry YAML (default: the shipped one)")
    ap.add_argument("--benchmark", action="append", help="entry name (repeat; default: all)")
    ap.add_argument("--checkpoint", action="append", type=_checkpoint_arg, required=True, help="NAME=PATH")
    ap.add_argument("--candidate", help="compared system (default: the last --checkpoint)")
    ap.add_argument("--majority", action="store_true", help="add the majority-answer baseline")
    ap.add_argument("--data-root", help="profile data root, e.g. data/demo")
    ap.add_argument("--benchmarks-root", help="root of relative benchmark file paths")
    ap.add_argument("--cache-dir", help="prediction cache (default: <out>/../.bench_cache)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, help="override every entry's limit")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", help="e.g. cuda (default: CPU)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_benchmarks(
        checkpoints=dict(args.checkpoint),
        out_dir=args.out,
        data_root=args.data_root,
        registry=args.registry,
        benchmarks=args.benchmark,
        candidate=args.candidate,
        majority=args.majority,
        benchmarks_root=args.benchmarks_root,
        cache_dir=args.cache_dir,
        limit=args.limit,
        n_boot=args.n_boot,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
