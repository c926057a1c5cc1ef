"""Shared glue for assets backed by a DVC stage: reproduce, push, version, record.

The data version of an asset is the md5 DVC records for the stage's output in ``dvc.lock``;
it becomes the asset's Dagster ``DataVersion`` and the ``xmed.data_version`` tag of its MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.resources import DvcResource, MlflowResource, PathsResource

__all__ = ["curated_data_version", "flatten_numbers", "materialize_dvc_stage", "stage_name"]


def stage_name(stage: str, paths: PathsResource) -> str:
    return f"{stage}@{paths.data_profile}"


def curated_data_version(dvc: DvcResource, paths: PathsResource) -> str:
    """The dataset version every downstream run is tagged with (md5 of the curated output)."""
    return dvc.out_md5(stage_name("curate", paths))


def flatten_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c -> value`` (for MLflow metrics)."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten_numbers(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip(".")] = float(d)
    return out


def _mlflow_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-/ " else "_" for c in key)[:250]


def materialize_dvc_stage(
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    summary_file: str,
    paths: PathsResource,
    dvc: DvcResource,
    mlflow: MlflowResource,
    describe: Callable[[Path], dict[str, str]] | None = None,
) -> tuple[dg.MaterializeResult, dict[str, Any]]:
    """Reproduce ``<stage>@<profile>``, push it, and record version, params and summary.

    Args:
        stage: the DVC stage family (generate / ingest / curate).
        summary_file: the JSON summary the stage writes, relative to the data root.
        describe: builds markdown previews (name -> markdown) from the data root after the stage
            ran; each becomes Dagster metadata and an MLflow text artifact.

    Returns:
        the ``MaterializeResult`` (data version + metadata) and the parsed summary.
    """
    import mlflow as mlf

    name = stage_name(stage, paths)
    context.log.info(f"dvc repro {name}")
    dvc.repro(name)
    dvc.push(name)
    version = dvc.out_md5(name)
    summary_path = paths.data_root / summary_file
    summary = json.loads(summary_path.read_text())
    params = paths.data_params().get(stage, {})
    previews = describe(paths.data_root) if describe else {}
    with mlflow.run(context, run_name=name, data_version=version) as run:
        mlf.log_params({_mlflow_key(k): v for k, v in flatten_numbers(params).items()})
        mlf.log_metrics({_mlflow_key(k): v for k, v in flatten_numbers(summary).items()})
        mlf.log_dict(summary, f"{Path(summary_file).name}")
        for key, markdown in previews.items():
            mlf.log_text(markdown, f"{key}.md")
        url = mlflow.run_url(run)
    metadata = {
        "dvc_stage": name,
        "data_version": version,
        "path": dg.MetadataValue.path(str(paths.data_root / Path(summary_file).parts[0])),
        "mlflow_run": dg.MetadataValue.url(url),
        "summary": dg.MetadataValue.json(summary),
        **{key: dg.MetadataValue.md(markdown) for key, markdown in previews.items()},
    }
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata), summary
