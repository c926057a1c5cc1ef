"""Entropy estimators of the reliability index (natural logarithms throughout).

Each of the M sampled answers ``i`` has a **length-normalised log-likelihood** ``l_i`` = the mean of
its token log-probabilities, and a semantic cluster ``c(i)`` (:mod:`validation.uncertainty.clustering`).
The normalised sample probabilities are ``p_i = exp(l_i) / sum_j exp(l_j)`` (computed with
log-sum-exp), and a cluster's probability is ``P(c) = sum_{i in c} p_i``.

* :func:`semantic_entropy` ``H_SE = -sum_c P(c) ln P(c)``: the Rao-Blackwellised semantic entropy
  of Farquhar et al., "Detecting hallucinations in large language models using semantic entropy",
  Nature 630 (2024), https://doi.org/10.1038/s41586-024-07421-0
  (reference code: github.com/jlko/semantic_uncertainty, ``predictive_entropy_rao``).
* :func:`discrete_semantic_entropy` ``-sum_c (n_c / M) ln(n_c / M)``: cluster counts only (same paper,
  for black-box models).
* :func:`within_cluster_entropy` ``sum_c P(c) H_c`` with ``H_c = -sum_{i in c} (p_i / P(c)) ln(p_i / P(c))``:
  the XMedGPT estimator (paper equations 5-6), the spread of the model's belief *inside* each meaning.
* :func:`sample_entropy` ``-sum_i p_i ln p_i``. By the chain rule of entropy,
  ``sample_entropy = semantic_entropy + within_cluster_entropy`` (tested).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

__all__ = [
    "cluster_probabilities",
    "discrete_semantic_entropy",
    "normalised_sample_probabilities",
    "sample_entropy",
    "semantic_entropy",
    "sequence_log_likelihood",
    "within_cluster_entropy",
]

_LOGPROB_TOLERANCE = 1e-6  # a token log-probability may exceed 0 by rounding only


def sequence_log_likelihood(token_logprobs: Sequence[float]) -> float:
    """Length-normalised log-likelihood of one sampled answer: the mean of its token log-probabilities.

    Raises:
        ValueError: no token, a non-finite value, or a log-probability > 0.
    """
    if len(token_logprobs) == 0:
        raise ValueError("a sampled answer has no token log-probability")
    values = [float(v) for v in token_logprobs]
    bad = [v for v in values if not math.isfinite(v) or v > _LOGPROB_TOLERANCE]
    if bad:
        raise ValueError(f"token log-probabilities must be finite and <= 0, got {bad[:3]}")
    return sum(values) / len(values)


def _check(log_likelihoods: Sequence[Sequence[float]], cluster_ids: Sequence[int]) -> None:
    if len(log_likelihoods) != len(cluster_ids):
        raise ValueError(f"{len(log_likelihoods)} samples but {len(cluster_ids)} cluster ids")
    if not cluster_ids:
        raise ValueError("no sample: entropy needs at least one sampled answer")


def _log_likelihoods(log_likelihoods: Sequence[Sequence[float]]) -> list[float]:
    if not log_likelihoods:
        raise ValueError("no sample: entropy needs at least one sampled answer")
    out = []
    for i, tokens in enumerate(log_likelihoods):
        try:
            out.append(sequence_log_likelihood(tokens))
        except ValueError as e:
            raise ValueError(f"sample {i}: {e}") from e
    return out


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _entropy_from_logs(log_probs: Sequence[float]) -> float:
    """``-sum p ln p`` from ``ln p`` (exactly 0 for a single ``ln p = 0``)."""
    return 0.0 - sum(math.exp(lp) * lp for lp in log_probs)


def _log_groups(ls: Sequence[float], cluster_ids: Sequence[int]) -> dict[int, list[float]]:
    groups: dict[int, list[float]] = defaultdict(list)
    for c, v in zip(cluster_ids, ls):
        groups[c].append(v)
    return dict(groups)


def normalised_sample_probabilities(log_likelihoods: Sequence[Sequence[float]]) -> list[float]:
    """``p_i = exp(l_i) / sum_j exp(l_j)`` with ``l_i`` the mean token log-probability of sample i.

    Raises:
        ValueError: no sample, or a sample fails :func:`sequence_log_likelihood`.
    """
    ls = _log_likelihoods(log_likelihoods)
    total = _logsumexp(ls)
    return [math.exp(v - total) for v in ls]


def _log_cluster_probabilities(
    log_likelihoods: Sequence[Sequence[float]], cluster_ids: Sequence[int]
) -> tuple[dict[int, list[float]], dict[int, float]]:
    """Per cluster: its members' ``l_i`` and ``ln P(c)`` (log-sum-exp, so one cluster gives exactly 0)."""
    _check(log_likelihoods, cluster_ids)
    ls = _log_likelihoods(log_likelihoods)
    total = _logsumexp(ls)
    groups = _log_groups(ls, cluster_ids)
    if len(groups) == 1:
        return groups, {c: 0.0 for c in groups}
    return groups, {c: _logsumexp(v) - total for c, v in groups.items()}


