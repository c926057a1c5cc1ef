"""The four training stages as Dagster assets on the ``ci`` profile, after the data pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from safetensors.torch import load_file

from orchestration.sensors import lock_data_version
from tests.integration.conftest import run_job

pytestmark = pytest.mark.integration

STAGES = ["base_model", "sft_checkpoint", "reasoning_checkpoint", "dpo_checkpoint", "audio_checkpoint"]


@pytest.fixture(scope="module")
def training_run(data_run):
    root, instance, data_result = data_run
    assert data_result.success
    return root, instance, run_job(root, instance, "training_pipeline")


def test_every_stage_materialises_with_lineage(training_run):
    root, instance, result = training_run
    assert result.success
    version = lock_data_version(root, "ci")
    parents = {}
    for asset in STAGES:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        meta = event.asset_materialization.metadata
        assert meta["data_version"].value == version
        model_dir = Path(meta["model_dir"].value)
        assert (model_dir / "config.json").exists()
        parents[asset] = meta.get("parent_checkpoint")
        if asset != "base_model":
            provenance = json.loads((model_dir / "xmed_provenance.json").read_text())
            assert provenance["data_version"] == version
            assert provenance["dagster_run_id"] == result.run_id
    assert Path(parents["sft_checkpoint"].value).parent.name == "base_model"
    assert Path(parents["audio_checkpoint"].value).parent.name == "dpo"


def test_training_logged_to_the_assets_mlflow_runs(training_run):
    root, _, result = training_run
    mlflow.set_tracking_uri(f"sqlite:///{root}/.mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["xmed-ci"], output_format="list")
    mine = {r.data.tags["xmed.stage"]: r for r in runs if r.data.tags.get("dagster.run_id") == result.run_id}
    assert {"train:sft", "train:reasoning_sft", "train:dpo", "train:audio"} <= set(mine)
    client = mlflow.MlflowClient()
    for stage in ("sft", "reasoning_sft", "dpo", "audio"):
        run = mine[f"train:{stage}"]
        key = "dpo/pairs" if stage == "dpo" else f"{stage}/loss"  # ci: DPO may find no pair to train on
        assert client.get_metric_history(run.info.run_id, key), stage
        assert "model" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_audio_stage_left_everything_but_audio_untouched(training_run):
    root, instance, _ = training_run

    def weights(asset):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        model_dir = Path(event.asset_materialization.metadata["model_dir"].value)
        tensors = {}
        for f in sorted(model_dir.glob("*.safetensors")):
            tensors.update(load_file(f))
        return tensors

    before, after = weights("dpo_checkpoint"), weights("audio_checkpoint")
    frozen = [k for k in before if "audio" not in k]
    assert frozen and all(before[k].equal(after[k]) for k in frozen)
    assert any("audio" in k for k in after)


@pytest.mark.parametrize("study", ["ncctg", "lung_tki"])
def test_prognosis_study_partition_reports_and_checks_power(training_run, study):
    root, instance, _ = training_run
    result = run_job(root, instance, "prognosis_pipeline", partition_key=study)
    assert result.success
    event = instance.get_latest_materialization_event(dg.AssetKey("prognosis_studies"))
    assert event.asset_materialization.partition == study
    meta = event.asset_materialization.metadata
    report = Path(meta["report_dir"].value)
    results = json.loads((report / "results.json").read_text())
    assert results["study"] == study and results["cohorts"]
    assert f"Prognostic study `{study}`" in meta["report"].value
    competitors = {c for cohort in results["cohorts"].values() for c in cohort["competitors"]}
    not_fitted = {w["competitor"] for w in results["warnings"] if w["statistic"] == "fit"}
    # every competitor either reports or is left out with a recorded warning (ci cohorts are tiny)
    assert {"clinical_cox", "task_specific"} <= competitors | not_fitted
    if study != "ncctg":
        assert "assistant" in competitors  # the evaluated checkpoint took part
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "cohort_power"
    assert check.passed == (meta["n_warnings"].value == 0)
    if study == "lung_tki":
        assert not check.passed  # a dozen ci patients cannot power the statistics: a warning, not a crash


def test_benchmark_results_compare_candidate_with_base_and_majority(training_run):
    root, instance, _ = training_run
    result = run_job(root, instance, "benchmark_pipeline")
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "metrics_complete" and check.passed
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("benchmark_results")
    ).asset_materialization.metadata
    table = meta["results"].value
    for system in ("majority", "base", "candidate"):
        assert system in table
    mlflow.set_tracking_uri(f"sqlite:///{root}/.mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["xmed-ci"], output_format="list")
    (run,) = [r for r in runs if r.data.tags.get("dagster.run_id") == result.run_id]
    keys = set(run.data.metrics)
    assert any(k.startswith("bench/") and k.endswith("/delta_vs_base") for k in keys)


def test_a_new_run_retrains_a_stage_from_its_parent(training_run):
    """Re-materialising ``sft_checkpoint`` in a new run trains again instead of resuming the last one.

    Runs last in this module: it replaces the SFT model the earlier tests read.
    """
    root, instance, first = training_run
    sft_dir = root / "runs" / "ci" / "sft"
    assert json.loads((sft_dir / "dagster_lineage.json").read_text())["root_run_id"] == first.run_id
    again = run_job(root, instance, "training_pipeline", asset_selection=[dg.AssetKey("sft_checkpoint")])
    assert again.success and again.run_id != first.run_id
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("sft_checkpoint")
    ).asset_materialization.metadata
    assert meta["run_lineage"].value == again.run_id
    assert meta["resumed_from"].value == "None"  # the first run's finished checkpoint was not resumed
    assert meta["steps"].value > 0
    record = json.loads((sft_dir / "dagster_lineage.json").read_text())
    assert record == {"root_run_id": again.run_id, "previous": first.run_id}
