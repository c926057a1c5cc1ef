"""Tests of validation.uncertainty.estimators: hand-worked entropies and the chain-rule identity."""

from __future__ import annotations

import math

import pytest

from validation.uncertainty import (
    cluster_probabilities,
    discrete_semantic_entropy,
    normalised_sample_probabilities,
    sample_entropy,
    semantic_entropy,
    sequence_log_likelihood,
    within_cluster_entropy,
)

LN = math.log


def test_sequence_log_likelihood_is_the_token_mean():
    assert sequence_log_likelihood([-1.0, -2.0, -3.0]) == -2.0
    with pytest.raises(ValueError, match="no token"):
        sequence_log_likelihood([])
    with pytest.raises(ValueError, match="<= 0"):
        sequence_log_likelihood([-1.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        sequence_log_likelihood([float("-inf")])


def test_length_normalisation():
    """Sample 1 has tokens (ln 0.5, ln 0.5): mean ln 0.5; sample 2 one token ln 0.5: equal weight 1/2."""
    probs = normalised_sample_probabilities([[LN(0.5), LN(0.5)], [LN(0.5)]])
    assert probs == pytest.approx([0.5, 0.5])


def test_semantic_entropy_by_hand():
    """Means ln 0.6 and ln 0.2 -> p = (3/4, 1/4).

    Two clusters: -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335; one cluster: 0.
    """
    ll = [[LN(0.6)], [LN(0.2)]]
    assert semantic_entropy(ll, [0, 1]) == pytest.approx(-(0.75 * LN(0.75) + 0.25 * LN(0.25)))
    assert semantic_entropy(ll, [0, 1]) == pytest.approx(0.562335, abs=1e-6)
    assert semantic_entropy(ll, [5, 5]) == 0.0


def test_semantic_entropy_sums_probabilities_within_clusters():
    """p = (1/2, 1/4, 1/4) (means ln 0.4, ln 0.2, ln 0.2); clusters (0, 1, 1): P = (1/2, 1/2) -> ln 2."""
    ll = [[LN(0.4)], [LN(0.2), LN(0.2)], [LN(0.2)]]
    assert cluster_probabilities(ll, [0, 1, 1]) == pytest.approx({0: 0.5, 1: 0.5})
    assert semantic_entropy(ll, [0, 1, 1]) == pytest.approx(LN(2))
    # within-cluster: cluster 0 H = 0; cluster 1 has two equal samples, H = ln 2, weight 1/2
    assert within_cluster_entropy(ll, [0, 1, 1]) == pytest.approx(0.5 * LN(2))


def test_discrete_semantic_entropy():
    """[0, 0, 1, 2]: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.5 ln 2 = 1.039721."""
    assert discrete_semantic_entropy([0, 0, 1, 2]) == pytest.approx(1.5 * LN(2))
    assert discrete_semantic_entropy([3, 3, 3, 3]) == 0.0  # one cluster of equal-probability samples
    assert discrete_semantic_entropy([0, 1, 2, 3]) == pytest.approx(LN(4))
    with pytest.raises(ValueError):
        discrete_semantic_entropy([])


def test_one_cluster_of_equal_samples():
    """Equal samples in one cluster: discrete and semantic entropy 0, all entropy inside the cluster."""
    ll = [[-1.0], [-1.0], [-1.0], [-1.0]]
    ids = [0, 0, 0, 0]
    assert discrete_semantic_entropy(ids) == 0.0
    assert semantic_entropy(ll, ids) == 0.0
    assert within_cluster_entropy(ll, ids) == pytest.approx(LN(4))
    # every sample its own cluster: nothing inside clusters
    assert within_cluster_entropy(ll, [0, 1, 2, 3]) == 0.0


@pytest.mark.parametrize(
    ("ll", "ids"),
    [
        ([[-0.1, -0.3], [-1.2], [-0.7, -0.2, -0.9], [-2.0], [-0.05]], [0, 1, 0, 2, 1]),
        ([[-0.5]] * 3 + [[-3.0]] * 2, [0, 0, 1, 1, 1]),
        ([[-0.2], [-0.4], [-0.8]], [7, 7, 7]),
    ],
)
def test_chain_rule_identity(ll, ids):
    """-sum_i p_i ln p_i = semantic_entropy + within_cluster_entropy over normalised samples."""
    total = -sum(p * LN(p) for p in normalised_sample_probabilities(ll))
    assert sample_entropy(ll) == pytest.approx(total)
    assert semantic_entropy(ll, ids) + within_cluster_entropy(ll, ids) == pytest.approx(total)


def test_numerically_stable_for_long_answers():
    """Very negative mean log-probs do not underflow: only differences matter."""
    ll = [[-800.0], [-800.0 + LN(3)]]  # p = (1/4, 3/4)
    assert semantic_entropy(ll, [0, 1]) == pytest.approx(-(0.25 * LN(0.25) + 0.75 * LN(0.75)))


def test_input_errors():
    with pytest.raises(ValueError, match="2 samples but 1 cluster"):
        semantic_entropy([[-1.0], [-1.0]], [0])
    with pytest.raises(ValueError, match="no sample"):
        within_cluster_entropy([], [])
    with pytest.raises(ValueError, match="sample 1"):
        semantic_entropy([[-1.0], []], [0, 1])
