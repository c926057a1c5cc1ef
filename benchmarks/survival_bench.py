"""Survival statistics and prognostic studies: time and memory (a benchmark, not a test).

1. ``auc_ci`` with 2,000 stratified resamples on 10,000 patients (30% event-free), vectorised
   (index matrix in chunks of ``max_elements`` entries): median wall time of ``--repeats`` runs
   and the peak of traced allocations (``tracemalloc``, which sees numpy buffers). Baseline: a
   Python loop calling ``sklearn.metrics.roc_auc_score`` per resample, timed on ``--loop-boot``
   resamples and scaled to 2,000 (labelled as extrapolated).
2. The study set: NCCTG (1-year OS, real data) and the three demo-corpus studies without the
   assistant (task-specific model on pixel statistics, clinical Cox), each timed as load + run
   (fits, thresholds, statistics, bootstrap) and report (markdown, JSON, PNG figures).

Run: ``python benchmarks/survival_bench.py --root data/demo`` (add ``--out DIR`` to keep reports).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from validation.survival import (
    auc_ci,
    demo_competitors,
    load_demo_cohort,
    load_ncctg_cohort,
    mean_pixel_features,
    ncctg_competitors,
    run_study,
    write_study_report,
)
from validation.survival.stats import auc_bootstrap, stratified_indices


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    return y, rng.normal(size=n) + 0.8 * y


def bench_auc_ci(n: int, n_boot: int, repeats: int, max_elements: int) -> dict:
    y, s = _data(n)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        auc_bootstrap(y, s, n_boot=n_boot, seed=0, max_elements=max_elements)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    auc_bootstrap(y, s, n_boot=n_boot, seed=0, max_elements=max_elements)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    point, low, high = auc_ci(y, s, n_boot=n_boot, seed=0)
    return {"seconds": statistics.median(times), "peak_mb": peak / 2**20, "auc": (point, low, high)}


def bench_loop(n: int, n_boot: int, loop_boot: int) -> float:
    """Seconds for ``n_boot`` resamples with a per-resample Python loop (timed on ``loop_boot``)."""
    y, s = _data(n)
    cases, controls = s[y == 1], s[y == 0]
    truth = np.r_[np.ones(cases.size), np.zeros(controls.size)]
    ci, cj = stratified_indices(cases.size, controls.size, loop_boot, np.random.default_rng(0))
    t0 = time.perf_counter()
    for b in range(loop_boot):
        roc_auc_score(truth, np.r_[cases[ci[b]], controls[cj[b]]])
    return (time.perf_counter() - t0) * n_boot / loop_boot


def bench_studies(root: str, out: Path, n_boot: int) -> list[dict]:
    rows = []
    for name in ("ncctg", "lung_tki", "nsclc", "gbm"):
        t0 = time.perf_counter()
        if name == "ncctg":
            cohort = load_ncctg_cohort()
            comps = ncctg_competitors(cohort)
        else:
            cohort = load_demo_cohort(root, name)
            comps = demo_competitors(cohort, feature_fn=mean_pixel_features)
        result = run_study(cohort, comps, reference="clinical_cox", n_boot=n_boot)
        t1 = time.perf_counter()
        write_study_report(result, out / name)
        t2 = time.perf_counter()
        rows.append(
            {
                "study": name,
                "patients": len(cohort.patients),
                "cohorts": len(result.cohorts),
                "warnings": len(result.warnings),
                "run_s": t1 - t0,
                "report_s": t2 - t1,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/demo")
    ap.add_argument("--out", default=None, help="keep the study reports here (default: temporary)")
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-boot", type=int, default=100)
    args = ap.parse_args()

    print(f"## auc_ci: {args.patients:,} patients, {args.n_boot:,} stratified resamples\n")
    print("| method | max_elements | seconds | peak traced MB |")
    print("|---|---:|---:|---:|")
    for max_el in (4_000_000, 1_000_000, 250_000):
        r = bench_auc_ci(args.patients, args.n_boot, args.repeats, max_el)
        print(
            f"| vectorised (median of {args.repeats}) | {max_el:,} | {r['seconds']:.2f} | {r['peak_mb']:.0f} |"
        )
    loop_s = bench_loop(args.patients, args.n_boot, args.loop_boot)
    print(
        f"| Python loop, roc_auc_score (x{args.n_boot // args.loop_boot} extrapolated) | - | {loop_s:.1f} | - |"
    )
    print(f"\nAUC [95% CI] = {r['auc'][0]:.4f} [{r['auc'][1]:.4f}, {r['auc'][2]:.4f}]\n")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        rows = bench_studies(args.root, out, args.n_boot)
    print(f"## study set ({args.n_boot} resamples per AUC CI; no assistant)\n")
    print("| study | patients | cohorts | warnings | load + run s | report s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['study']} | {r['patients']} | {r['cohorts']} | {r['warnings']} | {r['run_s']:.1f} | {r['report_s']:.1f} |"
        )
    total = sum(r["run_s"] + r["report_s"] for r in rows)
    print(f"| **total** | | | | | **{total:.1f}** |")


if __name__ == "__main__":
    main()
