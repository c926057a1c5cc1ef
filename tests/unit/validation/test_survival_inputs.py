"""Input validation of the survival statistics: bad input fails loudly, naming argument and index."""

from __future__ import annotations

import numpy as np
import pytest

from validation.survival import (
    StatisticUndefinedError,
    SurvivalInputError,
    auc_ci,
    brier_at_landmark,
    c_index,
    choose_threshold,
    delong_test,
    landmark_labels,
    logrank_by_group,
)

T = [5.0, 8.0, 12.0, 20.0]
E = [1, 0, 1, 1]


@pytest.mark.parametrize(
    ("durations", "match"),
    [
        ([5.0, -1.0, 12.0, 20.0], r"durations\[1\] is -1\.0: durations must be >= 0"),
        ([5.0, 8.0, np.nan, 20.0], r"durations\[2\] is nan"),
        ([5.0, 8.0, 12.0, np.inf], r"durations\[3\] is inf"),
    ],
)
def test_bad_durations_name_the_index(durations, match):
    with pytest.raises(SurvivalInputError, match=match):
        landmark_labels(durations, E, 10.0)
    with pytest.raises(SurvivalInputError, match=match):
        logrank_by_group(durations, E, ["a", "a", "b", "b"])


@pytest.mark.parametrize("events", [[1, 2, 1, 0], [1, 0.5, 1, 0], [1, np.nan, 1, 0]])
def test_events_must_be_zero_or_one(events):
    with pytest.raises(SurvivalInputError, match=r"events\[1\] is .*must be 0 or 1"):
        landmark_labels(T, events, 10.0)
    with pytest.raises(SurvivalInputError, match=r"events\[1\]"):
        c_index(T, events, [0.1, 0.2, 0.3, 0.4])


def test_r_status_coding_is_rejected_not_silently_used():
    """R's survival::lung codes status 1 = censored, 2 = dead: it must be recoded first."""
    with pytest.raises(SurvivalInputError, match=r"events\[0\] is 2\.0"):
        logrank_by_group([1.0, 2.0, 3.0, 4.0], [2, 1, 2, 1], [0, 0, 1, 1])


def test_length_mismatch_names_the_arguments():
    with pytest.raises(SurvivalInputError, match=r"durations=4, events=3"):
        landmark_labels(T, [1, 0, 1], 10.0)
    with pytest.raises(SurvivalInputError, match=r"labels=4, scores_a=4, scores_b=3"):
        delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])


def test_single_patient_group_is_named():
    with pytest.raises(StatisticUndefinedError, match=r"'c' \(n=1\) have fewer than 2 patients"):
        logrank_by_group(T + [3.0], E + [1], ["a", "a", "b", "b", "c"])
    with pytest.raises(StatisticUndefinedError, match="single group"):
        logrank_by_group(T, E, ["a"] * 4)
    with pytest.raises(SurvivalInputError, match=r"groups\[2\] is None"):
        logrank_by_group(T, E, ["a", "b", None, "b"])


def test_one_class_labels_and_bad_scores():
    with pytest.raises(StatisticUndefinedError, match="only class 1"):
        auc_ci([1, 1, 1], [0.1, 0.2, 0.3], n_boot=10)
    with pytest.raises(StatisticUndefinedError, match="only class 0"):
        choose_threshold([0, 0], [0.2, 0.4])
    with pytest.raises(SurvivalInputError, match=r"labels\[2\] is -1\.0"):
        auc_ci([1, 0, -1], [0.1, 0.2, 0.3], n_boot=10)  # an EXCLUDED label leaking in
    with pytest.raises(SurvivalInputError, match=r"scores\[1\] is nan"):
        auc_ci([1, 0, 1], [0.1, np.nan, 0.3], n_boot=10)
    with pytest.raises(SurvivalInputError, match=r"survival_probs\[0\] is 1\.5"):
        brier_at_landmark(T, E, [1.5, 0.2, 0.3, 0.4], 10.0)


def test_bad_landmark_and_method():
    with pytest.raises(SurvivalInputError, match="landmark must be finite and > 0"):
        landmark_labels(T, E, 0.0)
    with pytest.raises(SurvivalInputError, match="method must be"):
        landmark_labels(T, E, 10.0, method="impute")
