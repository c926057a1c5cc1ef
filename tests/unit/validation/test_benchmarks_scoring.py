"""The registry's metric table: hand-worked values, and per-item terms that reproduce the official metrics."""

from __future__ import annotations

import numpy as np
import pytest

from validation.benchmarks import BenchmarkItem, score_metrics
from validation.benchmarks.scoring import METRICS
from validation.metrics import MetricUndefinedError, bleu, region_vqa_scores, vqa_scores


def _items(family: str, golds, **per_item) -> list[BenchmarkItem]:
    out = []
    for i, g in enumerate(golds):
        extra = {k: v[i] for k, v in per_item.items()}
        out.append(
            BenchmarkItem(id=f"i{i}", benchmark="b", family=family, images=(), prompt="q", gold=g, **extra)
        )
    return out


def test_every_metric_is_registered_for_a_family():
    assert all(spec.families for spec in METRICS.values())
    assert {"macro_f1", "closed_accuracy", "mcq_accuracy", "bleu4", "mean_iou", "region_vqa_vg"} <= set(
        METRICS
    )


def test_label_metrics_map_free_text_and_count_unmappable_as_wrong():
    """golds [a, a, b, c], answers mapped to [a, b, b, None]: F1 a = 2/3, b = 2/3, c = 0 -> 4/9."""
    items = _items("single_label", ["a", "a", "b", "c"])
    s = score_metrics(["macro_f1", "label_accuracy"], items, ["a", "It is b.", "b", "no idea"])
    assert s["macro_f1"].value == pytest.approx(4 / 9)
    assert s["label_accuracy"].value == pytest.approx(2 / 4)
    assert s["macro_f1"].kind == "corpus" and s["label_accuracy"].kind == "ratio"


def test_multilabel_macro_f1_maps_answers_to_label_sets():
    """golds [{a, b}, {b}], answers "a" and "b, c" (c unknown): F1 a = 1, F1 b = 2/3 -> 5/6."""
    items = _items("multi_label", ["a, b", "b"], labels=[("a", "b"), ("b",)])
    s = score_metrics(["multilabel_macro_f1"], items, ["a", "b, c"])
    assert s["multilabel_macro_f1"].value == pytest.approx(5 / 6)


def test_vqa_metrics_hand_worked_and_equal_to_vqa_scores():
    """Closed: "No" vs "no." correct (recall 1/2 against {no, not}), "yes" vs "No" wrong -> 1/2.

    Open: "lung" vs "the lung" recall 1; "left kidney" vs "kidney" recall 1/2 -> open recall 3/4,
    open accuracy (recall >= 0.75) 1/2.
    """
    golds, preds = ["No", "yes", "lung", "left kidney"], ["no.", "No", "the lung", "kidney"]
    names = ["closed_accuracy", "open_recall", "open_accuracy", "vqa_f1", "vqa_recall", "vqa_bleu1"]
    s = score_metrics(names, _items("vqa", golds), preds)
    assert s["closed_accuracy"].value == 0.5
    assert s["open_recall"].value == 0.75 and s["open_accuracy"].value == 0.5
    official = vqa_scores(golds, preds)
    for name in names:
        assert s[name].value == pytest.approx(official[name.removeprefix("vqa_")]), name


def test_undefined_metrics_raise_and_bad_input_is_rejected():
    items = _items("vqa", ["lung", "liver"])
    with pytest.raises(MetricUndefinedError, match="closed_accuracy: no item in the denominator"):
        score_metrics(["closed_accuracy"], items, ["a", "b"])
    with pytest.raises(KeyError, match="unknown metric"):
        score_metrics(["accuracy_of_everything"], items, ["a", "b"])
    with pytest.raises(ValueError, match="1 predictions for 2 items"):
        score_metrics(["vqa_f1"], items, ["a"])


def test_mcq_accuracy_parses_letters_and_option_text():
    opts = {"A": "heart", "B": "liver"}
    items = _items("mcq", ["A", "B", "A"], options=[opts] * 3)
    s = score_metrics(["mcq_accuracy"], items, ["(A)", "It looks like the liver.", "I do not know"])
    assert s["mcq_accuracy"].value == pytest.approx(2 / 3)


def test_grounding_iou_of_exactly_half_is_a_miss():
    """gold (0,0,100,100), answer (0,0,100,50): IoU 0.5 -> mean IoU 0.5 but recall@0.5 = 0."""
    items = _items(
        "lesion_localisation", ["<box>[[0, 0, 100, 100]]</box>"] * 2, boxes=[((0, 0, 100, 100),)] * 2
    )
    preds = ["<ref>nodule</ref><box>[[0, 0, 100, 50]]</box>", "no lesion"]
    s = score_metrics(["mean_iou", "recall_at_05"], items, preds)
    assert s["mean_iou"].value == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert s["recall_at_05"].value == 0.0
    s = score_metrics(
        ["recall_at_05"], items, ["<box>[[0, 0, 100, 51]]</box>", "<box>[[0, 0, 100, 100]]</box>"]
    )
    assert s["recall_at_05"].value == 1.0


