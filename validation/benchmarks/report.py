"""Benchmark results as a table (markdown + CSV), plots, JSON, and MLflow metrics + artifacts.

* :func:`results_table`: one row per (benchmark, metric): ``n``, each system's value with its 95%
  bootstrap CI, and ``candidate - baseline`` with its paired-bootstrap CI for every baseline.
* :func:`plot_benchmark`: grouped bars (one group per metric, one bar per system) with CI error
  bars; returns the ``Axes`` (matplotlib Agg; never shown).
* :func:`write_results`: ``results.md``, ``results.csv``, ``results.json`` and
  ``plots/<benchmark>.png`` into a folder, atomically.
* :func:`log_results`: MLflow metrics ``bench/<benchmark>/<metric>`` (the candidate's value),
  ``bench/<benchmark>/<metric>/<system>`` (each baseline's value),
  ``bench/<benchmark>/<metric>/delta_vs_<baseline>`` with ``.../ci_low`` and ``.../ci_high``, and
  the written files as artifacts under ``benchmarks/``. The tracker is the ``mlflow`` module (with
  an active run) or an ``MlflowClient`` with ``run_id``: anything with the :class:`Tracker` or
  :class:`ClientTracker` methods.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from model.data.io import atomic_dir

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from validation.benchmarks.runner import SuiteResult

__all__ = [
    "ClientTracker",
    "Tracker",
    "log_results",
    "metric_key",
    "plot_benchmark",
    "results_table",
    "write_results",
]


class Tracker(Protocol):
    """The ``mlflow`` module's logging calls (an active run is assumed)."""

    def log_metrics(self, metrics: dict[str, float]) -> Any: ...

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> Any: ...


class ClientTracker(Protocol):
    """``mlflow.MlflowClient``'s logging calls (the run is named by ``run_id``)."""

    def log_metric(self, run_id: str, key: str, value: float) -> Any: ...

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> Any: ...


def metric_key(*parts: str) -> str:
    """An MLflow metric key ``bench/<part>/<part>...``, characters outside ``[A-Za-z0-9_.-]`` -> ``_``."""
    return "/".join(["bench", *(re.sub(r"[^A-Za-z0-9_.\- ]", "_", p).replace(" ", "_") for p in parts)])


def _fmt(value: float, lo: float, hi: float) -> str:
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def results_table(suite: SuiteResult) -> pd.DataFrame:
    """One row per (benchmark, metric) with every system's value, CI and the candidate's differences.

    Columns: ``benchmark``, ``family``, ``metric``, ``n``; per system ``<s>``, ``<s>_ci_low``,
    ``<s>_ci_high``; per baseline ``delta_vs_<b>``, ``delta_vs_<b>_ci_low``, ``delta_vs_<b>_ci_high``.
    """
    rows = []
    cand = suite.results[suite.candidate]
    for bench, spec in suite.specs.items():
        for metric in spec.metrics:
            row: dict[str, Any] = {
                "benchmark": bench,
                "family": spec.family,
                "metric": metric,
                "n": cand[bench].scores[metric].n,
            }
            for s in suite.systems:
                iv = suite.intervals[s][bench][metric]
                row.update({s: iv.value, f"{s}_ci_low": iv.ci_low, f"{s}_ci_high": iv.ci_high})
            for b in suite.baselines:
                iv = suite.differences[b][bench][metric]
                row.update({f"delta_vs_{b}": iv.value, f"delta_vs_{b}_ci_low": iv.ci_low})
                row[f"delta_vs_{b}_ci_high"] = iv.ci_high
            rows.append(row)
    return pd.DataFrame(rows)


def _markdown(suite: SuiteResult, table: pd.DataFrame) -> str:
    cols = [*suite.systems, *(f"delta_vs_{b}" for b in suite.baselines)]
    head = "| benchmark | metric | n | " + " | ".join(f"{c} [95% CI]" for c in cols) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * len(cols)]
    for _, r in table.iterrows():
        cells = [_fmt(r[c], r[f"{c}_ci_low"], r[f"{c}_ci_high"]) for c in cols]
        lines.append(f"| {r['benchmark']} | {r['metric']} | {r['n']} | " + " | ".join(cells) + " |")
    note = (
        f"\nCandidate: `{suite.candidate}`. CIs: percentile bootstrap over items, {suite.n_boot} resamples "
        f"(seed {suite.seed}); deltas are candidate - baseline with paired resamples.\n"
    )
    return "\n".join(lines) + "\n" + note


