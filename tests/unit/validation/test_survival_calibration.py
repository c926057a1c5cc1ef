"""C-index, IPCW Brier score and binned calibration: hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from validation.survival import (
    StatisticUndefinedError,
    brier_at_landmark,
    c_index,
    calibration_curve,
    landmark_labels,
)


def test_c_index_hand_worked():
    """T = (1, 2, 3, 4), events (1, 1, 0, 1), scores (0.1, 0.4, 0.3, 0.9).

    Comparable pairs (earlier time has an event): (1,2) (1,3) (1,4) (2,3) (2,4) -> 5 pairs.
    Concordant (earlier time, lower score): all but (2,3) (0.4 > 0.3) -> C = 4/5.
    """
    assert c_index([1, 2, 3, 4], [1, 1, 0, 1], [0.1, 0.4, 0.3, 0.9]) == pytest.approx(0.8)
    assert c_index([1, 2, 3, 4], [1, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(StatisticUndefinedError, match="no event"):
        c_index([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3])


def test_brier_without_censoring_is_the_mean_squared_error():
    """No censoring: G = 1, labels at landmark 2.5 are (0, 0, 1, 1, 1)."""
    p = np.array([0.2, 0.4, 0.7, 0.9, 0.5])
    expected = np.mean((np.array([0, 0, 1, 1, 1]) - p) ** 2)
    assert brier_at_landmark([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], p, 2.5) == pytest.approx(expected)


def test_brier_equals_the_ipcw_weighted_error():
    """sksurv's Brier score equals sum_i w_i (label_i - p_i)^2 / n with our IPCW weights."""
    rng = np.random.default_rng(0)
    t_event, t_cens = rng.exponential(10, 150), rng.exponential(15, 150)
    t, e = np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)
    p = rng.uniform(size=150)
    lab = landmark_labels(t, e, 8.0, method="ipcw")
    inc = lab.included
    expected = np.sum(lab.weights[inc] * (lab.labels[inc] - p[inc]) ** 2) / t.size
    assert brier_at_landmark(t, e, p, 8.0) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(StatisticUndefinedError, match="outside the follow-up"):
        brier_at_landmark(t, e, p, float(t.max()) + 1)


def test_calibration_curve_hand_worked():
    """Quantile edges of (0.1, 0.2, 0.3, 0.6, 0.7, 0.8) with 2 bins: 0.1 | 0.45 | 0.8.

    Bin 1: predictions (0.1, 0.2, 0.3) mean 0.2, labels (0, 0, 1) -> 1/3;
    bin 2: predictions (0.6, 0.7, 0.8) mean 0.7, labels (1, 1, 0) -> 2/3.
    """
    c = calibration_curve([0, 0, 1, 1, 1, 0], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8], n_bins=2)
    np.testing.assert_allclose(c.edges, [0.1, 0.45, 0.8])
    np.testing.assert_allclose(c.mean_predicted, [0.2, 0.7])
    np.testing.assert_allclose(c.observed, [1 / 3, 2 / 3])
    assert c.counts.tolist() == [3, 3]
    u = calibration_curve([0, 1, 1], [0.05, 0.95, 0.9], n_bins=4, strategy="uniform")
    assert u.counts.tolist() == [1, 2] and u.observed.tolist() == [0.0, 1.0]  # empty bins dropped
