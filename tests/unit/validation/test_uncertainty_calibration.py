"""Tests of validation.uncertainty.calibration: AUROC, PRR and reliability levels by hand."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.metrics import roc_auc_score

from validation.metrics import MetricUndefinedError
from validation.uncertainty import (
    ReliabilityThresholds,
    assign_level,
    auroc,
    calibrate_levels,
    level_error_rates,
    prediction_rejection_ratio,
    rejection_curve,
)


def test_auroc_by_hand_and_against_sklearn():
    """[1, 0, 1, 0] / [0.9, 0.8, 0.3, 0.1]: 3 of 4 (pos, neg) pairs ordered -> 0.75; a tie counts 1/2."""
    assert auroc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == 0.75
    assert auroc([True, False], [0.5, 0.5]) == 0.5
    rng = random.Random(0)
    labels = [rng.random() < 0.4 for _ in range(60)]
    scores = [round(rng.random(), 1) for _ in range(60)]  # many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_auroc_undefined():
    with pytest.raises(MetricUndefinedError, match="both classes"):
        auroc([1, 1], [0.1, 0.2])
    with pytest.raises(MetricUndefinedError):
        auroc([], [])
    with pytest.raises(ValueError, match="finite"):
        auroc([1, 0], [math.nan, 0.1])


def test_rejection_curves_by_hand():
    """wrong [1, 1, 0, 0], u [0.9, 0.1, 0.5, 0.2]: reject order 0 (w), 2, 3, 1 (w).

    kept wrong 2, 1, 1, 1, 0 -> e = (.5, .25, .25, .25, 0), area (.375 + .25 + .25 + .125) / 4 = 0.25;
    random e = (.5, .375, .25, .125, 0), area 0.25; oracle e = (.5, .25, 0, 0, 0), area 0.125;
    PRR = (0.25 - 0.25) / (0.125 - 0.25) = 0.
    """
    wrong, u = [1, 1, 0, 0], [0.9, 0.1, 0.5, 0.2]
    assert rejection_curve(wrong, u) == pytest.approx([0.5, 0.25, 0.25, 0.25, 0.0])
    assert rejection_curve(wrong, [0, 0, 0, 0]) == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0])
    assert prediction_rejection_ratio(wrong, u) == pytest.approx(0.0)


def test_prr_extremes():
    """wrong [1, 0, 0, 0]: ranked first -> 1; ranked last -> area .21875 vs random .125, oracle .03125 -> -1."""
    assert prediction_rejection_ratio([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert prediction_rejection_ratio([1, 0, 0, 0], [0.1, 0.9, 0.8, 0.7]) == pytest.approx(-1.0)
    assert prediction_rejection_ratio([1, 0, 1, 0], [1, 1, 1, 1]) == pytest.approx(0.0)  # ties = random


def test_prr_undefined():
    with pytest.raises(MetricUndefinedError, match="both right and wrong"):
        prediction_rejection_ratio([0, 0], [0.1, 0.2])
    with pytest.raises(MetricUndefinedError):
        prediction_rejection_ratio([1, 1], [0.1, 0.2])


def test_calibrate_levels_worked_example():
    """u 0.1..0.6, wrong [0, 0, 1, 0, 1, 1], targets 0 / 0.5.

    high: prefixes 0/1, 0/2 ok, 1/3 not -> 0.2 (later prefixes 1/4, 2/5, 3/6 all > 0);
    medium over u > 0.2: 1/1, 1/2 ok, 2/3, 3/4 -> 0.4.
    """
    u, wrong = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 1, 0, 1, 1]
    t = calibrate_levels(u, wrong, target_high=0.0, target_medium=0.5)
    assert (t.high, t.medium) == (0.2, 0.4)
    assert [assign_level(v, t) for v in (0.05, 0.2, 0.3, 0.4, 0.45, 9.0)] == [
        "high", "high", "medium", "medium", "low", "low",
    ]  # fmt: skip
    assert level_error_rates(u, wrong, t) == {
        "high": {"n": 2, "error_rate": 0.0},
        "medium": {"n": 2, "error_rate": 0.5},
        "low": {"n": 2, "error_rate": 1.0},
    }


def test_calibrate_levels_ties_and_empty_levels():
    # the first value is already too wrong: no high level; ties are never split
    t = calibrate_levels([0.1, 0.1, 0.5], [1, 0, 0], target_high=0.2, target_medium=0.5)
    assert t.high == -math.inf and t.medium == 0.5
    assert assign_level(0.0, t) == "medium"
    rates = level_error_rates([0.1, 0.1, 0.5], [1, 0, 0], t)
    assert rates["high"] == {"n": 0, "error_rate": None}
    assert rates["medium"] == {"n": 3, "error_rate": pytest.approx(1 / 3)}


def test_calibrate_levels_errors():
    with pytest.raises(ValueError, match="target_high <= target_medium"):
        calibrate_levels([0.1], [0], target_high=0.5, target_medium=0.1)
    with pytest.raises(MetricUndefinedError):
        calibrate_levels([], [], target_high=0.1, target_medium=0.2)
    with pytest.raises(ValueError, match="finite"):
        assign_level(math.nan, ReliabilityThresholds(0.1, 0.2, 0.0, 0.1))
