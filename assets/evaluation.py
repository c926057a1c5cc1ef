"""Evaluation assets: the benchmark suite and the prognostic studies of the assistant.

``benchmark_results`` runs every benchmark of the registry (:mod:`validation.benchmarks`) for the
untrained base model, the majority answer and the candidate (the profile's evaluation checkpoint)
on the same items, with paired bootstrap CIs of the differences; a blocking check fails when a
registry metric could not be computed.

``prognosis_studies`` is partitioned by study: each partition runs one study (:func:`validation.prognosis_assistant.run_prognosis_study`): the
assistant at the profile's evaluation checkpoint against a task-specific model on its frozen
vision features and a clinical Cox score; the markdown + PNG report and ``results.json`` go to
MLflow and to the asset's metadata. The ``cohort_power`` check warns (never crashes) when a
cohort is too small or has too few events for a statistic it reports.
"""

import json

import dagster as dg

from assets.data import image_manifest
from assets.training import audio_checkpoint, base_model
from orchestration.resources import EvaluationResource, MlflowResource, PathsResource
from orchestration.training import TrainingResource

__all__ = ["PROGNOSIS_STUDIES", "benchmark_results", "prognosis_studies", "uncertainty_calibration"]

@dg.asset(
    group_name="evaluation",
    deps=[base_model, audio_checkpoint],
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "metrics_complete",
            asset="benchmark_results",
            blocking=True,
            description="every metric of every registry benchmark has a finite value and CI for every system",
        )
    ],
)
def benchmark_results(
    context: dg.AssetExecutionContext,
    paths: PathsResource,
    mlflow: MlflowResource,
    training: TrainingResource,
    evaluation: EvaluationResource,
):
    """Base / majority / candidate on every registry benchmark, deltas with paired bootstrap 95% CIs."""
    import mlflow as mlf

    from validation.benchmarks.report import log_results
    from validation.benchmarks.runner import incomplete_metrics, run_benchmarks

    systems = {"base": training.model_dir("base_model"), "candidate": training.model_dir(evaluation.checkpoint_stage)}
    out = training.runs_root / "evaluation" / "benchmarks"
    with mlflow.run(context, run_name="benchmarks", tags={"xmed.checkpoint": str(systems["candidate"])}) as active:
        suite = run_benchmarks(
            checkpoints=systems, out_dir=out, data_root=paths.data_root, majority=True,
            cache_dir=training.runs_root / "evaluation" / "bench_cache", limit=evaluation.per_family,
            n_boot=evaluation.n_boot,
        )
        log_results(suite, mlf, out_dir=out)
        url = mlflow.run_url(active)
    missing = incomplete_metrics(suite)
    yield dg.MaterializeResult(
        metadata={
            "results": dg.MetadataValue.md((out / "results.md").read_text()),
            "results_dir": dg.MetadataValue.path(str(out)),
            "candidate": dg.MetadataValue.path(str(systems["candidate"])),
            "mlflow_run": dg.MetadataValue.url(url),
        }
    )
    yield dg.AssetCheckResult(
        check_name="metrics_complete",
        passed=not missing,
        metadata={"missing": dg.MetadataValue.md("\n".join(f"- {m}" for m in missing) or "none")},
    )


@dg.asset(
    group_name="evaluation",
    deps=[audio_checkpoint],
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            "auroc_complete",
            asset="uncertainty_calibration",
            blocking=True,
            description="an AUROC for every estimator and every M, and for every number of questions",
        )
    ],
)
def uncertainty_calibration(
    context: dg.AssetExecutionContext,
    paths: PathsResource,
    mlflow: MlflowResource,
    training: TrainingResource,
    evaluation: EvaluationResource,
):
    """The reliability index: VQA semantic-entropy AUROC/PRR per M, sentence-level levels (eq. 7)."""
    import mlflow as mlf

    from validation.prognosis_assistant import load_assistant
    from validation.reliability.experiment import run_uncertainty_calibration
    from validation.reliability.summary import missing_aurocs, uncertainty_metrics

    checkpoint = training.model_dir(evaluation.checkpoint_stage)
    out = training.runs_root / "evaluation" / "uncertainty"
    model, processor = load_assistant(checkpoint)
    with mlflow.run(context, run_name="uncertainty", tags={"xmed.checkpoint": str(checkpoint)}) as active:
        result = run_uncertainty_calibration(
            model, processor, shards=paths.data_root / "curated" / "shards", data_root=paths.data_root,
            out_dir=out, n_vqa=evaluation.uncertainty_questions, n_reports=evaluation.uncertainty_reports,
        )
        mlf.log_metrics(uncertainty_metrics(result))
        mlf.log_artifacts(str(out), artifact_path="uncertainty")
        url = mlflow.run_url(active)
    missing = missing_aurocs(result)
    yield dg.MaterializeResult(
        metadata={
            "table": dg.MetadataValue.md((out / "uncertainty_table.md").read_text()),
            "checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "mlflow_run": dg.MetadataValue.url(url),
        }
    )
    yield dg.AssetCheckResult(
        check_name="auroc_complete",
        passed=not missing,
        metadata={"missing": dg.MetadataValue.md("\n".join(f"- {m}" for m in missing) or "none")},
    )


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
