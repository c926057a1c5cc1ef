"""Deployment profiles (ci / demo / prod): one YAML file each, validated into typed models.

The profile is chosen in exactly one place, :mod:`orchestration.definitions`, from the
``XMED_PROFILE`` environment variable (default ``demo``). ``{root}`` in any string value is
replaced by the repository root, so the embedded profiles work from any checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Profile", "load_profile", "load_data_params", "REPO_ROOT", "PROFILE_DIR", "PROFILES"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PROFILES = ("ci", "demo", "prod")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MlflowSettings(_Strict):
    tracking_uri: str = Field(description="MLflow tracking URI (sqlite:///... or http://...)")
    artifact_root: str = Field(description="artifact location of new experiments")
    experiment: str
    ui_url: str = Field(description="where the MLflow UI is served, for links in Dagster metadata")


class DvcSettings(_Strict):
    binary: str = Field(description="the dvc CLI (DVC lives in its own tool environment)")
    push: bool = Field(description="push stage outputs to the default DVC remote after each stage")


class ExecutorSettings(_Strict):
    kind: Literal["in_process", "multiprocess", "k8s", "celery"]
    max_concurrent: int = Field(ge=1)
    config: dict[str, Any] = Field(default_factory=dict, description="executor-specific settings")


class RetrySettings(_Strict):
    max_retries: int = Field(ge=0, le=10)
    delay_s: float = Field(ge=0)


class EvaluationSettings(_Strict):
    """How checkpoints are judged (benchmarks, prognostic studies)."""

    checkpoint_stage: Literal["sft", "reasoning_sft", "dpo", "audio"] = Field(
        "audio", description="the training stage whose model is the assistant under evaluation"
    )
    n_boot: int = Field(2000, ge=100, description="bootstrap resamples of every confidence interval")
    per_family: int = Field(150, ge=1, description="held-out items per task family")
    uncertainty_questions: int = Field(120, ge=4, description="held-out VQA questions of the reliability index")
    uncertainty_reports: int = Field(20, ge=2, description="reports per split (val calibrates, test holds out)")
    studies: tuple[str, ...] = Field(
        ("ncctg", "lung_tki", "nsclc", "gbm"), description="prognostic studies (partitions of prognosis_studies)"
    )


class Profile(_Strict):
    """A validated deployment profile."""

    name: Literal["ci", "demo", "prod"]
    data_profile: str = Field(description="block of params.yaml `data` and suffix of the DVC stages")
    mlflow: MlflowSettings
    dvc: DvcSettings
    gx_root: str
    executor: ExecutorSettings
    retry: RetrySettings
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    root: str = Field(description="repository root the profile was resolved against")


def _substitute(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace("{root}", root)
    if isinstance(value, dict):
        return {k: _substitute(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, root) for v in value]
    return value


def load_profile(name: str, root: str | Path | None = None) -> Profile:
    """Load ``orchestration/profiles/<name>.yaml`` resolved against ``root``.

    Raises:
        ValueError: unknown profile name, or the file does not validate (the message lists
            each offending field).
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILES} (XMED_PROFILE)")
    root = str(Path(root or REPO_ROOT).resolve())
    path = PROFILE_DIR / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    try:
        return Profile.model_validate({**_substitute(raw, root), "root": root})
    except ValidationError as e:
        raise ValueError(f"{path}: invalid profile:\n{e}") from e


def load_data_params(root: str | Path, data_profile: str) -> dict[str, Any]:
    """The ``data.<data_profile>`` block of ``params.yaml`` under ``root``."""
    path = Path(root) / "params.yaml"
    params = yaml.safe_load(path.read_text()) or {}
    try:
        return params["data"][data_profile]
    except KeyError as e:
        raise ValueError(f"{path}: no block data.{data_profile}; add one to run profile {data_profile!r}") from e
