"""Jobs of the platform: named asset selections."""

from __future__ import annotations

import dagster as dg

__all__ = ["data_job", "training_job"]

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
