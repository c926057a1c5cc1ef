"""Tests of validation.metrics.grounding: IoU by hand, the 0.5 boundary, recall@0.5 matching."""

from __future__ import annotations

import math

import pytest

from validation.metrics import (
    MetricUndefinedError,
    hit_rate,
    iou,
    match_boxes,
    mean_iou,
    recall_at_05,
    recall_at_iou,
    region_recognition_f1,
)


def test_iou_hand_values():
    """Areas by hand: a = 10x10 = 100."""
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # half overlap: inter 50, union 100 + 50 - 50 = 100
    assert iou((0, 0, 10, 10), (0, 0, 10, 5)) == 0.5
    # shifted by 5 in x: inter 5*10 = 50, union 100 + 100 - 50 = 150
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    # touching edges: inter 0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    # disjoint
    assert iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0
    # contained: inter 4, union 100
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(0.04)
    # symmetric
    assert iou((1, 2, 7, 9), (3, 1, 8, 5)) == iou((3, 1, 8, 5), (1, 2, 7, 9))


@pytest.mark.parametrize(
    "bad",
    [
        (10, 0, 0, 10),
        (0, 10, 10, 0),
        (0, 0, 0, 10),
        (0, 0, float("nan"), 10),
        (0, 0, math.inf, 1),
        (0, 0, 1),
        "abcd",
    ],
)
def test_iou_rejects_impossible_boxes_naming_them(bad):
    with pytest.raises(ValueError, match="box_b"):
        iou((0, 0, 10, 10), bad)


def test_exactly_half_is_a_miss():
    gold = [(0, 0, 10, 10)]
    assert hit_rate(gold, [(0, 0, 10, 5)]) == 0.0  # IoU 0.5 exactly
    assert hit_rate(gold, [(0, 0, 10, 5.1)]) == 1.0  # IoU 0.51
    assert recall_at_05([gold], [[(0, 0, 10, 5)]]) == 0.0
    assert match_boxes(gold, [(0, 0, 10, 5)]) == []


def test_mean_iou_missing_prediction_is_zero():
    golds = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)]
    preds = [(0, 0, 10, 10), (0, 0, 10, 5), None]
    assert mean_iou(golds, preds) == pytest.approx((1 + 0.5 + 0) / 3)
    assert hit_rate(golds, preds) == pytest.approx(1 / 3)


def test_mean_iou_errors():
    with pytest.raises(MetricUndefinedError):
        mean_iou([], [])
    with pytest.raises(ValueError, match="1 predictions for 2"):
        mean_iou([(0, 0, 1, 1)] * 2, [None])
    with pytest.raises(ValueError, match="item 1"):
        mean_iou([(0, 0, 1, 1), (0, 0, 1, 1)], [None, (3, 3, 1, 1)])


def test_recall_at_05_worked_example():
    """item 1: 1 of 2 gold boxes found; item 2: IoU exactly 0.5 -> miss; item 3: no gold box -> 1/3."""
    golds = [[(0, 0, 10, 10), (20, 20, 30, 30)], [(0, 0, 10, 10)], []]
    preds = [[(0, 0, 10, 10)], [(0, 0, 10, 5)], [(0, 0, 5, 5)]]
    assert recall_at_05(golds, preds) == pytest.approx(1 / 3)


def test_one_prediction_cannot_match_two_golds():
    """Two overlapping gold boxes, one predicted box with IoU > 0.5 against both: 1 of 2."""
    golds = [[(0, 0, 10, 10), (0, 0, 10, 9)]]
    preds = [[(0, 0, 10, 10)]]  # IoU 1.0 and 0.9
    assert recall_at_05(golds, preds) == 0.5
    assert match_boxes(golds[0], preds[0]) == [(0, 0, 1.0)]
    # with a second predicted box both are found
    assert recall_at_05(golds, [[(0, 0, 10, 10), (0, 0, 10, 9)]]) == 1.0


def test_recall_threshold_and_errors():
    golds, preds = [[(0, 0, 10, 10)]], [[(5, 0, 15, 10)]]  # IoU 1/3
    assert recall_at_iou(golds, preds, threshold=0.3) == 1.0
    assert recall_at_iou(golds, preds, threshold=0.5) == 0.0
    assert recall_at_05(golds, [None]) == 0.0
    with pytest.raises(MetricUndefinedError, match="no gold box"):
        recall_at_05([[], []], [[], []])
    with pytest.raises(ValueError, match="predicted box 0 of item 0"):
        recall_at_05(golds, [[(1, 1, 0, 0)]])


def test_region_recognition_f1():
    """golds [left lung, left lung, heart, liver]; mapped preds [left lung, heart, heart, None].

    F1(left lung) = 2*1/(2+0+1) = 2/3; F1(heart) = 2*1/(2+1+0) = 2/3; F1(liver) = 0 -> 4/9.
    """
    golds = ["left lung", "left lung", "heart", "liver"]
    answers = ["The left lung.", "It is the heart", "Heart.", "I am not sure."]
    assert region_recognition_f1(golds, answers) == pytest.approx(4 / 9)
    assert region_recognition_f1(golds, golds) == 1.0