def plot_benchmark(suite: SuiteResult, benchmark: str, ax: Axes | None = None) -> Axes:
    """Grouped bar chart of one benchmark: metrics on x, one bar per system, 95% CI error bars.

    Raises:
        KeyError: unknown benchmark.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    spec = suite.specs[benchmark]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.6 * len(spec.metrics), 3.2))
    width = 0.8 / len(suite.systems)
    x = np.arange(len(spec.metrics))
    for k, system in enumerate(suite.systems):
        ivs = [suite.intervals[system][benchmark][m] for m in spec.metrics]
        vals = np.array([iv.value for iv in ivs])
        err = np.array([[iv.value - iv.ci_low for iv in ivs], [iv.ci_high - iv.value for iv in ivs]])
        offset = (k - (len(suite.systems) - 1) / 2) * width
        ax.bar(x + offset, vals, width, yerr=np.clip(err, 0, None), capsize=3, label=system)
    ax.set_xticks(x, spec.metrics, rotation=20, ha="right")
    ax.set_title(f"{benchmark} (n={suite.results[suite.candidate][benchmark].scores[spec.metrics[0]].n})")
    ax.set_ylim(0, max(1.05, ax.get_ylim()[1]))
    ax.legend(fontsize="small")
    return ax


def write_results(suite: SuiteResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.md``, ``results.csv``, ``results.json`` and ``plots/<benchmark>.png`` (atomically).

    Returns:
        Name -> final path of each written file (``plot:<benchmark>`` for plots).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results_table(suite)
    out = Path(out_dir)
    names: list[str] = ["results.md", "results.csv", "results.json"]
    with atomic_dir(out) as tmp:
        (tmp / "results.md").write_text(_markdown(suite, table))
        table.to_csv(tmp / "results.csv", index=False)
        (tmp / "results.json").write_text(
            json.dumps(suite.to_dict(), indent=1, ensure_ascii=False, default=str)
        )
        (tmp / "plots").mkdir()
        for bench in suite.specs:
            ax = plot_benchmark(suite, bench)
            ax.figure.tight_layout()
            ax.figure.savefig(tmp / "plots" / f"{bench}.png", dpi=110)
            plt.close(ax.figure)
            names.append(f"plots/{bench}.png")
    return {("plot:" + n[6:-4] if n.startswith("plots/") else n): out / n for n in names}


def _metrics(suite: SuiteResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for bench, spec in suite.specs.items():
        for m in spec.metrics:
            out[metric_key(bench, m)] = suite.intervals[suite.candidate][bench][m].value
            for b in suite.baselines:
                out[metric_key(bench, m, b)] = suite.intervals[b][bench][m].value
                iv = suite.differences[b][bench][m]
                key = metric_key(bench, m, f"delta_vs_{b}")
                out.update({key: iv.value, f"{key}/ci_low": iv.ci_low, f"{key}/ci_high": iv.ci_high})
    return out


def log_results(
    suite: SuiteResult,
    tracker: Tracker | ClientTracker,
    *,
    run_id: str | None = None,
    out_dir: str | os.PathLike | None = None,
    artifact_path: str = "benchmarks",
) -> dict[str, float]:
    """Log the suite's metrics and result files to MLflow (keys in the module docstring).

    Args:
        suite: the results.
        tracker: the ``mlflow`` module (active run) or an ``MlflowClient`` (then give ``run_id``).
        run_id: the run to log to with a client.
        out_dir: an existing :func:`write_results` folder to log; None writes a temporary one.
        artifact_path: artifact folder in the run.

    Returns:
        The logged metrics.
    """
    metrics = _metrics(suite)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp) / "results"
        if out_dir is None:
            write_results(suite, folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for f in files:
            sub = f.parent.relative_to(folder).as_posix()
            dest = artifact_path if sub == "." else f"{artifact_path}/{sub}"
            if run_id is None:
                tracker.log_artifact(str(f), artifact_path=dest)
            else:
                tracker.log_artifact(run_id, str(f), artifact_path=dest)
    if run_id is None:
        tracker.log_metrics(metrics)
    else:
        for key, value in metrics.items():
            tracker.log_metric(run_id, key, value)
    return metrics
