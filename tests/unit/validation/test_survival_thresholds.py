"""Risk thresholds: Youden's J and median rules, frozen and applied unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from validation.survival import HIGH_RISK, LOW_RISK, choose_threshold


def test_youden_hand_worked():
    """Labels (0, 0, 1, 1, 1), scores (0.1, 0.6, 0.5, 0.8, 0.9).

    cut 0.9: TPR 1/3, FPR 0 -> J 1/3;  cut 0.8: 2/3, 0 -> 2/3;  cut 0.6: 2/3, 1/2 -> 1/6;
    cut 0.5: 1, 1/2 -> 1/2;  cut 0.1: 1, 1 -> 0.  Best: 0.8 with J = 2/3.
    """
    th = choose_threshold([0, 0, 1, 1, 1], [0.1, 0.6, 0.5, 0.8, 0.9])
    assert th.value == pytest.approx(0.8) and th.youden_j == pytest.approx(2 / 3)
    assert th.method == "youden" and th.n_fit == 5


def test_median_rule_and_frozen_application():
    th = choose_threshold([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8], method="median")
    assert th.value == pytest.approx(0.5) and th.youden_j is None
    external = np.array([0.1, 0.5, 0.55, 0.9])
    assert th.predict(external).tolist() == [0, 1, 1, 1]  # score >= cut -> predicted event-free
    assert th.apply(external).tolist() == [HIGH_RISK, LOW_RISK, LOW_RISK, LOW_RISK]
    assert th.accuracy([0, 0, 1, 1], external) == pytest.approx(0.75)
    with pytest.raises(dataclasses.FrozenInstanceError):
        th.value = 0.3  # type: ignore[misc]
    with pytest.raises(ValueError, match="youden' or 'median"):
        choose_threshold([0, 1], [0.2, 0.4], method="mean")
