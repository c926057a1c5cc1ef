"""Evaluation assets: the prognostic studies of the assistant (issue 5), partitioned by study.

Each partition runs one study (:func:`validation.prognosis_assistant.run_prognosis_study`): the
assistant at the profile's evaluation checkpoint against a task-specific model on its frozen
vision features and a clinical Cox score; the markdown + PNG report and ``results.json`` go to
MLflow and to the asset's metadata. The ``cohort_power`` check warns (never crashes) when a
cohort is too small or has too few events for a statistic it reports.
"""

import json

import dagster as dg

from assets.data import image_manifest
from assets.training import audio_checkpoint
from orchestration.resources import EvaluationResource, MlflowResource, PathsResource
from orchestration.training import TrainingResource

__all__ = ["prognosis_studies", "PROGNOSIS_STUDIES"]

#: The paper's three imaging studies on the demo corpus + the NCCTG lung cohort (real patients).
PROGNOSIS_STUDIES = dg.StaticPartitionsDefinition(["ncctg", "lung_tki", "nsclc", "gbm"])


@dg.asset(
    group_name="evaluation",
    partitions_def=PROGNOSIS_STUDIES,
    deps=[audio_checkpoint, image_manifest],
    kinds={"lifelines"},
    check_specs=[
        dg.AssetCheckSpec(
            "cohort_power",
            asset="prognosis_studies",
            description="every reported statistic rests on enough patients and events (warning)",
        )
    ],
)
def prognosis_studies(
    context: dg.AssetExecutionContext,
    paths: PathsResource,
    mlflow: MlflowResource,
    training: TrainingResource,
    evaluation: EvaluationResource,
):
    """Landmark AUC [95% CI], accuracy, DeLong, KM + log-rank, C-index, Brier per cohort and competitor."""
    import mlflow as mlf

    from validation.prognosis_assistant import run_prognosis_study, study_metrics
    from validation.survival import power_check

    study = context.partition_key
    checkpoint = training.model_dir(evaluation.checkpoint_stage)
    out_root = training.runs_root / "evaluation" / "prognosis"
    with mlflow.run(context, run_name=f"prognosis:{study}", tags={"xmed.checkpoint": str(checkpoint)}) as active:
        result, files = run_prognosis_study(
            study, data_root=paths.data_root, checkpoint=checkpoint, out_dir=out_root, n_boot=evaluation.n_boot
        )
        results = json.loads(files.json.read_text())
        mlf.log_metrics(study_metrics(results))
        mlf.log_artifacts(str(files.out_dir), artifact_path=f"prognosis/{study}")
        url = mlflow.run_url(active)
    check = power_check(result)
    yield dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(files.markdown.read_text()),
            "report_dir": dg.MetadataValue.path(str(files.out_dir)),
            "checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "n_warnings": check.n_warnings,
            "mlflow_run": dg.MetadataValue.url(url),
        }
    )
    yield dg.AssetCheckResult(
        check_name="cohort_power",
        passed=check.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"warnings": dg.MetadataValue.md("\n".join(f"- {r}" for r in check.reasons) or "none")},
    )