def cluster_probabilities(
    log_likelihoods: Sequence[Sequence[float]], cluster_ids: Sequence[int]
) -> dict[int, float]:
    """``P(c) = sum_{i in c} p_i`` for each cluster id (in order of first appearance)."""
    _, log_p = _log_cluster_probabilities(log_likelihoods, cluster_ids)
    return {c: math.exp(v) for c, v in log_p.items()}


def semantic_entropy(log_likelihoods: list[list[float]], cluster_ids: list[int]) -> float:
    """Rao-Blackwellised semantic entropy ``-sum_c P(c) ln P(c)`` (Farquhar et al. 2024).

    Args:
        log_likelihoods: per sampled answer, its token log-probabilities.
        cluster_ids: per sampled answer, its semantic cluster.

    Returns:
        The entropy in nats, in ``[0, ln(#clusters)]``.

    Raises:
        ValueError: lengths differ, no sample, or invalid log-probabilities.

    Example:
        Two samples with mean log-probs ln 0.6 and ln 0.2 (p = 3/4, 1/4) in different clusters:
        ``-(3/4 ln 3/4 + 1/4 ln 1/4) = 0.5623``; in one cluster: 0.
    """
    _, log_p = _log_cluster_probabilities(log_likelihoods, cluster_ids)
    return _entropy_from_logs(list(log_p.values()))


def discrete_semantic_entropy(cluster_ids: list[int]) -> float:
    """Entropy of the cluster counts, ``-sum_c (n_c / M) ln(n_c / M)`` (no likelihoods needed).

    Raises:
        ValueError: no sample.

    Example:
        clusters ``[0, 0, 1, 2]``: ``-(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.0397``; one cluster: 0.
    """
    if not cluster_ids:
        raise ValueError("no sample: entropy needs at least one sampled answer")
    m = len(cluster_ids)
    return _entropy_from_logs([math.log(n / m) for n in Counter(cluster_ids).values()])


def within_cluster_entropy(log_likelihoods: list[list[float]], cluster_ids: list[int]) -> float:
    """The XMedGPT estimator ``sum_c P(c) H_c``, ``H_c`` the entropy of ``p_i / P(c)`` inside cluster c.

    Raises:
        ValueError: lengths differ, no sample, or invalid log-probabilities.

    Example:
        Samples p = (1/2, 1/4, 1/4), clusters (0, 1, 1): cluster 0 has H = 0, cluster 1 (P = 1/2)
        has two equal samples, H = ln 2 -> ``1/2 ln 2 = 0.3466``.
    """
    groups, log_p = _log_cluster_probabilities(log_likelihoods, cluster_ids)
    total = 0.0
    for c, ls in groups.items():
        lse = _logsumexp(ls)
        total += math.exp(log_p[c]) * _entropy_from_logs([v - lse for v in ls])
    return total


def sample_entropy(log_likelihoods: list[list[float]]) -> float:
    """Entropy of the normalised sample probabilities, ``-sum_i p_i ln p_i`` (every sample its own cluster).

    Raises:
        ValueError: no sample, or invalid log-probabilities.
    """
    ls = _log_likelihoods(log_likelihoods)
    total = _logsumexp(ls)
    return _entropy_from_logs([v - total for v in ls])
