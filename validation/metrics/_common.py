"""Small input checks shared by the metric modules (private)."""

from __future__ import annotations

from collections.abc import Sequence

from validation.report_labeler import MetricUndefinedError


def check_pairs(golds: Sequence, preds: Sequence, metric: str) -> int:
    """The number of items; raise when the lists differ in length or are empty.

    Raises:
        ValueError: ``golds`` and ``preds`` have different lengths.
        MetricUndefinedError: there is no item.
    """
    if len(golds) != len(preds):
        raise ValueError(f"{metric}: {len(preds)} predictions for {len(golds)} gold items")
    if not golds:
        raise MetricUndefinedError(f"{metric}: no item to score (empty input)")
    return len(golds)


def mean(values: Sequence[float], what: str) -> float:
    """Arithmetic mean; an empty list raises :class:`MetricUndefinedError` naming ``what``."""
    if not values:
        raise MetricUndefinedError(f"{what}: no value to average")
    return float(sum(values) / len(values))
