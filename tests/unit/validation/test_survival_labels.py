"""Landmark labels and IPCW weights, hand-worked and against Kaplan-Meier."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from model.data.curation import survival_label
from validation.survival import EXCLUDED, ipcw_weights, landmark_labels


def test_landmark_labels_hand_worked():
    """Landmark 14: 20/event -> 1 (beyond), 14/event -> 0 (at the landmark counts as before),
    10/censored -> excluded, 14/censored -> excluded, 30/censored -> 1, 2/event -> 0."""
    t = [20.0, 14.0, 10.0, 14.0, 30.0, 2.0]
    e = [1, 1, 0, 0, 0, 1]
    res = landmark_labels(t, e, 14.0)
    labels, included = res
    assert labels.tolist() == [1, 0, EXCLUDED, EXCLUDED, 1, 0]
    assert included.tolist() == [True, True, False, False, True, True]
    assert res.n_excluded == 2
    assert res.weights.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    expected = {"yes": 1, "no": 0, None: EXCLUDED}
    assert [expected[survival_label(a, b, 14.0)] for a, b in zip(t, e, strict=True)] == labels.tolist()


def test_ipcw_weights_hand_worked():
    """Times 1..6, censored at 2 and 4 (events at 1, 3, 5, 6); landmark 4.5.

    Censoring KM G: 1 until 2, then 1 - 1/5 = 0.8 (5 at risk at t=2), then at t=4 (3 at risk):
    0.8 * (1 - 1/3) = 8/15. Events before the landmark: t=1 -> 1/G(1) = 1; t=3 -> 1/G(3) = 1.25.
    Beyond the landmark (t=5, 6): 1/G(4.5) = 15/8. Censored before: 0.
    """
    w = ipcw_weights([1, 2, 3, 4, 5, 6], [1, 0, 1, 0, 1, 1], 4.5)
    np.testing.assert_allclose(w, [1.0, 0.0, 1.25, 0.0, 15 / 8, 15 / 8])
    res = landmark_labels([1, 2, 3, 4, 5, 6], [1, 0, 1, 0, 1, 1], 4.5, method="ipcw")
    np.testing.assert_allclose(res.weights, w)
    assert res.labels.tolist() == [0, EXCLUDED, 0, EXCLUDED, 1, 1]


def test_ipcw_weighted_mean_label_is_kaplan_meier_survival():
    rng = np.random.default_rng(0)
    t_event, t_cens = rng.exponential(10, 300), rng.exponential(15, 300)
    t = np.minimum(t_event, t_cens)  # continuous: no tied times
    e = (t_event <= t_cens).astype(int)
    res = landmark_labels(t, e, 8.0, method="ipcw")
    km = KaplanMeierFitter().fit(t, e).predict(8.0)
    assert np.sum(res.weights * (res.labels == 1)) / t.size == pytest.approx(km, abs=1e-12)
    assert res.weights.sum() == pytest.approx(t.size)
