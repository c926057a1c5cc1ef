"""Paired bootstrap confidence intervals: a system's metric, and the difference of two systems.

Method (percentile bootstrap, Efron & Tibshirani 1993, ch. 13; paired over items as in Koehn,
"Statistical Significance Tests for Machine Translation Evaluation", EMNLP 2004):

1. draw ``n_boot`` resamples of the ``n`` item indices with replacement (``numpy`` generator seeded
   with ``seed``; the SAME resamples for both systems, so item difficulty cancels in the difference);
2. recompute the metric on each resample for each system: ratio metrics vectorised as
   ``sum(num[idx]) / sum(den[idx])``, corpus metrics (macro-F1, BLEU-4, CheXpert-F1, ...) by calling
   the metric on the resampled payloads (:meth:`validation.benchmarks.scoring.ItemScores.resampled`);
3. the CI is the ``[alpha/2, 1 - alpha/2]`` percentiles of the resampled values (or differences).

A resample on which the metric is undefined (e.g. no closed question drawn) is left out; the number
used is reported (``n_boot_used``) and fewer than half usable raises
:class:`~validation.metrics.MetricUndefinedError`, as does an undefined point estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from validation.benchmarks.scoring import ItemScores
from validation.metrics import MetricUndefinedError

__all__ = ["Interval", "bootstrap_ci", "paired_bootstrap", "resample_indices"]

_CHUNK = 256  # resamples per vectorised block (bounds memory at 256 x n indices)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap CI.

    Attributes:
        value: the point estimate (for a difference: candidate - baseline).
        ci_low: lower CI bound.
        ci_high: upper CI bound.
        n_items: items resampled.
        n_boot: resamples drawn.
        n_boot_used: resamples on which the metric was defined.
    """

    value: float
    ci_low: float
    ci_high: float
    n_items: int
    n_boot: int
    n_boot_used: int

    def to_dict(self) -> dict[str, float | int]:
        """JSON-able fields."""
        return asdict(self)


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` item indices drawn with replacement by ``numpy.random.default_rng(seed)``.

    Raises:
        ValueError: ``n < 1`` or ``n_boot < 1``.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"bootstrap needs n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _resampled(scores: ItemScores, idx: np.ndarray) -> np.ndarray:
    return np.concatenate([scores.resampled(idx[i : i + _CHUNK]) for i in range(0, len(idx), _CHUNK)])


def _interval(value: float, samples: np.ndarray, n: int, alpha: float, what: str) -> Interval:
    used = samples[np.isfinite(samples)]
    if 2 * len(used) < len(samples):
        raise MetricUndefinedError(
            f"{what}: only {len(used)} of {len(samples)} bootstrap resamples have a defined value; "
            "the benchmark has too few items of the kind the metric needs"
        )
    lo, hi = np.percentile(used, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(float(value), float(lo), float(hi), n, len(samples), len(used))


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(scores: ItemScores, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Interval:
    """Percentile bootstrap CI of one system's metric.

    Args:
        scores: the metric with its per-item terms.
        n_boot: resamples.
        seed: seed of the resamples.
        alpha: 1 - confidence level (0.05 -> 95% CI).

    Returns:
        The point estimate and its CI.

    Raises:
        MetricUndefinedError: too few resamples with a defined value.
        ValueError: bad ``n_boot`` or ``alpha``.
    """
    _check_alpha(alpha)
    idx = resample_indices(scores.n, n_boot, seed)
    return _interval(scores.value, _resampled(scores, idx), scores.n, alpha, scores.metric)


def paired_bootstrap(
    candidate: ItemScores, baseline: ItemScores, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> Interval:
    """Paired percentile bootstrap CI of ``candidate - baseline`` on the same items.

    Args:
        candidate: the candidate's metric (per-item terms aligned with ``baseline``'s items).
        baseline: the same metric of the baseline system on the same items, same order.
        n_boot: resamples.
        seed: seed of the resamples.
        alpha: 1 - confidence level.

    Returns:
        The difference of the point estimates and its CI.

    Raises:
        ValueError: different metrics or item counts, bad ``n_boot`` / ``alpha``.
        MetricUndefinedError: too few resamples where both values are defined.

    Example:
        Candidate correct on items [1, 1, 0, 1], baseline on [1, 0, 0, 1]: difference 0.25; every
        resample's difference is (#draws of item 2) / 4, so the CI lies within [0, 1].
    """
    _check_alpha(alpha)
    if candidate.metric != baseline.metric or candidate.n != baseline.n:
        raise ValueError(
            f"paired bootstrap needs one metric on the same items: {candidate.metric} on {candidate.n} "
            f"vs {baseline.metric} on {baseline.n}"
        )
    idx = resample_indices(candidate.n, n_boot, seed)
    diff = _resampled(candidate, idx) - _resampled(baseline, idx)
    value = candidate.value - baseline.value
    return _interval(value, diff, candidate.n, alpha, f"{candidate.metric} difference")
