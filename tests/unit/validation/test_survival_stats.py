"""AUC, the vectorised stratified bootstrap and the paired DeLong test: hand-worked and loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from validation.survival import StatisticUndefinedError, auc, auc_bootstrap, auc_ci, delong_test
from validation.survival.stats import _resampled_aucs, stratified_indices


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + 0.6 * y, 1)  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-14)


def test_vectorised_resamples_equal_a_python_loop():
    """The index-matrix AUCs equal sklearn's AUC of each explicitly resampled data set."""
    rng = np.random.default_rng(2)
    cases, controls = np.round(rng.normal(0.5, 1, 37), 1), np.round(rng.normal(0, 1, 53), 1)
    case_idx, control_idx = stratified_indices(cases.size, controls.size, 40, np.random.default_rng(3))
    fast = _resampled_aucs(cases, controls, case_idx, control_idx)
    y = np.r_[np.ones(cases.size), np.zeros(controls.size)]
    loop = [roc_auc_score(y, np.r_[cases[case_idx[b]], controls[control_idx[b]]]) for b in range(40)]
    np.testing.assert_allclose(fast, loop, atol=1e-12)
    # every resample keeps the observed class sizes (stratified)
    assert case_idx.shape == (40, 37) and control_idx.shape == (40, 53)


def test_bootstrap_distribution_hand_worked():
    """Cases {0.9, 0.4}, controls {0.6, 0.1}: each class resampled with replacement (4 x 4 draws).

    AUC = 1 iff every drawn case beats every drawn control:
    cases {0.9, 0.9} (1/4): always;  cases mixed (1/2): 0.4 needs controls {0.1, 0.1} (1/4);
    cases {0.4, 0.4} (1/4): controls {0.1, 0.1} (1/4).  P = 1/4 + 1/8 + 1/16 = 7/16.
    E[AUC] = (mean over case draws of P(case > control)) = mean(1, 0.5) = 0.75 (linearity).
    """
    boots = auc_bootstrap([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], n_boot=40_000, seed=7)
    assert np.mean(boots == 1.0) == pytest.approx(7 / 16, abs=0.01)
    assert boots.mean() == pytest.approx(0.75, abs=0.005)


def test_auc_ci_reproducible_chunked_and_sane():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    a = auc_ci(y, s, n_boot=500, seed=11)
    assert a == auc_ci(y, s, n_boot=500, seed=11)
    assert a[1] < a[0] < a[2]
    # the memory bound changes the chunking, not the resamples (one resample per chunk here)
    np.testing.assert_array_equal(
        auc_bootstrap(y, s, n_boot=300, seed=11, max_elements=1), auc_bootstrap(y, s, n_boot=300, seed=11)
    )
    # the percentile CI of a known-normal AUC roughly matches the DeLong/Hanley standard error
    m, n = int(y.sum()), int((1 - y).sum())
    q1, q2 = a[0] / (2 - a[0]), 2 * a[0] ** 2 / (1 + a[0])
    se = math.sqrt((a[0] * (1 - a[0]) + (m - 1) * (q1 - a[0] ** 2) + (n - 1) * (q2 - a[0] ** 2)) / (m * n))
    assert (a[2] - a[1]) / (2 * 1.96) == pytest.approx(se, rel=0.2)


def test_delong_hand_worked():
    """m = 3 cases, n = 2 controls; psi(x, y) = 1 if x > y, 1/2 if equal, else 0.

    Model A: cases (0.9, 0.6, 0.4), controls (0.6, 0.2)
        V10 (per case)    = (1, 0.75, 0.5)      V01 (per control) = (0.5, 1)      AUC_A = 0.75
    Model B: cases (0.5, 0.8, 0.3), controls (0.4, 0.6)
        V10               = (0.5, 1, 0)         V01               = (2/3, 1/3)    AUC_B = 0.5
    Sample covariances (ddof = 1):
        S10: var_A = 1/16, var_B = 1/4, cov = 1/16
        S01: var_A = 1/8,  var_B = 1/18, cov = -1/12
    Var(A - B) = (1/16 + 1/4 - 2/16) / 3 + (1/8 + 1/18 + 2/12) / 2 = 1/16 + 25/144 = 17/72
    z = 0.25 / sqrt(17/72) = 0.51450..., p = 2 (1 - Phi(z)) = 0.60690...
    """
    labels = [1, 1, 1, 0, 0]
    a = [0.9, 0.6, 0.4, 0.6, 0.2]
    b = [0.5, 0.8, 0.3, 0.4, 0.6]
    var = (1 / 16 + 1 / 4 - 2 / 16) / 3 + (1 / 8 + 1 / 18 + 2 / 12) / 2
    assert var == pytest.approx(17 / 72)
    z_expected = 0.25 / math.sqrt(17 / 72)
    z, p = delong_test(labels, a, b)
    assert z == pytest.approx(z_expected, abs=1e-12)
    assert p == pytest.approx(2 * norm.sf(z_expected), abs=1e-12)
    assert z == pytest.approx(0.514496, abs=1e-6) and p == pytest.approx(0.606898, abs=1e-5)
    z_swapped, p_swapped = delong_test(labels, b, a)
    assert z_swapped == pytest.approx(-z) and p_swapped == pytest.approx(p)


def _delong_slow(y, a, b):
    """Textbook O(m n) DeLong (DeLong et al. 1988), independent of the midrank algorithm."""
    y = np.asarray(y)
    comps = []
    for s in (np.asarray(a), np.asarray(b)):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comps
    s10, s01 = np.cov(v10a, v10b), np.cov(v01a, v01b)
    m, n = v10a.size, v01a.size
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return (auc_a - auc_b) / math.sqrt(var)


def test_delong_matches_the_slow_definition_with_ties():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 150)
    a = np.round(rng.normal(size=150) + y, 1)
    b = np.round(a + rng.normal(scale=0.8, size=150), 1)
    z, _ = delong_test(y, a, b)
    assert z == pytest.approx(_delong_slow(y, a, b), rel=1e-10)


def test_delong_undefined_cases():
    with pytest.raises(StatisticUndefinedError, match="identically"):
        delong_test([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1], [9, 8, 2, 1])  # same ranking
    with pytest.raises(StatisticUndefinedError, match="1 case"):
        delong_test([1, 0, 0], [0.9, 0.8, 0.2], [0.1, 0.5, 0.3])
