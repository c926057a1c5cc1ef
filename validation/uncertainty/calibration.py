"""Judging uncertainty: AUROC, prediction-rejection ratio, and calibrated reliability levels.

* :func:`auroc`: probability that a random positive (a *wrong* answer) gets a higher score (the
  uncertainty) than a random negative, ties counting 1/2 (Mann-Whitney U / (n_pos n_neg)); equals
  ``sklearn.metrics.roc_auc_score``.
* :func:`prediction_rejection_ratio` (Malinin, PhD thesis 2019; Malinin & Gales, ICLR 2021):
  reject the ``k`` most uncertain of ``N`` answers (k = 0..N; rejected answers go to an expert and
  count as correct) and plot the error rate ``e(k) = (wrong answers kept) / N`` against the rejected
  fraction ``k / N``. AUC = trapezoidal area under that curve. The *random* curve is the
  expectation under random rejection (a straight line from E/N to 0), the *oracle* rejects the wrong
  answers first. ``PRR = (AUC_unc - AUC_random) / (AUC_oracle - AUC_random)``: 1 is a perfect
  ranking, 0 no better than chance, negative worse. Tied uncertainties are rejected in expectation
  (a tie group of g answers with e wrong loses e/g wrong answers per rejection).
* :func:`calibrate_levels` / :func:`assign_level`: reliability levels from uncertainty cut points
  chosen on a validation split. Rule: over the distinct uncertainty values ``v`` (ascending),
  ``high`` = the largest ``v`` such that the answers with ``u <= v`` have error rate
  ``<= target_high``; ``medium`` = the largest ``v >= high`` such that the answers with
  ``high < u <= v`` have error rate ``<= target_medium``. Levels: ``u <= high`` -> "high",
  ``high < u <= medium`` -> "medium", else "low". No qualifying cut -> ``-inf`` (the level is empty).
  :func:`level_error_rates` reports each level's count and error rate on a held-out split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise

from validation.report_labeler import MetricUndefinedError

__all__ = [
    "LEVELS",
    "ReliabilityThresholds",
    "assign_level",
    "auroc",
    "calibrate_levels",
    "level_error_rates",
    "prediction_rejection_ratio",
    "rejection_curve",
]

#: Reliability levels, most reliable first.
LEVELS: tuple[str, ...] = ("high", "medium", "low")


def _check(flags: Sequence[bool], scores: Sequence[float], metric: str) -> list[float]:
    if len(flags) != len(scores):
        raise ValueError(f"{metric}: {len(flags)} labels for {len(scores)} scores")
    if not flags:
        raise MetricUndefinedError(f"{metric}: no item")
    values = [float(s) for s in scores]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{metric}: scores must be finite")
    return values


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (True = positive, e.g. a wrong answer).

    Raises:
        ValueError: lengths differ or a score is not finite.
        MetricUndefinedError: empty input, or only one class present.

    Example:
        labels [1, 0, 1, 0], scores [0.9, 0.8, 0.3, 0.1]: pairs (pos > neg) 0.9>0.8, 0.9>0.1,
        0.3>0.1 of 4 -> 0.75.
    """
    values = _check(labels, scores, "auroc")
    n_pos = sum(bool(x) for x in labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise MetricUndefinedError(f"auroc needs both classes; got {n_pos} positive, {n_neg} negative")
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    for _, group in groupby(order, key=values.__getitem__):
        idx = list(group)
        for i in idx:
            ranks[i] = start + (len(idx) + 1) / 2  # average 1-based rank of the tie group
        start += len(idx)
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def rejection_curve(wrong: Sequence[bool], uncertainty: Sequence[float]) -> list[float]:
    """``e(k)`` for k = 0..N: wrong answers kept after rejecting the k most uncertain, divided by N.

    Ties are rejected in expectation (see the module docstring).
    """
    values = _check(wrong, uncertainty, "rejection_curve")
    n = len(values)
    order = sorted(range(n), key=lambda i: -values[i])
    kept = float(sum(bool(w) for w in wrong))
    curve = [kept / n]
    for _, group in groupby(order, key=values.__getitem__):
        idx = list(group)
        per_item = sum(bool(wrong[i]) for i in idx) / len(idx)
        for _ in idx:
            kept -= per_item
            curve.append(max(kept, 0.0) / n)
    return curve


def _area(curve: Sequence[float]) -> float:
    n = len(curve) - 1
    return sum((a + b) / 2 for a, b in pairwise(curve)) / n


def prediction_rejection_ratio(wrong: list[bool], uncertainty: list[float]) -> float:
    """PRR of an uncertainty score for rejecting wrong answers (definition in the module docstring).

    Args:
        wrong: per answer, whether it is wrong.
        uncertainty: per answer, the uncertainty (higher = reject first).

    Returns:
        ``(AUC_unc - AUC_random) / (AUC_oracle - AUC_random)``.

    Raises:
        ValueError: lengths differ or an uncertainty is not finite.
        MetricUndefinedError: empty input, or every answer right or every answer wrong (the oracle
            is then no better than random).

    Example:
        wrong [1, 0, 0, 0]: uncertainty ranking the wrong answer first -> 1.0, last -> -1.0,
        constant -> 0.0.
    """
    values = _check(wrong, uncertainty, "prediction_rejection_ratio")
    n_wrong = sum(bool(w) for w in wrong)
    if n_wrong in (0, len(values)):
        raise MetricUndefinedError(
            f"prediction_rejection_ratio: {n_wrong} of {len(values)} answers wrong; PRR needs both right and wrong"
        )
    auc_unc = _area(rejection_curve(wrong, values))
    auc_rnd = _area(rejection_curve(wrong, [0.0] * len(values)))
    auc_orc = _area(rejection_curve(wrong, [float(bool(w)) for w in wrong]))
    return (auc_unc - auc_rnd) / (auc_orc - auc_rnd)


@dataclass(frozen=True)
class ReliabilityThresholds:
    """Uncertainty cut points of the reliability levels (``u <= high``: high; ``<= medium``: medium).

    Attributes:
        high: largest uncertainty of the "high" level (``-inf``: the level is empty).
        medium: largest uncertainty of the "medium" level (``== high``: the level is empty).
        target_high: the error-rate target of the high level on the calibration split.
        target_medium: the error-rate target of the medium level on the calibration split.
    """

    high: float
    medium: float
    target_high: float
    target_medium: float


def _largest_cut(values: Sequence[float], wrong: Sequence[bool], lower: float, target: float) -> float:
    """Largest distinct value v > lower with error rate of {lower < u <= v} <= target, else ``lower``."""
    pairs = sorted((v, bool(w)) for v, w in zip(values, wrong) if v > lower)
    best, n, errors = lower, 0, 0
    for value, group in groupby(pairs, key=lambda p: p[0]):
        g = list(group)
        n += len(g)
        errors += sum(w for _, w in g)
        if errors / n <= target:
            best = value
    return best


def calibrate_levels(
    uncertainty: Sequence[float], wrong: Sequence[bool], *, target_high: float, target_medium: float
) -> ReliabilityThresholds:
    """Choose the level cut points on a validation split (rule in the module docstring).

    Args:
        uncertainty: per validation answer, its uncertainty.
        wrong: per validation answer, whether it is wrong.
        target_high: largest error rate allowed in the high level.
        target_medium: largest error rate allowed in the medium level (>= ``target_high``).

    Returns:
        The thresholds.

    Raises:
        ValueError: lengths differ, a non-finite uncertainty, or targets outside
            ``0 <= target_high <= target_medium <= 1``.
        MetricUndefinedError: empty input.

    Example:
        u [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], wrong [0, 0, 1, 0, 1, 1], targets 0.0 / 0.5:
        high = 0.2 (prefix error 0, adding 0.3 makes 1/3); medium: {0.3} 1/1, {0.3, 0.4} 1/2,
        {0.3..0.5} 2/3, {0.3..0.6} 3/4 -> medium = 0.4.
    """
    values = _check(wrong, uncertainty, "calibrate_levels")
    if not 0.0 <= target_high <= target_medium <= 1.0:
        raise ValueError(f"need 0 <= target_high <= target_medium <= 1, got {target_high}, {target_medium}")
    high = _largest_cut(values, wrong, -math.inf, target_high)
    medium = _largest_cut(values, wrong, high, target_medium)
    return ReliabilityThresholds(high, medium, target_high, target_medium)


def assign_level(u: float, thresholds: ReliabilityThresholds) -> str:
    """``"high"``, ``"medium"`` or ``"low"`` reliability for an uncertainty ``u``.

    Raises:
        ValueError: ``u`` is not finite.
    """
    if not math.isfinite(u):
        raise ValueError(f"uncertainty must be finite, got {u}")
    if u <= thresholds.high:
        return "high"
    return "medium" if u <= thresholds.medium else "low"


def level_error_rates(
    uncertainty: Sequence[float], wrong: Sequence[bool], thresholds: ReliabilityThresholds
) -> dict[str, dict[str, float | int | None]]:
    """Count and error rate of each level on a (held-out) split.

    Returns:
        ``{level: {"n": count, "error_rate": wrong / count or None for an empty level}}``.

    Raises:
        ValueError: lengths differ or a non-finite uncertainty.
        MetricUndefinedError: empty input.
    """
    values = _check(wrong, uncertainty, "level_error_rates")
    out: dict[str, dict[str, float | int | None]] = {}
    for level in LEVELS:
        flags = [bool(w) for v, w in zip(values, wrong) if assign_level(v, thresholds) == level]
        out[level] = {"n": len(flags), "error_rate": sum(flags) / len(flags) if flags else None}
    return out
