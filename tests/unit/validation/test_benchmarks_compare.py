"""Paired bootstrap CIs: hand-worked resamples, the normal-approximation width, undefined resamples."""

from __future__ import annotations

import numpy as np
import pytest

from validation.benchmarks.compare import bootstrap_ci, paired_bootstrap, resample_indices
from validation.benchmarks.terms import ItemScores, corpus_scores, mean_scores, ratio_scores
from validation.metrics import MetricUndefinedError


def test_paired_difference_resamples_are_counts_of_the_one_discordant_item():
    """Candidate right on [1, 1, 0, 1], baseline on [1, 0, 0, 1]: only item 1 differs.

    Each paired resample's difference is (#draws of item 1) / 4, so every value lies in
    {0, 1/4, 2/4, 3/4, 1}; the point difference is 1/4.
    """
    cand, base = mean_scores("acc", [1, 1, 0, 1]), mean_scores("acc", [1, 0, 0, 1])
    idx = resample_indices(4, 500, seed=3)
    diffs = cand.resampled(idx) - base.resampled(idx)
    np.testing.assert_allclose(diffs, (idx == 1).sum(axis=1) / 4)
    iv = paired_bootstrap(cand, base, n_boot=500, seed=3)
    assert iv.value == 0.25 and 0.0 <= iv.ci_low <= 0.25 <= iv.ci_high <= 1.0
    assert (iv.n_items, iv.n_boot, iv.n_boot_used) == (4, 500, 500)
    assert iv.ci_low == np.percentile(diffs, 2.5) and iv.ci_high == np.percentile(diffs, 97.5)


def test_identical_systems_have_a_zero_width_difference():
    s = mean_scores("acc", [1, 0, 1, 1, 0, 0, 1])
    iv = paired_bootstrap(s, s, n_boot=200, seed=0)
    assert (iv.value, iv.ci_low, iv.ci_high) == (0.0, 0.0, 0.0)


def test_ratio_resampling_equals_a_loop_over_resamples():
    num, den = [1.0, 0.0, 0.5, 2.0, 0.0], [1.0, 0.0, 1.0, 3.0, 1.0]
    s = ratio_scores("pooled", num, den)
    idx = resample_indices(5, 300, seed=7)
    want = []
    for row in idx:
        d = sum(den[i] for i in row)
        want.append(sum(num[i] for i in row) / d if d else np.nan)
    np.testing.assert_allclose(s.resampled(idx), want)


def test_ci_width_matches_the_normal_approximation_of_a_proportion():
    """Mean of 400 Bernoulli(0.5) outcomes: 95% CI half-width ~ 1.96 * sqrt(0.25 / 400) = 0.049."""
    s = mean_scores("acc", [1, 0] * 200)
    iv = bootstrap_ci(s, n_boot=2000, seed=0)
    assert iv.value == 0.5
    assert (iv.ci_high - iv.ci_low) / 2 == pytest.approx(0.049, abs=0.006)
    assert bootstrap_ci(s, n_boot=2000, seed=0) == iv  # seeded: reproducible
    assert not np.array_equal(resample_indices(400, 5, seed=0), resample_indices(400, 5, seed=1))


def test_corpus_metrics_are_recomputed_and_undefined_resamples_left_out():
    """A corpus metric defined only when item 0 is drawn: P(drawn) = 1 - (3/4)^4 = 0.68 of resamples."""

    def fn(payloads):
        if "x" not in payloads:
            raise MetricUndefinedError("no x")
        return payloads.count("x") / len(payloads)

    s = corpus_scores("share_x", ["x", "a", "b", "c"], fn)
    iv = bootstrap_ci(s, n_boot=1000, seed=0)
    assert iv.value == 0.25 and 600 < iv.n_boot_used < 760
    # defined only when item 0 is drawn twice or more: P = 1 - 0.9^10 - 10 * 0.1 * 0.9^9 = 0.26
    payloads = ("x",) + ("a",) * 9
    rare = ItemScores(
        "share_x", 0.1, payloads=payloads, corpus=lambda ps: fn(ps if ps.count("x") >= 2 else [])
    )
    with pytest.raises(MetricUndefinedError, match=r"share_x: only \d+ of 1000 bootstrap resamples"):
        bootstrap_ci(rare, n_boot=1000, seed=0)


def test_bad_arguments_raise():
    a, b = mean_scores("acc", [1, 0, 1]), mean_scores("acc", [1, 0])
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(a, b)
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(a, mean_scores("other", [1, 0, 1]))
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(a, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot >= 1"):
        resample_indices(3, 0, seed=0)
    assert isinstance(a, ItemScores) and a.kind == "ratio" and a.n == 3
