"""Task-family scoring of the learning table: gold answers score perfectly, constants do not."""

from __future__ import annotations

import json

import pytest

from model.data.boxes import format_ref_boxes
from model.data.io import ShardedParquetWriter
from model.data.schema import INSTRUCTION_SCHEMA
from validation.task_families import (
    FamilyItem,
    collect_items,
    majority_answers,
    majority_predictions,
    matched_mean_iou,
    score_all,
    score_family,
)

MODALITIES = ["ct", "mri", "xray"]


def _row(i: int, task: str, split: str, question: str, answer: str, target: dict) -> dict:
    return {
        "id": f"r{i}",
        "task": task,
        "images": ["img.png"],
        "image_ids": ["img"],
        "width": 64,
        "height": 64,
        "conversations": [
            {"from": "human", "value": "<image>\n" + question},
            {"from": "gpt", "value": answer},
        ],
        "patient_id": f"P{i}",
        "split": split,
        "site": "hospital_a",
        "site_role": "internal",
        "modality": "ct",
        "source": "synthetic",
        "template_id": 0,
        "target": json.dumps(target),
    }


def _family_rows(i: int, split: str) -> list[dict]:
    m = MODALITIES[i % 3]
    box = [100 + 20 * (i % 5), 200, 400 + 20 * (i % 5), 600]
    yes = "Yes" if i % 3 else "No"
    opts = ["CT", "MRI", "X-ray", "ultrasound"]
    return [
        _row(i, "single_label", split, "Which modality?", m, {"kind": "modality", "label": m}),
        _row(
            i,
            "multi_label",
            split,
            "Findings?",
            "nodule, effusion" if i % 2 else "nodule",
            {"labels": ["nodule", "effusion"] if i % 2 else ["nodule"]},
        ),
        _row(i, "vqa_closed", split, "Is there a nodule?", yes, {"answer": yes.lower()}),
        _row(i, "vqa_open", split, "Which organ?", ["lung", "liver", "brain"][i % 3], {}),
        _row(
            i,
            "mcq",
            split,
            "Modality?\nA. CT\nB. MRI\nC. X-ray\nD. ultrasound",
            "ABC"[i % 3],
            {"answer": "ABC"[i % 3], "options": opts},
        ),
        _row(i, "report", split, "Report?", f"Findings: a {m} study with a nodule.", {}),
        _row(i, "region_recognition", split, "Which structure?", ["liver", "heart"][i % 2], {}),
        _row(
            i,
            "region_detection",
            split,
            "Mark the position of the liver with a box.",
            format_ref_boxes("liver", [box]),
            {},
        ),
        _row(i, "lesion_detection", split, "Detect all nodules.", format_ref_boxes("nodule", [box]), {}),
        _row(i, "region_vqa", split, "Is it abnormal?", yes, {}),
        _row(
            i,
            "guardrail",
            split,
            "Mark the position of the kidney with a box.",
            "Sorry, I cannot find the kidney in the image.",
            {"label": "absent"},
        ),
        _row(i, "prognosis", split, "Survives beyond 14 months?", yes, {}),
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf") / "shards"
    rows = [r for i in range(12) for r in _family_rows(i, "train")]
    rows += [r for i in range(12, 21) for r in _family_rows(i, "test")]
    with ShardedParquetWriter(out, INSTRUCTION_SCHEMA, rows_per_shard=500) as w:
        w.write_many(rows)
    return out


def test_gold_answers_score_perfectly(shards):
    items = collect_items(shards, split="test", per_family=50)
    scores = score_all(items, [it.gold for it in items])
    assert set(scores) == {
        "modality", "multi_label", "vqa_closed", "vqa_open", "mcq", "report", "region_recognition",
        "region_detection", "lesion_localisation", "region_vqa", "guardrail", "prognosis",
    }  # fmt: skip
    for fam, metrics in scores.items():
        for name, value in metrics.items():
            if fam == "guardrail" and name == "balanced_accuracy":
                continue  # gold answers of present prompts are boxes: not refusals, so also 1.0
            assert value == pytest.approx(1.0), (fam, name)
    assert scores["guardrail"]["balanced_accuracy"] == pytest.approx(1.0)


def test_majority_baseline_is_the_constant_answer(shards):
    majority = majority_answers(shards)
    assert majority["guardrail"].startswith("Sorry")
    # mean of the 12 training boxes: x1 = 100 + 20 * mean(i % 5 for i < 12) = 100 + 20 * 21 / 12 = 135
    assert majority["lesion_localisation"] == format_ref_boxes("lesion", [[135, 200, 435, 600]])
    items = collect_items(shards, split="test", per_family=50)
    scores = score_all(items, majority_predictions(items, majority))
    # refusing everything: every absent prompt right, every present prompt wrong
    assert scores["guardrail"]["refusal_accuracy"] == 1.0
    assert scores["guardrail"]["balanced_accuracy"] == pytest.approx(0.5)
    assert 0.5 < scores["lesion_localisation"]["mean_iou"] < 1.0
    assert scores["modality"]["macro_f1"] < 0.5
    # one constant yes/no answer: right on one label only, whatever the label shares
    assert scores["prognosis"]["balanced_accuracy"] == pytest.approx(0.5)
    assert scores["prognosis"]["accuracy"] > 0.5  # 6 of the 9 test answers are "Yes", the majority


def _item(family: str, gold: str, target: dict) -> FamilyItem:
    return FamilyItem(family, {}, gold, target)


def test_region_vqa_scores_presence_by_answer_and_abnormality_by_lesion_type():
    items = [
        _item("region_vqa", "No", {"kind": "presence", "answer": "no"}),
        _item("region_vqa", "Yes", {"kind": "presence", "answer": "yes"}),
        _item("region_vqa", "The box contains a mild nodule of 4 mm in the left lung.", {"kind": "abnormality", "label": "nodule"}),
        _item("region_vqa", "This region shows a mass.", {"kind": "abnormality", "label": "mass"}),
    ]  # fmt: skip
    answers = ["No.", "No", "This region shows a moderate nodule (6 mm).", "A nodule in the left lung."]
    s = score_family("region_vqa", items, answers)
    assert s == {"accuracy": 0.5, "presence_accuracy": 0.5, "abnormality_accuracy": 0.5}
    # the lesion type must be named as whole words: "masses" is not "mass"
    assert score_family("region_vqa", items[3:], ["Masses everywhere."])["accuracy"] == 0.0


def test_prognosis_balanced_accuracy_is_the_mean_recall_of_both_answers():
    items = [_item("prognosis", g, {}) for g in ["No", "No", "No", "Yes"]]
    s = score_family("prognosis", items, ["No", "No.", "Yes", "Yes, beyond 14 months."])
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert s["accuracy"] == 0.75


def test_matched_mean_iou_penalises_extra_and_missing_boxes():
    g = [(0, 0, 10, 10)]
    assert matched_mean_iou(g, [(0, 0, 10, 10)]) == 1.0
    assert matched_mean_iou(g, [(0, 0, 10, 10), (50, 50, 60, 60)]) == 0.5
    assert matched_mean_iou(g + [(50, 50, 60, 60)], [(0, 0, 10, 10)]) == 0.5
    assert matched_mean_iou(g, []) == 0.0
    with pytest.raises(ValueError, match="no gold box"):
        matched_mean_iou([], [(0, 0, 1, 1)])


def test_unknown_family_and_misaligned_answers_raise(shards):
    items = collect_items(shards, split="test", per_family=3)
    with pytest.raises(KeyError, match="unknown task family"):
        score_family("nope", items, ["x"] * len(items))
    with pytest.raises(ValueError, match="answers for"):
        score_all(items, ["x"])
    with pytest.raises(ValueError, match="no curated row of split"):
        collect_items(shards, split="external")


def test_table_shows_the_guardrail_balanced_accuracy_under_its_refusal_accuracy(tmp_path):
    from validation.task_families import write_table

    columns = {
        "majority": {
            "guardrail": {"refusal_accuracy": 1.0, "balanced_accuracy": 0.5},
            "mcq": {"accuracy": 0.26},
        },
        "sft": {
            "guardrail": {"refusal_accuracy": 0.994, "balanced_accuracy": 0.974},
            "mcq": {"accuracy": 0.53},
        },
    }
    lines = write_table(tmp_path / "t.md", columns, {"guardrail": 682, "mcq": 400}).read_text().splitlines()
    assert lines[2:] == [
        "| mcq | 400 | accuracy | 0.260 | 0.530 |",
        "| guardrail | 682 | refusal_accuracy | 1.000 | 0.994 |",
        "| guardrail | 682 | balanced_accuracy | 0.500 | 0.974 |",
    ]
    del columns["sft"]["guardrail"]["balanced_accuracy"]  # a system without it: headline row only
    lines = write_table(tmp_path / "t.md", columns, {"guardrail": 682, "mcq": 400}).read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("| guardrail")] == [
        "| guardrail | 682 | refusal_accuracy | 1.000 | 0.994 |"
    ]
