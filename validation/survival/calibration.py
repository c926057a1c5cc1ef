"""Concordance and calibration of landmark survival probabilities.

* :func:`c_index`: Harrell's concordance index over the full follow-up (lifelines'
  ``concordance_index``); a higher score must mean longer survival, as a predicted probability of
  being event-free at the landmark does.
* :func:`brier_at_landmark`: the time-dependent Brier score at the landmark with inverse
  probability of censoring weights (Graf et al., Stat Med 1999), computed by scikit-survival's
  ``sksurv.metrics.brier_score``; the censoring distribution is estimated on the evaluated cohort
  itself. lifelines has no Brier score.
* :func:`calibration_curve`: binned reliability curve on the patients with a known landmark label
  (quantile bins of the predicted probability: mean prediction vs observed event-free fraction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lifelines.utils import concordance_index
from sksurv.metrics import brier_score
from sksurv.util import Surv

from validation.survival.checks import (
    StatisticUndefinedError,
    SurvivalInputError,
    as_durations,
    as_events,
    as_labels,
    as_scores,
    check_lengths,
)

__all__ = ["CalibrationCurve", "brier_at_landmark", "c_index", "calibration_curve"]


def c_index(durations: Any, events: Any, scores: Any) -> float:
    """Harrell's C: fraction of comparable pairs ordered correctly (higher score, longer survival).

    Args:
        durations: follow-up per patient.
        events: 1 = event, 0 = censored.
        scores: predicted score per patient; higher means longer expected survival.

    Returns:
        The concordance in [0, 1] (ties in score count one half).

    Raises:
        SurvivalInputError: malformed input.
        StatisticUndefinedError: no comparable pair (e.g. no event).
    """
    t, e, s = as_durations(durations), as_events(events), as_scores(scores)
    check_lengths(durations=t, events=e, scores=s)
    if not e.any():
        raise StatisticUndefinedError("events has no event: the C-index has no comparable pair")
    try:
        return float(concordance_index(t, s, e))
    except ZeroDivisionError as err:  # lifelines: "No admissable pairs in the dataset."
        raise StatisticUndefinedError(f"the C-index has no comparable pair: {err}") from err


def brier_at_landmark(durations: Any, events: Any, survival_probs: Any, landmark: float) -> float:
    """IPCW Brier score at ``landmark`` of predicted event-free probabilities.

    ``BS(t) = 1/n sum_i [ 1(T_i <= t, d_i = 1) p_i^2 / G(T_i) + 1(T_i > t) (1 - p_i)^2 / G(t) ]``

    Args:
        durations: follow-up per patient.
        events: 1 = event, 0 = censored.
        survival_probs: predicted probability of being event-free beyond ``landmark``.
        landmark: the evaluation time.

    Returns:
        The Brier score (0 is perfect; 0.25 is an uninformative 0.5 prediction).

    Raises:
        SurvivalInputError: malformed input.
        StatisticUndefinedError: ``landmark`` outside ``[min(durations), max(durations))``.
    """
    t, e = as_durations(durations), as_events(events)
    p = as_scores(survival_probs, "survival_probs", probability=True)
    check_lengths(durations=t, events=e, survival_probs=p)
    if not (t.min() <= landmark < t.max()):
        raise StatisticUndefinedError(
            f"landmark {landmark:g} is outside the follow-up [{t.min():g}, {t.max():g}): "
            "the Brier score there needs patients followed beyond it"
        )
    y = Surv.from_arrays(event=e.astype(bool), time=t)
    _, scores = brier_score(y, y, p, float(landmark))
    return float(scores[0])


@dataclass(frozen=True)
class CalibrationCurve:
    """A binned reliability curve.

    Attributes:
        mean_predicted: mean predicted probability per bin.
        observed: observed fraction of label 1 per bin.
        counts: patients per bin.
        edges: the bin edges on the predicted probability (``len(counts) + 1``).
    """

    mean_predicted: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    edges: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for JSON."""
        return {k: getattr(self, k).tolist() for k in ("mean_predicted", "observed", "counts", "edges")}


def calibration_curve(
    labels: Any, probs: Any, n_bins: int = 5, *, strategy: str = "quantile"
) -> CalibrationCurve:
    """Reliability curve: bins of predicted probability vs the observed fraction of label 1.

    Args:
        labels: 0/1 per patient (patients with a known landmark label only); one class is allowed.
        probs: predicted probability of label 1.
        n_bins: number of bins (fewer if quantile edges coincide).
        strategy: ``quantile`` (equal-count bins) or ``uniform`` (equal-width bins on [0, 1]).

    Returns:
        A :class:`CalibrationCurve` without empty bins.

    Raises:
        SurvivalInputError: malformed input, ``n_bins < 1`` or unknown ``strategy``.
    """
    y = as_labels(labels, both_classes=False)
    p = as_scores(probs, "probs", probability=True)
    check_lengths(labels=y, probs=p)
    if n_bins < 1 or strategy not in ("quantile", "uniform"):
        raise SurvivalInputError(
            f"need n_bins >= 1 and strategy quantile|uniform, got {n_bins}, {strategy!r}"
        )
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    if edges.size < 2:  # every prediction equal: one bin
        edges = np.array([p.min(), p.max()])
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, edges.size - 2)
    counts = np.bincount(which, minlength=edges.size - 1)
    keep = counts > 0
    sum_p = np.bincount(which, weights=p, minlength=edges.size - 1)
    sum_y = np.bincount(which, weights=y, minlength=edges.size - 1)
    return CalibrationCurve(
        mean_predicted=sum_p[keep] / counts[keep],
        observed=sum_y[keep] / counts[keep],
        counts=counts[keep],
        edges=edges,
    )
