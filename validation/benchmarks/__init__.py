"""The benchmark suite: a declarative registry, importers, a cached runner, paired bootstrap, reports.

Modules:

* :mod:`~validation.benchmarks.registry`: ``registry.yaml`` -> validated :class:`BenchmarkSpec` entries;
* :mod:`~validation.benchmarks.items`: :class:`BenchmarkItem`, what every importer yields;
* :mod:`~validation.benchmarks.demo`: the held-out demo-corpus mirror of each family;
* :mod:`~validation.benchmarks.tsv`: VLMEvalKit TSV (GMAI-MMBench, OmniMedVQA);
* :mod:`~validation.benchmarks.importers`: SLAKE, VQA-RAD, PathVQA, MedMNIST and the dispatch;
* :mod:`~validation.benchmarks.scoring`: metric names -> :mod:`validation.metrics` functions;
* :mod:`~validation.benchmarks.terms`: per-item terms of a metric (what the bootstrap resamples);
* :mod:`~validation.benchmarks.predictors`: checkpoint and majority predictors, the prediction cache;
* :mod:`~validation.benchmarks.compare`: bootstrap and paired-bootstrap CIs;
* :mod:`~validation.benchmarks.runner`: evaluate every system on the same items, compare, CLI;
* :mod:`~validation.benchmarks.report`: results table, plots, MLflow logging.

Typical use (the ``benchmark_results`` asset)::

    suite = run_benchmarks(checkpoints={"base": ..., "champion": ..., "candidate": ...},
                           data_root="data/demo", out_dir="reports/bench", majority=True)
    log_results(suite, mlflow, out_dir="reports/bench")
"""

from validation.benchmarks.compare import Interval, bootstrap_ci, paired_bootstrap
from validation.benchmarks.importers import load_items, read_medmnist, read_vlmevalkit_tsv, read_vqa
from validation.benchmarks.items import FAMILIES, BenchmarkItem, items_digest
from validation.benchmarks.predictors import MajorityPredictor, Predictor, VLMPredictor, cached_predictions
from validation.benchmarks.registry import (
    DEFAULT_REGISTRY,
    BenchmarkFileNotFoundError,
    BenchmarkSpec,
    Registry,
    RegistryError,
    load_registry,
)
from validation.benchmarks.report import log_results, plot_benchmark, results_table, write_results
from validation.benchmarks.scoring import METRICS, MetricSpec, score_metrics
from validation.benchmarks.terms import ItemScores

__all__ = [
    "DEFAULT_REGISTRY",
    "FAMILIES",
    "METRICS",
    "BenchmarkFileNotFoundError",
    "BenchmarkItem",
    "BenchmarkResult",
    "BenchmarkSpec",
    "Interval",
    "ItemScores",
    "MajorityPredictor",
    "MetricSpec",
    "Predictor",
    "Registry",
    "RegistryError",
    "SuiteResult",
    "VLMPredictor",
    "bootstrap_ci",
    "cached_predictions",
    "incomplete_metrics",
    "items_digest",
    "load_items",
    "load_registry",
    "log_results",
    "paired_bootstrap",
    "plot_benchmark",
    "read_medmnist",
    "read_vlmevalkit_tsv",
    "read_vqa",
    "results_table",
    "run_benchmarks",
    "run_suite",
    "score_metrics",
    "write_results",
]

# The runner is imported on first use, so that ``python -m validation.benchmarks.runner`` does not
# find its own module already imported by this package.
_RUNNER_NAMES = frozenset(
    {"BenchmarkResult", "SuiteResult", "incomplete_metrics", "run_benchmarks", "run_suite"}
)


def __getattr__(name: str):
    if name in _RUNNER_NAMES:
        from validation.benchmarks import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
