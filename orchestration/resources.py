"""Dagster resources: the platform's small interfaces to its external systems.

* :class:`PathsResource`: the repository root and the profile's data folders.
* :class:`MlflowResource`: our own MLflow adapter (``dagster-mlflow`` is a legacy beta). One MLflow
  run per asset materialisation, tagged with the Dagster run id, the asset key and the data
  version; the SQLite store is created once, under a file lock, before any parallel step uses it.
* :class:`DvcResource`: the ``dvc`` CLI from its own tool environment (DVC's antlr pin conflicts
  with Dagster's), plus direct reads of ``dvc.lock`` for data versions.

``build_resources(profile)`` is the one place resources are built from a profile.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from orchestration.profiles import Profile, load_data_params
from orchestration.training import TrainingResource

__all__ = ["DvcError", "DvcResource", "EvaluationResource", "MlflowResource", "PathsResource", "build_resources"]


class PathsResource(dg.ConfigurableResource):
    """Where the platform's files live for one profile."""

    root: str
    data_profile: str
    gx_root: str

    @property
    def data_root(self) -> Path:
        return Path(self.root) / "data" / self.data_profile

    def data_params(self) -> dict[str, Any]:
        """The ``params.yaml`` block of this profile's data stages."""
        return load_data_params(self.root, self.data_profile)


class MlflowResource(dg.ConfigurableResource):
    """A thin MLflow adapter: one run per asset materialisation."""

    tracking_uri: str
    artifact_root: str
    experiment: str
    ui_url: str

    def _ensure_store(self) -> None:
        """Create the experiment (and, for SQLite, the database) once, serialised by a file lock.

        A fresh SQLite database migrated by several processes at once fails; every process
        takes the lock before its first MLflow call.
        """
        import mlflow

        lock_dir = Path(self.artifact_root if "://" not in self.artifact_root else ".").resolve()
        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            lock_dir = db.parent
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / ".mlflow-init.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            mlflow.set_tracking_uri(self.tracking_uri)
            if mlflow.get_experiment_by_name(self.experiment) is None:
                mlflow.create_experiment(self.experiment, artifact_location=self.artifact_root)
            mlflow.set_experiment(self.experiment)

    @contextlib.contextmanager
    def run(
        self,
        context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
        *,
        run_name: str,
        data_version: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> Iterator[Any]:
        """Start an MLflow run tagged with the Dagster run, the asset and the data version.

        Yields:
            the active ``mlflow.ActiveRun``; log to it with the ``mlflow`` module as usual.
        """
        import mlflow

        self._ensure_store()
        all_tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.job": context.run.job_name,
            "xmed.stage": run_name,
            **({"xmed.data_version": data_version} if data_version else {}),
            **(tags or {}),
        }
        with mlflow.start_run(run_name=run_name, tags=all_tags) as active:
            yield active

    def run_url(self, run: Any) -> str:
        """Link to a run in the MLflow UI."""
        return f"{self.ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


class DvcError(RuntimeError):
    """A ``dvc`` command failed; the message carries its output."""


class DvcResource(dg.ConfigurableResource):
    """The ``dvc`` CLI of the repository at ``repo_dir``.

    Stage commands run ``python -m ...``: the Python of this process is put first on ``PATH`` so
    DVC runs the stages with the platform's environment.
    """

    repo_dir: str
    binary: str
    push_outputs: bool = True

    def _run(self, *args: str) -> str:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1",
        }
        try:
            proc = subprocess.run(
                [self.binary, *args], cwd=self.repo_dir, env=env, capture_output=True, text=True
            )
        except FileNotFoundError as e:
            raise DvcError(
                f"dvc CLI not found at {self.binary!r}; run `make setup` (DVC lives in .venv-dvc)"
            ) from e
        if proc.returncode != 0:
            raise DvcError(f"`dvc {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def repro(self, stage: str) -> str:
        """Reproduce one stage (its upstream stages are other assets: ``--single-item``)."""
        return self._run("repro", "--single-item", stage)

    def push(self, stage: str) -> str:
        """Push the stage's outputs to the default remote (no-op when ``push_outputs`` is off)."""
        return self._run("push", stage) if self.push_outputs else ""

    def lock_entry(self, stage: str) -> dict[str, Any]:
        """The ``dvc.lock`` entry of ``stage``, read directly from the YAML."""
        return read_lock_entry(Path(self.repo_dir) / "dvc.lock", stage)

    def out_md5(self, stage: str) -> str:
        """The md5 of the stage's (single) output folder: the data version."""
        return out_md5(self.lock_entry(stage), stage)


def read_lock_entry(lock_path: Path, stage: str) -> dict[str, Any]:
    """The entry of ``stage`` in a ``dvc.lock`` file (``generate@ci`` style names included)."""
    if not lock_path.exists():
        raise DvcError(f"{lock_path} does not exist: run `dvc repro {stage}` first")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    stages = lock.get("stages", {})
    if stage not in stages:
        raise DvcError(f"{lock_path} has no entry for stage {stage!r}; stages there: {sorted(stages)}")
    return stages[stage]


def out_md5(entry: dict[str, Any], stage: str) -> str:
    outs = entry.get("outs") or []
    if len(outs) != 1 or "md5" not in outs[0]:
        raise DvcError(f"stage {stage!r}: expected exactly one output with an md5 in dvc.lock, got {outs}")
    return outs[0]["md5"]


def build_resources(profile: Profile, *, repo_dir: str | None = None) -> dict[str, Any]:
    """The resources of a profile. ``repo_dir`` overrides where DVC runs (tests use a scratch repo)."""
    root = repo_dir or profile.root
    return {
        "paths": PathsResource(root=root, data_profile=profile.data_profile, gx_root=profile.gx_root),
        "mlflow": MlflowResource(
            tracking_uri=profile.mlflow.tracking_uri,
            artifact_root=profile.mlflow.artifact_root,
            experiment=profile.mlflow.experiment,
            ui_url=profile.mlflow.ui_url,
        ),
        "dvc": DvcResource(repo_dir=root, binary=profile.dvc.binary, push_outputs=profile.dvc.push),
        "training": TrainingResource(root=root, profile=profile.name),
        "evaluation": EvaluationResource(
            checkpoint_stage=profile.evaluation.checkpoint_stage,
            n_boot=profile.evaluation.n_boot,
            per_family=profile.evaluation.per_family,
            uncertainty_questions=profile.evaluation.uncertainty_questions,
            uncertainty_reports=profile.evaluation.uncertainty_reports,
        ),
    }


class EvaluationResource(dg.ConfigurableResource):
    """The evaluation settings of the profile (which checkpoint is judged, bootstrap size)."""

    checkpoint_stage: str
    n_boot: int
    per_family: int
    uncertainty_questions: int
    uncertainty_reports: int
