"""Where the recipes send parameters, metrics and artifacts: a small Protocol and three loggers.

* :class:`StdoutLogger`: one line per logging step (through ``tqdm.write`` so progress bars stay
  intact); the CLI default.
* :class:`ListLogger`: keeps everything in memory; the fake used by tests.
* :class:`MlflowLogger`: logs into the ACTIVE MLflow run (the Dagster asset starts it, so the
  curves land in the run of the asset); ``mlflow`` is imported lazily.

:func:`system_metrics` adds process/system figures from psutil (CPU %, resident memory).
Modelled on torchtune's ``training/metric_logging.py`` (``MetricLoggerInterface``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import psutil
from tqdm.auto import tqdm

__all__ = [
    "ListLogger",
    "MetricLogger",
    "MlflowLogger",
    "StdoutLogger",
    "flatten_params",
    "system_metrics",
]


@runtime_checkable
class MetricLogger(Protocol):
    """What a recipe needs from a metrics backend."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record run parameters once (flat ``name -> value``)."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Record scalar metrics at an optimizer step."""
        ...

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Record a file produced by the run (e.g. the DPO preference pairs)."""
        ...


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``a.b.c`` keys (lists and scalars kept as values).

    Example:
        >>> flatten_params({"train": {"seed": 0}, "stage": "sft"})
        {'train.seed': 0, 'stage': 'sft'}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = value
    return out


_PROCESS = psutil.Process()


def system_metrics() -> dict[str, float]:
    """``system/cpu_percent`` (machine, since the previous call), ``system/process_cpu_percent``,
    ``system/rss_mb`` (this process) and ``system/memory_percent`` (machine)."""
    return {
        "system/cpu_percent": float(psutil.cpu_percent(interval=None)),
        "system/process_cpu_percent": float(_PROCESS.cpu_percent(interval=None)),
        "system/rss_mb": _PROCESS.memory_info().rss / 2**20,
        "system/memory_percent": float(psutil.virtual_memory().percent),
    }


class StdoutLogger:
    """Print params once and one ``step N | name=value ...`` line per logging step."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Print the parameters, one per line."""
        for key, value in sorted(params.items()):
            tqdm.write(f"param {key} = {value}")

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Print one line of metrics."""
        body = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        tqdm.write(f"step {step} | {body}")

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Print the artifact path."""
        tqdm.write(f"artifact {path}")


class ListLogger:
    """Keep params, metrics and artifacts in memory (the test fake).

    Attributes:
        params: merged parameters.
        metrics: ``(step, metrics)`` in logging order.
        artifacts: artifact paths.
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[str] = []

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into :attr:`params`."""
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Append ``(step, metrics)``."""
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str | os.PathLike) -> None:
        """Append the path."""
        self.artifacts.append(os.fspath(path))

    def series(self, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one metric."""
        return [(s, m[name]) for s, m in self.metrics if name in m]


class MlflowLogger:
    """Log into the ACTIVE MLflow run (started by the caller, e.g. the Dagster asset).

    Args:
        artifact_dir: artifact sub-folder for :meth:`log_artifact` (e.g. the stage name).

    Raises:
        ImportError: mlflow is not installed.
        RuntimeError: no MLflow run is active (start one with ``mlflow.start_run()`` first).
    """

    _MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
    _PARAM_BATCH = 100  # MLflow's limit on params per call

    def __init__(self, artifact_dir: str | None = None) -> None:
        try:
            import mlflow
        except ImportError as e:  # pragma: no cover - mlflow is a project dependency
            raise ImportError("MlflowLogger needs mlflow (pip install mlflow)") from e
        self._mlflow = mlflow
        self.artifact_dir = artifact_dir
        run = mlflow.active_run()
        if run is None:
            raise RuntimeError(
                "MlflowLogger logs into the active MLflow run but none is active; call "
                "mlflow.start_run() first (the Dagster asset does) or use StdoutLogger"
            )
        self.run_id = run.info.run_id

    def _check_run(self) -> None:
        run = self._mlflow.active_run()
        if run is None or run.info.run_id != self.run_id:
            raise RuntimeError(
                f"MLflow run {self.run_id} is no longer the active run; log inside its context"
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """``mlflow.log_params`` in batches of 100, values stringified and cut to MLflow's limit."""
        self._check_run()
        items = [(k, str(v)[: self._MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), self._PARAM_BATCH):
            self._mlflow.log_params(dict(items[start : start + self._PARAM_BATCH]))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """``mlflow.log_metrics`` at ``step``."""
        self._check_run()
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | os.PathLike) -> None:
        """``mlflow.log_artifact`` under :attr:`artifact_dir`."""
        self._check_run()
        self._mlflow.log_artifact(os.fspath(path), artifact_path=self.artifact_dir)
