"""Jobs of the platform: named asset selections."""

from __future__ import annotations

import dagster as dg

from assets.evaluation import PROGNOSIS_STUDIES

__all__ = ["benchmark_job", "data_job", "prognosis_job", "training_job", "uncertainty_job"]

#: Reproduce the data stages and run their quality gates.
data_job = dg.define_asset_job(
    "data_pipeline",
    selection=dg.AssetSelection.groups("data"),
    description="generate -> ingest -> curate, each DVC-versioned, with the blocking quality checks",
)

#: Train the four stages from the base model on the current curated dataset.
training_job = dg.define_asset_job(
    "training_pipeline",
    selection=dg.AssetSelection.groups("training"),
    description="base model -> sft -> reasoning sft -> dpo -> audio, each on DeepSpeed with MLflow logging",
)

#: One prognostic study (a partition) of the evaluated checkpoint, with its power check.
prognosis_job = dg.define_asset_job(
    "prognosis_pipeline",
    selection=dg.AssetSelection.assets("prognosis_studies"),
    partitions_def=PROGNOSIS_STUDIES,
    description="landmark survival studies: assistant vs task-specific vs clinical Cox, internal and external",
)

#: Benchmark the evaluated checkpoint against the base model and the majority answer.
benchmark_job = dg.define_asset_job(
    "benchmark_pipeline",
    selection=dg.AssetSelection.assets("benchmark_results"),
    description="every registry benchmark: base / majority / candidate with paired bootstrap CIs, to MLflow",
)

#: The reliability index of the evaluated checkpoint (semantic entropy, sentence-level levels).
uncertainty_job = dg.define_asset_job(
    "uncertainty_pipeline",
    selection=dg.AssetSelection.assets("uncertainty_calibration"),
    description="VQA semantic-entropy AUROC/PRR per M and sentence-level reliability levels, to MLflow",
)
