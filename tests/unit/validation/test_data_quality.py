"""Tests of validation.data_quality: the clean dataset passes all seven checks; each defect class,
injected into a copy of the data, fails the check that owns it and names the offending row.

Great Expectations is slow to start, so the clean run is shared by the module and the defect
tests share one warm GX project and run only the check under test (``checks=``). The ``slow``
variant runs all seven checks per defect and asserts that exactly the owning check fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.data.io import iter_parquet_rows
from model.data.schema import IMAGE_SCHEMA, INSTRUCTION_SCHEMA, PATIENT_SCHEMA
from validation.data_quality import QualityReport, check_names, run_data_quality
from validation.phi import find_phi
from validation.quality_frames import flatten_list

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

MANIFEST, SHARDS = "manifest/images", "curated/shards"


def _rows(root: Path, rel: str) -> list[dict]:
    return list(iter_parquet_rows(root / rel))


def _rewrite(root: Path, rel: str, rows: list[dict], schema: pa.Schema) -> None:
    for f in (root / rel).glob("*.parquet"):
        f.unlink()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / rel / "part-00000.parquet")


def _edit_manifest(root: Path, fn: Callable[[list[dict]], None]) -> None:
    rows = _rows(root, MANIFEST)
    fn(rows)
    _rewrite(root, MANIFEST, rows, IMAGE_SCHEMA)


def _edit_instructions(root: Path, fn: Callable[[list[dict]], None]) -> None:
    rows = _rows(root, SHARDS)
    fn(rows)
    _rewrite(root, SHARDS, rows, INSTRUCTION_SCHEMA)


def _by_id(rows: list[dict], key: str, value: str) -> dict:
    return next(r for r in rows if r[key] == value)


def _set_turn(instr_id: str, turn: int, value: str):
    def fn(rows):
        _by_id(rows, "id", instr_id)["conversations"][turn]["value"] = value

    return lambda root: _edit_instructions(root, fn)


def _set_image(image_id: str, **fields):
    def fn(rows):
        _by_id(rows, "image_id", image_id).update(fields)

    return lambda root: _edit_manifest(root, fn)


def _set_box(image_id: str, kind: str, index: int, **coords):
    def fn(rows):
        _by_id(rows, "image_id", image_id)[kind][index].update(coords)

    return lambda root: _edit_manifest(root, fn)


# ---------------------------------------------------------------------------------------------
# defects: (inject(root), owning check, a field of the failing row and its value)
# ---------------------------------------------------------------------------------------------


def _wrong_type(root: Path) -> None:
    rows = _rows(root, MANIFEST)
    for r in rows:
        r["width"] = str(r["width"])
    schema = IMAGE_SCHEMA.set(IMAGE_SCHEMA.get_field_index("width"), pa.field("width", pa.string()))
    _rewrite(root, MANIFEST, rows, schema)


def _missing_file(root: Path) -> None:
    (root / _by_id(_rows(root, MANIFEST), "image_id", "P005_v1")["image_path"]).unlink()


def _corrupt_image(root: Path) -> None:
    path = root / _by_id(_rows(root, MANIFEST), "image_id", "P007_v0")["image_path"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a truncated PNG


def _patient_in_two_splits(root: Path) -> None:
    def fn(rows):
        assert _by_id(rows, "image_id", "P003_v1")["split"] == "train"
        _by_id(rows, "image_id", "P003_v1")["split"] = "val"

    _edit_manifest(root, fn)


def _external_in_train(root: Path) -> None:
    """An ingest bug that puts external patient E012 in train, propagated to every table."""

    def fn(rows):
        for r in rows:
            if r["patient_id"] == "E012":
                r["split"] = "train"

    _edit_manifest(root, fn)
    _edit_instructions(root, fn)
    patients = list(iter_parquet_rows(root / "manifest/patients.parquet"))
    fn(patients)
    pq.write_table(pa.Table.from_pylist(patients, schema=PATIENT_SCHEMA), root / "manifest/patients.parquet")


def _instruction_split_mismatch(root: Path) -> None:
    """Curation leaks: the instructions of val patient P001 are exported as train."""

    def fn(rows):
        for r in rows:
            if r["patient_id"] == "P001":
                r["split"] = "train"

    _edit_instructions(root, fn)


def _duplicate_hash(root: Path) -> None:
    rows = _rows(root, MANIFEST)
    a, b = _by_id(rows, "image_id", "P000_v0"), _by_id(rows, "image_id", "P001_v0")  # train, val
    assert (a["split"], b["split"]) == ("train", "val")
    shutil.copyfile(root / a["image_path"], root / b["image_path"])  # the same picture, stored twice
    b["image_sha256"] = a["image_sha256"]
    _rewrite(root, MANIFEST, rows, IMAGE_SCHEMA)


def _dominant_task(root: Path) -> None:
    def fn(rows):
        reports = [r for r in rows if r["task"] == "report"]
        rows += [{**reports[i % len(reports)], "id": f"extra-{i}"} for i in range(400)]

    _edit_instructions(root, fn)


DEFECTS = {
    # (a null patient_id would fail split_integrity as well: the image's patient cannot be placed)
    "null_field": (_set_image("P003_v1", body_part=None), "manifest_schema", ("image_id", "P003_v1")),
    "wrong_type": (_wrong_type, "manifest_schema", ("column", "width")),
    "unknown_modality": (
        _set_image("P004_v0", modality="hologram"),
        "manifest_schema",
        ("image_id", "P004_v0"),
    ),
    "unknown_task": (
        lambda root: _edit_instructions(
            root, lambda rows: _by_id(rows, "id", "P000_v1-2").update(task="poetry")
        ),
        "instruction_schema",
        ("id", "P000_v1-2"),
    ),
    "unknown_region": (
        _set_box("P001_v0", "regions", 0, name="spleen"),
        "manifest_schema",
        ("image_id", "P001_v0"),
    ),
    "box_outside_image": (
        _set_box("P002_v0", "regions", 1, x2=60.0),
        "manifest_boxes",
        ("image_id", "P002_v0"),
    ),
    "x1_not_below_x2": (
        _set_box("P002_v1", "lesions", 0, x1=39.0),
        "manifest_boxes",
        ("image_id", "P002_v1"),
    ),
    "missing_image_file": (_missing_file, "image_files", ("image_id", "P005_v1")),
    "corrupt_image": (_corrupt_image, "image_files", ("image_id", "P007_v0")),
    "patient_in_two_splits": (_patient_in_two_splits, "split_integrity", ("patient_id", "P003")),
    "external_patient_in_train": (_external_in_train, "split_integrity", ("patient_id", "E012")),
    "duplicate_hash_across_splits": (_duplicate_hash, "split_integrity", ("split", "val")),
    "instruction_split_mismatch": (_instruction_split_mismatch, "instruction_schema", ("patient_id", "P001")),
    "phi_name": (
        _set_turn("P000_v0-0", 1, "Mr. Hale has an adenocarcinoma."),
        "phi_free",
        ("id", "P000_v0-0"),
    ),
    "phi_mrn": (
        _set_turn("P001_v0-3", 0, "<image>\nMRN 0012345: any nodule?"),
        "phi_free",
        ("id", "P001_v0-3"),
    ),
    "phi_date": (
        _set_turn("P002_v0-4", 1, "Scanned on 2023-04-01; stable."),
        "phi_free",
        ("id", "P002_v0-4"),
    ),
    "empty_answer": (_set_turn("P003_v0-1", 1, "   "), "instruction_schema", ("id", "P003_v0-1")),
    "malformed_box_text": (
        _set_turn("P000_v1-1", 1, "<ref>left lung</ref><box>[[10, 20, 30]]</box>"),
        "instruction_schema",
        ("id", "P000_v1-1"),
    ),
    "dominant_task": (_dominant_task, "class_balance", ("task", "report")),
}


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_report(
    dq_clean_root: Path, tmp_path_factory: pytest.TempPathFactory, dq_params: dict
) -> QualityReport:
    return run_data_quality(dq_clean_root, gx_root=tmp_path_factory.mktemp("gx_clean") / "gx", **dq_params)


@pytest.fixture(scope="module")
def shared_gx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gx_defects") / "gx"


@pytest.fixture
def data_copy(dq_clean_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(dq_clean_root, dst)
    return dst


def _has_row(report: QualityReport, check: str, key: str, value: str) -> bool:
    return any(f["row"].get(key) == value for f in report.outcomes[check].failures)


# ---------------------------------------------------------------------------------------------
# clean data
# ---------------------------------------------------------------------------------------------


def test_clean_data_passes_every_check(clean_report: QualityReport) -> None:
    assert tuple(clean_report.outcomes) == check_names()
    assert len(check_names()) == 7
    for name, outcome in clean_report.outcomes.items():
        assert outcome.passed, outcome.to_markdown()
        assert outcome.n_failed == 0 and outcome.failures == []
        assert outcome.n_rows > 0 and outcome.expectations, name
        assert all(e["success"] for e in outcome.expectations)
    assert clean_report.outcomes["manifest_schema"].n_rows == 40
    assert clean_report.outcomes["instruction_schema"].n_rows == 200
    assert clean_report.outcomes["image_files"].n_rows == 40  # decode_sample 64 > 40 images: all


def test_clean_run_builds_data_docs(clean_report: QualityReport) -> None:
    index = clean_report.data_docs_index
    assert index is not None and index.name == "index.html" and index.is_file()
    html = index.read_text()
    assert "manifest_schema" in html and "phi_free" in html


def test_outcome_markdown_lists_expectations(clean_report: QualityReport) -> None:
    md = clean_report.outcomes["manifest_boxes"].to_markdown()
    assert md.startswith("**manifest_boxes**: PASSED")
    assert "expect_column_pair_values_a_to_be_greater_than_b" in md


def test_clean_text_with_clinical_lookalikes_is_phi_free(dq_clean_root: Path) -> None:
    texts = [t["value"] for r in _rows(dq_clean_root, SHARDS) for t in r["conversations"]]
    joined = "\n".join(texts)
    for lookalike in ("T2N1M0", "14 months", "Stage IV", "<box>[[", "patient's name"):
        assert lookalike in joined  # the clean corpus really contains them ...
    assert [t for t in texts if find_phi(t)] == []  # ... and none is flagged


# ---------------------------------------------------------------------------------------------
# defects (one check each)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_fails_its_check_and_names_the_row(
    defect: str, data_copy: Path, shared_gx: Path, dq_params: dict
) -> None:
    inject, check, (key, value) = DEFECTS[defect]
    inject(data_copy)
    report = run_data_quality(data_copy, gx_root=shared_gx, checks=[check], build_docs=False, **dq_params)
    outcome = report.outcomes[check]
    assert not outcome.passed and outcome.n_failed >= 1
    assert _has_row(report, check, key, value), outcome.to_markdown()
    assert all(f["reason"] for f in outcome.failures)


@pytest.mark.slow
@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_fails_exactly_its_check(
    defect: str, data_copy: Path, shared_gx: Path, dq_params: dict
) -> None:
    inject, check, _ = DEFECTS[defect]
    inject(data_copy)
    report = run_data_quality(data_copy, gx_root=shared_gx, build_docs=False, **dq_params)
    assert report.failed() == [check]


def test_failure_reasons_say_why(data_copy: Path, shared_gx: Path, dq_params: dict) -> None:
    DEFECTS["box_outside_image"][0](data_copy)
    _set_turn("P002_v0-4", 1, "Scanned on 2023-04-01; stable.")(data_copy)
    report = run_data_quality(
        data_copy, gx_root=shared_gx, checks=["manifest_boxes", "phi_free"], build_docs=False, **dq_params
    )
    (box,) = report.outcomes["manifest_boxes"].failures
    assert box["row"] == {"image_id": "P002_v0", "kind": "region", "index": 1, "name": "left lung"}
    assert "x2 <= width" in box["reason"] and "x2=60.0" in box["reason"]
    (date,) = report.outcomes["phi_free"].failures
    assert date["row"] == {"id": "P002_v0-4", "turn": 1, "from": "gpt"}
    assert "date '####-##-##'" in date["reason"]  # the shape of the match, never the PHI itself
    md = report.outcomes["phi_free"].to_markdown()
    assert "P002_v0-4" in md and "2023" not in md


def test_closed_answers_all_yes_fail_the_yes_share(data_copy: Path, shared_gx: Path, dq_params: dict) -> None:
    def fn(rows):
        for r in rows:
            if r["task"] == "vqa_closed":
                r["conversations"][1]["value"] = "Yes."

    _edit_instructions(data_copy, fn)
    report = run_data_quality(
        data_copy, gx_root=shared_gx, checks=["class_balance"], build_docs=False, **dq_params
    )
    outcome = report.outcomes["class_balance"]
    assert not outcome.passed
    assert [f["frame"] for f in outcome.failures] == ["closed_yes_share"]


# ---------------------------------------------------------------------------------------------
# errors and helpers
# ---------------------------------------------------------------------------------------------


def test_missing_manifest_raises_naming_the_path(data_copy: Path, shared_gx: Path, dq_params: dict) -> None:
    shutil.rmtree(data_copy / MANIFEST)
    with pytest.raises(FileNotFoundError, match="manifest/images"):
        run_data_quality(
            data_copy, gx_root=shared_gx, checks=["manifest_boxes"], build_docs=False, **dq_params
        )


def test_manifest_checks_run_before_curation(data_copy: Path, shared_gx: Path, dq_params: dict) -> None:
    """The image_manifest gate runs right after ingest: no check of it may need the shards."""
    shutil.rmtree(data_copy / "curated")
    manifest_checks = ["manifest_schema", "manifest_boxes", "image_files", "split_integrity"]
    report = run_data_quality(
        data_copy, gx_root=shared_gx, checks=manifest_checks, build_docs=False, **dq_params
    )
    assert report.passed and list(report.outcomes) == manifest_checks
    with pytest.raises(FileNotFoundError, match="curated/shards"):
        run_data_quality(data_copy, gx_root=shared_gx, checks=["phi_free"], build_docs=False, **dq_params)


def test_bad_arguments_raise(dq_clean_root: Path, shared_gx: Path, dq_params: dict) -> None:
    with pytest.raises(ValueError, match="unknown check"):
        run_data_quality(dq_clean_root, gx_root=shared_gx, checks=["no_such_check"], **dq_params)
    with pytest.raises(ValueError, match="closed_yes_share"):
        run_data_quality(dq_clean_root, gx_root=shared_gx, **{**dq_params, "closed_yes_share": (0.9, 0.1)})


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Hale reviewed it",
        "Patient name: withheld",
        "the patient John Smith",
        "Name: Jane Doe",
        "MRN 0012345",
        "medical record number: 12345",
        "account 12345678",
        "call 555-123-4567",
        "2023-04-01",
        "04/01/2023",
        "1 April 2023",
        "April 1, 2023",
        "seen in March 2021",
    ],
)
def test_phi_patterns_flag_phi(text: str) -> None:
    assert find_phi(text), text


@pytest.mark.parametrize(
    "text",
    [
        "T2N1M0",
        "14 months",
        "stage IV",
        "[[120, 340, 560, 780]]",
        "<ref>left lung</ref><box>[[120, 340, 560, 780]]</box>",
        "BP 120/80",
        "MS lesions in the white matter",
        "The patient has a 3 cm nodule",
        "Patient is a 64-year-old male",
        "What is the patient's name?",
        "Region name: left lung",
        "HbA1c 7.2%",
        "dose 1000 mg",
        "grade 2/3",
        "may 2020 cohort",
        "P000012_v0_ct",
    ],
)
def test_phi_patterns_spare_clinical_text(text: str) -> None:
    assert find_phi(text) == []


def test_flatten_list_indexes_elements_and_skips_null_lists() -> None:
    t = pa.table(
        {
            "image_id": ["a", "b", "c"],
            "regions": pa.array(
                [[{"name": "x"}, {"name": "y"}], None, [{"name": "z"}]],
                type=pa.list_(pa.struct([("name", pa.string())])),
            ),
        }
    )
    f = flatten_list(t, "regions", keep=["image_id"], fields=["name"])
    assert f.to_dict("list") == {"image_id": ["a", "a", "c"], "index": [0, 1, 0], "name": ["x", "y", "z"]}
