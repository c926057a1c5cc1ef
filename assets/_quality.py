"""Adapter from the Great Expectations quality library to Dagster asset-check results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg

from assets._dvc_stage import stage_name
from model.data.catalogue import load_region_catalogue
from orchestration.resources import DvcResource, MlflowResource, PathsResource
from validation.data_quality import run_data_quality

__all__ = ["quality_check_results"]

_STAGE_OF_ASSET = {"image_manifest": "ingest", "curated_dataset": "curate"}


def quality_check_results(
    context: dg.AssetCheckExecutionContext,
    *,
    asset: str,
    checks: Sequence[str],
    paths: PathsResource,
    mlflow: MlflowResource,
    dvc: DvcResource,
) -> Iterator[dg.AssetCheckResult]:
    """Run the named GX checks, log the Data Docs to MLflow, yield one result per check."""
    import mlflow as mlf

    quality = paths.data_params()["quality"]
    report = run_data_quality(
        paths.data_root,
        gx_root=Path(paths.gx_root),
        allowed_regions=set(load_region_catalogue().names),
        decode_sample=int(quality["decode_sample"]),
        max_task_share=float(quality["max_task_share"]),
        min_task_count=int(quality["min_task_count"]),
        closed_yes_share=tuple(quality["closed_yes_share"]),
        max_modality_share=float(quality["max_modality_share"]),
        checks=tuple(checks),
    )
    version = dvc.out_md5(stage_name(_STAGE_OF_ASSET[asset], paths))
    with mlflow.run(context, run_name=f"quality:{asset}", data_version=version) as run:
        for name in checks:
            outcome = report.outcomes[name]
            mlf.log_metric(f"quality.{name}.passed", float(outcome.passed))
            mlf.log_metric(f"quality.{name}.failed_rows", float(outcome.n_failed))
            mlf.log_text(outcome.to_markdown(), f"quality/{name}.md")
        if report.data_docs_index is not None:
            mlf.log_artifacts(str(Path(report.data_docs_index).parent), "data_docs")
        url = mlflow.run_url(run)
    for name in checks:
        outcome = report.outcomes[name]
        yield dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows_checked": outcome.n_rows,
                "rows_failed": outcome.n_failed,
                "data_version": version,
                "report": dg.MetadataValue.md(outcome.to_markdown()),
                "data_docs": dg.MetadataValue.path(str(report.data_docs_index or "")),
                "mlflow_run": dg.MetadataValue.url(url),
            },
        )
