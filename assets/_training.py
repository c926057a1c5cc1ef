"""Shared glue of the training assets: run a recipe inside the asset's MLflow run and record it."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from assets._dvc_stage import curated_data_version
from model.base import weights_digest
from model.data.io import atomic_file
from orchestration.resources import DvcResource, MlflowResource, PathsResource
from orchestration.training import TrainingResource

__all__ = ["TRAIN_RETRY", "claim_run_folder", "train_stage"]

#: Names the Dagster run lineage that owns a stage's run folder (its resumable checkpoints).
LINEAGE_FILE = "dagster_lineage.json"

#: a transient failure (killed worker, lost rendezvous, I/O error) is retried; the recipe resumes from
#: its last checkpoint. Errors in :data:`NON_TRANSIENT` fail the step at once.
TRAIN_RETRY = dg.RetryPolicy(max_retries=2, delay=5.0)
NON_TRANSIENT = (ValueError, FileNotFoundError, FloatingPointError, TypeError, KeyError)


def claim_run_folder(output_dir: str | Path, lineage: str) -> bool:
    """Make ``lineage`` the owner of a stage's run folder; True when it was another's (or nobody's).

    A step retry and a re-execution from failure share the Dagster root run id, so they resume
    from the stage's last checkpoint; a new materialisation (new data, new config, a scheduled
    retrain) must start fresh instead of resuming, or refusing to resume, a finished run's
    checkpoints. The owner's root run id is kept in ``<output_dir>/dagster_lineage.json``.
    """
    path = Path(output_dir) / LINEAGE_FILE
    owner = json.loads(path.read_text(encoding="utf-8")).get("root_run_id") if path.is_file() else None
    if owner == lineage:
        return False
    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump({"root_run_id": lineage, "previous": owner}, fh)
    return True


def train_stage(
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    run: str,
    parent: str,
    paths: PathsResource,
    dvc: DvcResource,
    mlflow: MlflowResource,
    training: TrainingResource,
) -> dg.MaterializeResult:
    """Run one training recipe and record its lineage.

    ``run`` names the recipe entry point as ``module:function``. The recipe logs params, loss, learning rate, throughput and system metrics into the asset's
    MLflow run; the final model is logged as an artifact; the asset's data version is the sha256
    of the weights, and its metadata names the dataset version and the parent checkpoint.
    """
    import importlib

    import mlflow as mlf

    from model.recipes.metric_logging import MlflowLogger

    data_version = curated_data_version(dvc, paths)
    parent_dir = str(training.model_dir(parent))
    cfg = training.stage_config(
        stage, parent_model_dir=parent_dir, data_version=data_version, run_id=context.run.run_id
    )
    lineage = context.run.root_run_id or context.run.run_id
    if claim_run_folder(cfg.output_dir, lineage):
        cfg.train.resume_from = None  # another run's checkpoints: start fresh (the recipe clears them)
        context.log.info(f"{stage}: new run lineage {lineage}: training from the parent checkpoint")
    with mlflow.run(
        context, run_name=f"train:{stage}", data_version=data_version, tags={"xmed.parent": parent_dir}
    ) as active:
        module, func = run.split(":")
        recipe = getattr(importlib.import_module(module), func)
        try:
            result = recipe(cfg, logger=MlflowLogger(artifact_dir=stage))
        except NON_TRANSIENT as e:
            # bad data, bad config or a diverged loss: retrying cannot help, fail at once
            raise dg.Failure(description=f"{stage}: {type(e).__name__}: {e}", allow_retries=False) from e
        mlf.log_artifacts(result.model_dir, artifact_path="model")
        url = mlflow.run_url(active)
    digest = weights_digest(result.model_dir)
    provenance = json.loads((Path(result.model_dir) / "xmed_provenance.json").read_text())
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest[:32]),
        metadata={
            "model_dir": dg.MetadataValue.path(result.model_dir),
            "parent_checkpoint": dg.MetadataValue.path(parent_dir),
            "parent_weights_sha256": weights_digest(parent_dir),
            "data_version": data_version,
            "weights_sha256": digest,
            "steps": result.steps,
            "final_loss": float(result.final_loss),
            "samples_per_s": float(result.samples_per_s),
            "tokens_per_s": float(result.tokens_per_s),
            "wall_s": float(result.wall_s),
            "resumed_from": str(result.resumed_from),
            "run_lineage": lineage,
            "provenance": dg.MetadataValue.json(provenance),
            "mlflow_run": dg.MetadataValue.url(url),
        },
    )
