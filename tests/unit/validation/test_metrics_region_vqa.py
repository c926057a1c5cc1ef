"""Tests of validation.metrics.region_vqa: Med-GRIT-style scores, per modality then across modalities."""

from __future__ import annotations

import pytest

from validation.metrics import (
    MetricUndefinedError,
    caption_score,
    meteor,
    region_vqa_scores,
    rouge_l,
    sentence_bleu,
)


def test_caption_score_is_mean_of_three():
    ref, hyp = "small nodule in the left lung", "a nodule in the left lung"
    expected = (sentence_bleu(ref, hyp, 2) + meteor([ref], [hyp]) + rouge_l([ref], [hyp])) / 3
    assert caption_score(ref, hyp) == pytest.approx(expected)
    assert caption_score(ref, ref) == pytest.approx((1 + meteor([ref], [ref]) + 1) / 3)


def test_region_vqa_modality_macro_average():
    """vg ct: 2 items, both boxes found (recall 1); vg mri: 1 item, IoU 0.5 -> miss (recall 0).

    The vg mean is (1 + 0) / 2 = 0.5, not the pooled 2/3. roc: labels {heart, liver};
    ct: 'the heart' right, 'no idea' wrong -> 0.5; mri: 'Liver.' right -> 1.0 -> mean 0.75.
    """
    records = [
        {"task": "vg", "modality": "ct", "gold": [(0, 0, 10, 10)], "pred": [(0, 0, 10, 10)]},
        {
            "task": "vg",
            "modality": "ct",
            "gold": "<box>[[0, 0, 100, 100]]</box>",
            "pred": "<ref>x</ref><box>[[0, 0, 100, 90]]</box>",
        },
        {"task": "vg", "modality": "mri", "gold": [(0, 0, 10, 10)], "pred": [(0, 0, 10, 5)]},
        {"task": "roc", "modality": "ct", "gold": "heart", "pred": "It is the heart"},
        {"task": "roc", "modality": "ct", "gold": "liver", "pred": "no idea"},
        {"task": "roc", "modality": "mri", "gold": "liver", "pred": "Liver."},
        {"task": "ia", "modality": "ct", "gold": "a b c d", "pred": "a b c d"},
        {"task": "rc", "modality": "xray", "gold": "a b c d", "pred": None},
    ]
    out = region_vqa_scores(records)
    assert out["vg"] == {"per_modality": {"ct": 1.0, "mri": 0.0}, "mean": 0.5}
    assert out["roc"] == {"per_modality": {"ct": 0.5, "mri": 1.0}, "mean": 0.75}
    assert out["ia"]["mean"] == pytest.approx(caption_score("a b c d", "a b c d"))
    assert out["rc"] == {"per_modality": {"xray": 0.0}, "mean": 0.0}


def test_region_vqa_errors():
    with pytest.raises(MetricUndefinedError):
        region_vqa_scores([])
    with pytest.raises(ValueError, match="lacks"):
        region_vqa_scores([{"task": "vg", "modality": "ct", "gold": []}])
    with pytest.raises(ValueError, match="unknown|known"):
        region_vqa_scores([{"task": "x", "modality": "ct", "gold": 1, "pred": 1}])
    with pytest.raises(MetricUndefinedError, match="no gold box"):
        region_vqa_scores([{"task": "vg", "modality": "ct", "gold": [], "pred": None}])
    with pytest.raises(ValueError, match="gold of record 0"):
        region_vqa_scores(
            [{"task": "vg", "modality": "ct", "gold": "<box>[[5, 5, 1, 1]]</box>", "pred": None}]
        )
