"""Data-plane assets: raw sources -> image manifest -> curated instruction dataset, with gates.

Each asset reproduces its DVC stage (the same entry point ``dvc repro`` runs) and reports the
stage output's md5 from ``dvc.lock`` as its data version. The Great Expectations suites run as
blocking asset checks: a failure stops every asset downstream.
"""


import dagster as dg

from assets._dvc_stage import materialize_dvc_stage
from assets._quality import quality_check_results
from model.data.preview import instruction_preview, manifest_preview
from orchestration.resources import DvcResource, MlflowResource, PathsResource

__all__ = ["curated_dataset", "image_manifest", "instruction_quality", "manifest_quality", "raw_sources"]

MANIFEST_CHECKS = ("manifest_schema", "manifest_boxes", "image_files", "split_integrity")
INSTRUCTION_CHECKS = ("instruction_schema", "phi_free", "class_balance")
_RETRY = dg.RetryPolicy(max_retries=2, delay=2.0, backoff=dg.Backoff.EXPONENTIAL)


@dg.asset(group_name="data", kinds={"dvc", "parquet"}, retry_policy=_RETRY)
def raw_sources(
    context: dg.AssetExecutionContext, paths: PathsResource, dvc: DvcResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The generated demo corpus (images, DICOM, speech, patients): DVC stage ``generate``."""
    result, _ = materialize_dvc_stage(
        context, stage="generate", summary_file="raw/generator.json", paths=paths, dvc=dvc, mlflow=mlflow
    )
    return result


@dg.asset(group_name="data", kinds={"dvc", "parquet"}, deps=[raw_sources], retry_policy=_RETRY)
def image_manifest(
    context: dg.AssetExecutionContext, paths: PathsResource, dvc: DvcResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The typed image manifest (DICOM windowed to PNG, split by patient): DVC stage ``ingest``."""
    result, _ = materialize_dvc_stage(
        context,
        stage="ingest",
        summary_file="manifest/summary.json",
        paths=paths,
        dvc=dvc,
        mlflow=mlflow,
        describe=manifest_preview,
    )
    return result


@dg.asset(group_name="data", kinds={"dvc", "parquet"}, deps=[image_manifest], retry_policy=_RETRY)
def curated_dataset(
    context: dg.AssetExecutionContext, paths: PathsResource, dvc: DvcResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """Instruction pairs of every task family, sharded Parquet + InternVL jsonl: DVC stage ``curate``."""
    result, _ = materialize_dvc_stage(
        context,
        stage="curate",
        summary_file="curated/manifest.json",
        paths=paths,
        dvc=dvc,
        mlflow=mlflow,
        describe=instruction_preview,
    )
    return result


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=image_manifest, blocking=True) for name in MANIFEST_CHECKS],
)
def manifest_quality(
    context: dg.AssetCheckExecutionContext, paths: PathsResource, mlflow: MlflowResource, dvc: DvcResource
):
    """Great Expectations suites over the image manifest (schema, boxes, files, splits)."""
    yield from quality_check_results(
        context, asset="image_manifest", checks=MANIFEST_CHECKS, paths=paths, mlflow=mlflow, dvc=dvc
    )


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=curated_dataset, blocking=True) for name in INSTRUCTION_CHECKS],
)
def instruction_quality(
    context: dg.AssetCheckExecutionContext, paths: PathsResource, mlflow: MlflowResource, dvc: DvcResource
):
    """Great Expectations suites over the instruction shards (schema, PHI, class balance)."""
    yield from quality_check_results(
        context, asset="curated_dataset", checks=INSTRUCTION_CHECKS, paths=paths, mlflow=mlflow, dvc=dvc
    )
