"""Tests of validation.metrics.vqa: the VQAv2 cleaner and MultiMedEval's scores, worked by hand."""

from __future__ import annotations

import math

import pytest

from validation.metrics import MetricUndefinedError, vqa_bleu1, vqa_clean, vqa_item_score, vqa_scores


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Yes", "yes"),
        ("No.", "no"),  # period not followed by a digit is deleted
        (
            "The answer: Two, dont know.",
            "answer: 2 don't know",
        ),  # colon kept, ', ' deleted, article, number, contraction
        ("An X-ray of the chest", "x ray of chest"),  # '-' between letters -> space; articles dropped
        ("left/right", "left right"),
        ("1,000 cells", "1000 cells"),  # digit-comma-digit: every punctuation mark is deleted
        ("3.5 cm.", "3.5 cm"),  # period inside a number kept
        ("None", "0"),
        ("Is it?  yes !", "is it yes"),  # ' !' touches a space -> deleted; '?' before a space -> deleted
        ("it's", "it's"),  # apostrophe kept
    ],
)
def test_vqa_clean(raw, clean):
    assert vqa_clean(raw) == clean


def test_vqa_clean_strips_at_most_32_periods_like_the_reference():
    text = " ".join(["x."] * 40)
    assert vqa_clean(text).split() == ["x"] * 32 + ["x."] * 8


def test_bleu1_by_hand():
    # pred longer than gold: BP 1, precision 2/3
    assert vqa_bleu1("left lung lobe", "left lung") == pytest.approx(2 / 3)
    # pred shorter: BP exp(1 - 3/2), precision 1
    assert vqa_bleu1("upper lobe", "right upper lobe") == pytest.approx(math.exp(-0.5))
    # equal length: BP exp(0) = 1; clipped counts: "no no" vs "no": 1 match of 2
    assert vqa_bleu1("no no", "no yes") == pytest.approx(0.5)
    assert vqa_bleu1("", "yes") == 0.0
    assert vqa_bleu1("maybe", "yes") == 0.0


def test_closed_no_gets_not():
    """Gold 'no', pred 'There is not any nodule': plain recall 0 ({no} vs P), but for the closed
    decision G = {no, not}: |P & G| / |G| = 1/2 >= 0.4 -> correct."""
    s = vqa_item_score("no", "There is not any nodule")
    assert s.closed and s.recall == 0.0 and s.correct
    # gold 'No', pred 'no.': G = P = {no}; closed G {no, not} -> 1/2 -> correct
    s = vqa_item_score("No", "no.")
    assert (s.precision, s.recall, s.bleu1, s.closed, s.correct) == (1.0, 1.0, 1.0, True, True)
    assert s.f1 == pytest.approx(2 / (2 + 1e-8))
    # gold 'yes' does not get the extra token: 'not' alone is wrong
    assert not vqa_item_score("yes", "not").correct


def test_open_recall_thresholds():
    """Open gold with 4 tokens: 3 recalled = 0.75 -> correct (>=); 2 recalled = 0.5 -> wrong."""
    assert vqa_item_score("left upper lung lobe", "left upper lung").correct
    assert not vqa_item_score("left upper lung lobe", "left upper").correct
    assert not vqa_item_score("left upper lung lobe", "left upper").closed


def test_vqa_scores_worked_example():
    """Five items (cleaned gold / cleaned pred):

    1 no / no                          closed: recall 1, F1 ~1, BLEU 1, correct ({no, not}: 1/2)
    2 yes / no there is no nodule      closed: recall 0, F1 0, BLEU 0, wrong
    3 no / there is not any nodule     closed: recall 0, F1 0, BLEU 0, correct ({no, not}: 1/2)
    4 left lung / left lung lobe       open: p 2/3, r 1, F1 0.8, BLEU 2/3, correct
    5 right upper lobe / upper lobe    open: p 1, r 2/3, F1 0.8, BLEU exp(-0.5), wrong (< 0.75)
    """
    golds = ["No", "yes", "no", "left lung", "right upper lobe"]
    preds = ["no.", "No, there is no nodule.", "There is not any nodule", "The left lung lobe", "upper lobe"]
    out = vqa_scores(golds, preds)
    assert set(out) == {"bleu1", "f1", "recall", "closed_accuracy", "open_recall", "open_accuracy"}
    assert out["bleu1"] == pytest.approx((1 + 0 + 0 + 2 / 3 + math.exp(-0.5)) / 5)
    assert out["f1"] == pytest.approx((1 + 0 + 0 + 0.8 + 0.8) / 5, abs=1e-7)
    assert out["recall"] == pytest.approx((1 + 0 + 0 + 1 + 2 / 3) / 5)
    assert out["closed_accuracy"] == pytest.approx(2 / 3)
    assert out["open_recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["open_accuracy"] == 0.5


def test_undefined_keys_are_left_out():
    closed_only = vqa_scores(["yes", "no"], ["yes", "yes"])
    assert set(closed_only) == {"bleu1", "f1", "recall", "closed_accuracy"}
    assert closed_only["closed_accuracy"] == 0.5
    open_only = vqa_scores(["left lung"], ["left lung"])
    assert set(open_only) == {"bleu1", "f1", "recall", "open_recall", "open_accuracy"}


def test_errors():
    with pytest.raises(MetricUndefinedError):
        vqa_scores([], [])
    with pytest.raises(ValueError, match="item 1"):
        vqa_scores(["yes", "the"], ["yes", "x"])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        vqa_scores(["yes"], ["yes", "no"])