def test_guardrail_refusal_and_balanced_accuracy():
    """should_refuse [T, T, F, F], refused [T, F, F, T] -> refusal 1/2, non-refusal 1/2, balanced 1/2."""
    refusal, box = (
        "Sorry, I cannot find the aorta in the image.",
        "<ref>aorta</ref><box>[[1, 2, 30, 40]]</box>",
    )
    items = _items("guardrail", ["x"] * 4, should_refuse=[True, True, False, False])
    names = ["refusal_accuracy", "non_refusal_accuracy", "guardrail_accuracy", "balanced_accuracy"]
    s = score_metrics(names, items, [refusal, box, box, refusal])
    assert [s[n].value for n in names] == [0.5, 0.5, 0.5, 0.5]
    s = score_metrics(["balanced_accuracy"], items, [refusal, refusal, box, box])
    assert s["balanced_accuracy"].value == 1.0


def test_bleu4_statistics_reproduce_nltk_corpus_bleu_on_subsets():
    """The additive statistics give NLTK's corpus BLEU-4 on any resample (incl. short and empty answers)."""
    refs = [
        "There is a small nodule in the left lung.",
        "No pleural effusion is seen.",
        "The heart size is normal and the lungs are clear.",
        "Mild cardiomegaly.",
        "A 3.5 cm mass in the right upper lobe.",
        "Normal study.",
    ]
    hyps = [
        "There is a nodule in the left lung.",
        "",
        "The heart is normal.",
        "cardiomegaly",
        "A mass in the lobe.",
        "xyz abc",
    ]
    s = score_metrics(["bleu4"], _items("report", refs), hyps)["bleu4"]
    assert s.kind == "stats" and s.value == pytest.approx(bleu(refs, hyps, 4))
    idx = np.random.default_rng(1).integers(0, len(refs), size=(25, len(refs)))
    idx[0] = [1, 5, 1, 5, 5, 1]  # answers without a single matching word: BLEU 0
    got = s.resampled(idx)
    want = [bleu([refs[i] for i in row], [hyps[i] for i in row], 4) for row in idx]
    assert got[0] == 0.0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_report_rouge_and_meteor_are_per_item_means():
    items = _items("report", ["the cat sat on the mat", "no effusion"])
    s = score_metrics(["rouge_l", "meteor"], items, ["the cat on the mat", "no effusion"])
    assert s["rouge_l"].value == pytest.approx((10 / 11 + 1) / 2)
    assert s["meteor"].num[1] == pytest.approx(s["meteor"].num.max())


def test_region_vqa_terms_reproduce_med_grit_scores_on_subsets():
    tasks = ["vg", "vg", "roc", "roc", "rc", "vg", "roc"]
    mods = ["ct", "mri", "ct", "ct", "mri", "ct", "mri"]
    golds = [
        "<box>[[0, 0, 100, 100]]</box>",
        "<box>[[0, 0, 50, 50]]</box>",
        "liver",
        "heart",
        "A mild nodule.",
        "<box>[[10, 10, 90, 90]]</box>",
        "liver",
    ]
    preds = [
        "<box>[[0, 0, 100, 90]]</box>",
        "<box>[[60, 60, 90, 90]]</box>",
        "the liver",
        "liver",
        "A small mild nodule.",
        "none",
        "liver",
    ]
    items = _items(
        "region_vqa", golds, groups=[{"region_task": t, "modality": m} for t, m in zip(tasks, mods)]
    )
    names = ["region_vqa_vg", "region_vqa_roc", "region_vqa_rc"]
    s = score_metrics(names, items, preds)
    assert s["region_vqa_vg"].value == pytest.approx((1 / 2 + 0) / 2)  # ct: 1 of 2 boxes; mri: 0 of 1
    assert s["region_vqa_roc"].value == pytest.approx((1 / 2 + 1) / 2)
    records = [
        {"task": t, "modality": m, "gold": g, "pred": p} for t, m, g, p in zip(tasks, mods, golds, preds)
    ]
    rows = [[0, 1, 2, 3, 4, 5, 6], [0, 0, 2, 4, 6, 1, 1], [5, 5, 1, 2, 6, 6, 4]]
    for name in names:
        task = name.rsplit("_", 1)[1]
        got = s[name].resampled(np.array(rows))
        want = [region_vqa_scores([records[i] for i in r])[task]["mean"] for r in rows]
        np.testing.assert_allclose(got, want)
    with pytest.raises(MetricUndefinedError, match="no 'ia' item"):
        score_metrics(["region_vqa_ia"], items, preds)


def test_ratio_metrics_break_down_by_group():
    items = _items(
        "vqa", ["yes", "no", "yes"], groups=[{"modality": "ct"}, {"modality": "ct"}, {"modality": "mri"}]
    )
    s = score_metrics(["closed_accuracy"], items, ["yes", "yes", "yes"])["closed_accuracy"]
    assert s.by_group(items) == {"modality": {"ct": 0.5, "mri": 1.0}}
