"""The demo mirror: held-out curated rows of every family become benchmark items of the shipped registry."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from model.data.boxes import format_ref_boxes
from model.data.io import ShardedParquetWriter
from model.data.schema import INSTRUCTION_SCHEMA
from validation.benchmarks import MajorityPredictor, load_items, load_registry, run_suite

MODS = ["ct", "mri", "xray"]


def _row(i: int, task: str, split: str, q: str, a: str, target: dict, suffix: str = "") -> dict:
    return {
        "id": f"P{i:03d}:{task}{suffix}",
        "task": task,
        "images": [f"raw/images/P{i:03d}.png"],
        "image_ids": [f"P{i:03d}"],
        "width": 64,
        "height": 64,
        "conversations": [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}],
        "patient_id": f"P{i:03d}",
        "split": split,
        "site": "hospital_a",
        "site_role": "internal",
        "modality": MODS[i % 3],
        "source": "synthetic",
        "template_id": 0,
        "target": json.dumps(target),
    }


def _rows(i: int, split: str) -> list[dict]:
    m, box = MODS[i % 3], [100 + 10 * i, 200, 400, 600]
    yes = "Yes" if i % 2 else "No"
    labels = ["nodule", "effusion"] if i % 2 else ["normal"]
    opts = ["CT", "MRI", "X-ray", "ultrasound"]
    report = f"Findings: There is a nodule in the left lung.{' Small pleural effusion.' if i % 2 else ''}"
    return [
        _row(i, "single_label", split, "Modality?", m.upper(), {"kind": "modality", "label": m}, ":m"),
        _row(
            i,
            "single_label",
            split,
            "Diagnosis?",
            "glioma" if i % 2 else "normal",
            {"kind": "diagnosis"},
            ":d",
        ),
        _row(i, "multi_label", split, "Findings?", ", ".join(labels), {"labels": labels}),
        _row(i, "vqa_closed", split, "Nodule?", yes, {"answer": yes.lower(), "answer_type": "closed"}),
        _row(i, "vqa_open", split, "Organ?", "lung", {"answer": "lung", "answer_type": "open"}),
        _row(
            i, "mcq", split, "Modality?\nA. CT\nB. MRI", "AB"[i % 2], {"answer": "AB"[i % 2], "options": opts}
        ),
        _row(i, "report", split, "Report?", report, {}),
        _row(
            i, "region_recognition", split, "What is in <box>?", ["liver", "heart"][i % 2], {"label": "liver"}
        ),
        _row(
            i,
            "region_detection",
            split,
            "Detect the liver.",
            format_ref_boxes("liver", [box]),
            {"boxes": [box]},
        ),
        _row(
            i, "lesion_detection", split, "Find nodules.", format_ref_boxes("nodule", [box]), {"boxes": [box]}
        ),
        _row(
            i,
            "region_vqa",
            split,
            "Is <box> abnormal?",
            yes,
            {"kind": "presence", "answer": yes.lower()},
            ":p",
        ),
        _row(
            i, "region_vqa", split, "What lesion in <box>?", "A mild nodule.", {"kind": "abnormality"}, ":a"
        ),
        _row(i, "guardrail", split, "Locate the aorta.", "Sorry, I cannot find the aorta in the image.", {}),
    ]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    rows = [r for i in range(8) for r in _rows(i, "train")] + [
        r for i in range(8, 14) for r in _rows(i, "test")
    ]
    with ShardedParquetWriter(root / "curated" / "shards", INSTRUCTION_SCHEMA, rows_per_shard=500) as w:
        w.write_many(rows)
    return root


def _spec(name: str, limit: int | None = 4):
    return load_registry().specs[name].model_copy(update={"limit": limit})


def test_every_shipped_demo_entry_loads_items_of_its_family(data_root):
    for spec in load_registry().specs.values():
        items = load_items(spec.model_copy(update={"limit": 3}), data_root=data_root)
        assert items and {it.family for it in items} == {spec.family}, spec.name
        assert all(it.benchmark == spec.name and it.images[0].startswith(str(data_root)) for it in items)
        assert len({it.id for it in items}) == len(items)


def test_limit_is_per_task_family_and_guardrail_side(data_root):
    vqa = load_items(_spec("demo_vqa", 2), data_root=data_root)
    assert Counter(it.groups["answer_type"] for it in vqa) == {"closed": 2, "open": 2}
    guard = load_items(_spec("demo_guardrail", 3), data_root=data_root)
    assert Counter(it.should_refuse for it in guard) == {True: 3, False: 3}
    assert all(it.id.endswith(":present") for it in guard if not it.should_refuse)
    assert len(load_items(_spec("demo_mcq", None), data_root=data_root)) == 6  # every test row


def test_family_fields_of_demo_items(data_root):
    (mcq, *_) = load_items(_spec("demo_mcq"), data_root=data_root)
    assert mcq.options == {"A": "CT", "B": "MRI", "C": "X-ray", "D": "ultrasound"} and mcq.gold in "AB"
    multi = load_items(_spec("demo_multilabel"), data_root=data_root)
    assert {it.labels for it in multi} == {("nodule", "effusion"), ("normal",)}
    modality = load_items(_spec("demo_modality"), data_root=data_root)
    assert {it.gold for it in modality} <= {"CT", "MRI", "XRAY"} and {
        it.groups["kind"] for it in modality
    } == {"modality"}
    lesions = load_items(_spec("demo_lesion_localisation"), data_root=data_root)
    assert all(len(it.boxes) == 1 for it in lesions)
    region = load_items(_spec("demo_region_vqa", 2), data_root=data_root)
    tasks = Counter((it.groups["task_family"], it.groups["region_task"]) for it in region)
    assert tasks == {
        ("region_detection", "vg"): 2,
        ("region_recognition", "roc"): 2,
        ("region_vqa", "roc"): 2,  # presence questions
        ("region_vqa", "rc"): 2,  # abnormality captions
    }
    cxr = load_items(_spec("demo_report_cxr", None), data_root=data_root)
    assert {it.groups["modality"] for it in cxr} == {"xray"} and len(cxr) == 2


def test_majority_baseline_and_gold_answers_on_the_demo_mirror(data_root):
    specs = [_spec(n) for n in ("demo_vqa", "demo_mcq", "demo_guardrail", "demo_lesion_localisation")]
    majority = MajorityPredictor.from_curated(data_root / "curated" / "shards")

    class Gold:
        fingerprint = "gold"

        def predict(self, items):
            return [it.gold for it in items]

    suite = run_suite(
        specs, {"majority": majority, "gold": Gold()}, candidate="gold", data_root=data_root, n_boot=50
    )
    gold = suite.results["gold"]
    assert (
        gold["demo_vqa"].values["closed_accuracy"] == 1.0 and gold["demo_mcq"].values["mcq_accuracy"] == 1.0
    )
    assert gold["demo_lesion_localisation"].values["mean_iou"] == pytest.approx(1.0)
    maj = suite.results["majority"]
    assert maj["demo_guardrail"].values["balanced_accuracy"] == 0.5  # always refuses
    assert maj["demo_vqa"].values["open_recall"] == 1.0  # the only open answer is "lung"
    assert suite.differences["majority"]["demo_guardrail"]["balanced_accuracy"].value == 0.5
