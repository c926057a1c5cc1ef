"""Log-rank and Kaplan-Meier on the NCCTG lung data against R's `survival`, and a k-group check.

Reference (R 4.x, survival 3.x), on the same 228 patients::

    library(survival)
    survdiff(Surv(time, status) ~ sex, data = lung)  # Chisq = 10.3 on 1 df, p = 0.001
    survfit(Surv(time, status) ~ 1, data = lung)     # median 310
    survfit(Surv(time, status) ~ sex, data = lung)   # medians 270 (sex=1), 426 (sex=2)

R codes ``status`` 1 = censored, 2 = dead; lifelines' ``load_lung()`` ships it as 0/1 already
(165 deaths), which the first test checks before using it.
"""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.datasets import load_lung

from validation.survival import StatisticUndefinedError, km_median, logrank_by_group


@pytest.fixture(scope="module")
def lung():
    d = load_lung()
    assert sorted(d["status"].unique()) == [0, 1] and int(d["status"].sum()) == 165 and len(d) == 228
    return d


def test_logrank_by_sex_matches_r(lung):
    res = logrank_by_group(lung["time"], lung["status"], lung["sex"])
    assert res.test_statistic == pytest.approx(10.33, abs=0.01)
    assert res.p_value == pytest.approx(0.0013, abs=0.0001)
    assert res.degrees_of_freedom == 1


def test_km_medians_match_r(lung):
    assert km_median(lung["time"], lung["status"]) == pytest.approx(310.0, abs=0.01)
    by_sex = km_median(lung["time"], lung["status"], lung["sex"])
    assert by_sex == {"1": pytest.approx(270.0), "2": pytest.approx(426.0)}


def _logrank_k_groups(t, e, g):
    """Textbook k-sample log-rank: U = O - E, V = sum_t d (n-d)/(n-1) (diag(p) - p p^T), chi2 = U' V^- U."""
    keys = np.unique(g)
    u, v = np.zeros(keys.size), np.zeros((keys.size, keys.size))
    for time in np.unique(t[e == 1]):
        at_risk = t >= time
        n = at_risk.sum()
        d = ((t == time) & (e == 1)).sum()
        n_g = np.array([(at_risk & (g == k)).sum() for k in keys])
        d_g = np.array([((t == time) & (e == 1) & (g == k)).sum() for k in keys])
        p = n_g / n
        u += d_g - d * p
        if n > 1:
            v += d * (n - d) / (n - 1) * (np.diag(p) - np.outer(p, p))
    return float(u[:-1] @ np.linalg.solve(v[:-1, :-1], u[:-1]))


def test_three_groups_match_the_textbook_statistic(lung):
    d = lung.dropna(subset=["ph.ecog"])
    ecog = np.minimum(d["ph.ecog"].to_numpy(), 2).astype(int)  # 0, 1, >=2 (ecog 3 has one patient)
    res = logrank_by_group(d["time"], d["status"], ecog)
    assert res.degrees_of_freedom == 2
    expected = _logrank_k_groups(d["time"].to_numpy(), d["status"].to_numpy(), ecog)
    assert res.test_statistic == pytest.approx(expected, rel=1e-8)
    assert res.p_value < 0.001


def test_ecog_three_alone_is_a_single_patient_group(lung):
    d = lung.dropna(subset=["ph.ecog"])
    with pytest.raises(StatisticUndefinedError, match=r"'3.0' \(n=1\)"):
        logrank_by_group(d["time"], d["status"], d["ph.ecog"])


def test_no_event_is_undefined():
    with pytest.raises(StatisticUndefinedError, match="no event"):
        logrank_by_group([1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0], [0, 0, 1, 1])
