"""The Dagster graph resolves: every asset, check, job, sensor and resource wires up."""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs, make_definitions
from orchestration.profiles import load_profile


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.path[-1] for k in graph.get_all_asset_keys()}
    assert {"raw_sources", "image_manifest", "curated_dataset"} <= keys
    assert defs.resolve_job_def("data_pipeline") is not None
    assert defs.resolve_sensor_def("data_version_sensor") is not None


def test_quality_checks_are_blocking_and_attached():
    graph = make_definitions(load_profile("ci")).resolve_asset_graph()
    checks = {(k.asset_key.path[-1], k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert {n for a, n in checks if a == "image_manifest"} == {
        "manifest_schema", "manifest_boxes", "image_files", "split_integrity"
    }
    assert {n for a, n in checks if a == "curated_dataset"} == {"instruction_schema", "phi_free", "class_balance"}
    data_gates = {k: v for k, v in checks.items() if k[0] in ("image_manifest", "curated_dataset")}
    assert all(spec.blocking for spec in data_gates.values())
    assert checks[("benchmark_results", "metrics_complete")].blocking
    assert checks[("uncertainty_calibration", "auroc_complete")].blocking
    assert not checks[("prognosis_studies", "cohort_power")].blocking  # a warning, never a gate


def test_evaluation_assets_depend_on_the_trained_checkpoints():
    graph = make_definitions(load_profile("ci")).resolve_asset_graph()
    parents = lambda key: {p.path[-1] for p in graph.get(dg.AssetKey(key)).parent_keys}  # noqa: E731
    assert parents("benchmark_results") == {"base_model", "audio_checkpoint"}
    assert parents("prognosis_studies") == {"audio_checkpoint", "image_manifest"}
    assert graph.get(dg.AssetKey("prognosis_studies")).partitions_def.get_partition_keys() == [
        "ncctg", "lung_tki", "nsclc", "gbm"
    ]


def test_lineage_raw_to_curated():
    graph = defs.resolve_asset_graph()
    parents = lambda key: {p.path[-1] for p in graph.get(dg.AssetKey(key)).parent_keys}  # noqa: E731
    assert parents("image_manifest") == {"raw_sources"}
    assert parents("curated_dataset") == {"image_manifest"}
