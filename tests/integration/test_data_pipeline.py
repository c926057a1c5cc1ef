"""The data assets end to end on the ``ci`` profile: in-process Dagster run over a scratch DVC repo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import mlflow
import pytest
import yaml

from orchestration.definitions import make_definitions
from orchestration.profiles import REPO_ROOT, load_profile
from orchestration.sensors import data_version_sensor, lock_data_version
from tests.integration.conftest import make_scratch_repo, run_job

pytestmark = pytest.mark.integration

DATA_ASSETS = ["raw_sources", "image_manifest", "curated_dataset"]
CHECKS = {
    "image_manifest": ["manifest_schema", "manifest_boxes", "image_files", "split_integrity"],
    "curated_dataset": ["instruction_schema", "phi_free", "class_balance"],
}


def test_all_data_assets_materialise_and_all_gates_pass(data_run):
    root, instance, result = data_run
    assert result.success
    materialised = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialised == set(DATA_ASSETS)
    evaluations = {
        (e.asset_check_key.asset_key.path[-1], e.asset_check_key.name): e
        for e in (ev.event_specific_data for ev in result.all_events if ev.event_type_value == "ASSET_CHECK_EVALUATION")
    }
    expected = {(a, c) for a, cs in CHECKS.items() for c in cs}
    assert set(evaluations) == expected
    failed = {k: v.metadata["report"].value for k, v in evaluations.items() if not v.passed}
    assert not failed, failed


def test_data_versions_come_from_dvc_lock(data_run):
    root, instance, _ = data_run
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for asset, stage in zip(DATA_ASSETS, ["generate@ci", "ingest@ci", "curate@ci"]):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        assert event.asset_materialization.tags["dagster/data_version"] == lock[stage]["outs"][0]["md5"]
    assert lock_data_version(root, "ci") == lock["curate@ci"]["outs"][0]["md5"]


def test_outputs_pushed_to_the_local_remote(data_run):
    root, _, _ = data_run
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(
        [str(REPO_ROOT / ".venv-dvc/bin/dvc"), "status", "-c", "curate@ci"], cwd=root, env=env,
        capture_output=True, text=True, check=True,
    ).stdout
    assert "new:" not in out and "deleted:" not in out, out
    assert any((root / ".dvcstore").rglob("*"))


def test_mlflow_runs_tagged_with_data_version_and_dagster_run(data_run):
    root, instance, result = data_run
    mlflow.set_tracking_uri(f"sqlite:///{root}/.mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["xmed-ci"], output_format="list")
    by_stage = {r.data.tags["xmed.stage"]: r for r in runs if r.data.tags.get("dagster.run_id") == result.run_id}
    assert {"generate@ci", "ingest@ci", "curate@ci", "quality:image_manifest", "quality:curated_dataset"} <= set(by_stage)
    curated = by_stage["curate@ci"]
    assert curated.data.tags["xmed.data_version"] == lock_data_version(root, "ci")
    assert curated.data.metrics, "curation counts were not logged"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(by_stage["quality:curated_dataset"].info.run_id)}
    assert "data_docs" in artifacts


def test_sensor_requests_a_run_only_for_an_unrecorded_version(data_run, tmp_path):
    root, instance, _ = data_run
    resources = {"paths": make_definitions(load_profile("ci", root)).resources["paths"]}
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    assert isinstance(data_version_sensor(ctx), dg.SkipReason)
    # a new version appears in dvc.lock (as after `dvc repro` or `git pull` outside Dagster)
    lock_path = root / "dvc.lock"
    original = lock_path.read_text()
    lock = yaml.safe_load(original)
    lock["stages"]["curate@ci"]["outs"][0]["md5"] = "0" * 32 + ".dir"
    lock_path.write_text(yaml.safe_dump(lock))
    try:
        request = data_version_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == "data-" + "0" * 32 + ".dir"
    finally:
        lock_path.write_text(original)


def test_string_asset_selection_parses():
    """Dagster's selection grammar needs antlr4 4.13 (DVC's pin would break it)."""
    selection = dg.AssetSelection.from_string("group:data and not key:raw_sources")
    defs = make_definitions(load_profile("ci"))
    keys = selection.resolve(defs.resolve_asset_graph())
    assert {k.path[-1] for k in keys} == {"image_manifest", "curated_dataset"}


def test_failed_gate_blocks_downstream(tmp_path):
    """A truncated image (header intact, pixels cut) passes ingest but fails `image_files`;
    curation must not run."""
    root = make_scratch_repo(tmp_path / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["ci"]["quality"]["decode_sample"] = 100_000  # open every image
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    instance = dg.DagsterInstance.ephemeral()
    assert run_job(root, instance, "data_pipeline", asset_selection=[dg.AssetKey("raw_sources")]).success
    victim = sorted((root / "data/ci/raw/images").rglob("*.png"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])
    result = run_job(
        root, instance, "data_pipeline", asset_selection=[dg.AssetKey("image_manifest"), dg.AssetKey("curated_dataset")],
        raise_on_error=False,
    )
    checks = {
        e.event_specific_data.asset_check_key.name: e.event_specific_data
        for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["image_files"].passed is False
    assert victim.stem in json.dumps(str(checks["image_files"].metadata["report"].value))
    materialised = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialised == {"image_manifest"}
