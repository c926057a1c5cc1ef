"""Risk thresholds chosen once on internal validation and frozen for every other cohort.

A score is the predicted probability of being event-free beyond the landmark. A patient is
predicted event-free (label 1, "low risk") when ``score >= threshold`` and "high risk" otherwise.

Rules (:func:`choose_threshold`):

* ``youden``: the score cut maximising Youden's J = sensitivity + specificity - 1 on the
  internal-validation patients with a known landmark label (ROC from ``sklearn.metrics.roc_curve``;
  ties of J go to the higher cut, the first one found). Needs both classes.
* ``median``: the median score of the internal-validation patients (two equal-size risk groups
  there; needs no labels).

The result, :class:`RiskThreshold`, is immutable: external cohorts call :meth:`RiskThreshold.apply`
and never refit it (the paper's protocol).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from validation.survival.checks import SurvivalInputError, as_labels, as_scores, check_lengths

__all__ = ["HIGH_RISK", "LOW_RISK", "RiskThreshold", "choose_threshold"]

HIGH_RISK, LOW_RISK = "high risk", "low risk"


@dataclass(frozen=True)
class RiskThreshold:
    """A frozen cut on the predicted event-free probability.

    Attributes:
        value: the cut; ``score >= value`` -> predicted event-free (low risk).
        method: ``youden`` or ``median``.
        n_fit: patients it was chosen on.
        youden_j: J at the cut on the fitting data (``youden`` only).
    """

    value: float
    method: str
    n_fit: int
    youden_j: float | None = None

    def predict(self, scores: Any) -> np.ndarray:
        """Predicted labels (int8): 1 = event-free beyond the landmark, 0 = event before it."""
        return (as_scores(scores) >= self.value).astype(np.int8)

    def apply(self, scores: Any) -> np.ndarray:
        """Risk group per patient: ``"low risk"`` or ``"high risk"`` (object array)."""
        return np.where(self.predict(scores) == 1, LOW_RISK, HIGH_RISK).astype(object)

    def accuracy(self, labels: Any, scores: Any) -> float:
        """Fraction of patients whose predicted label equals ``labels`` (one class allowed)."""
        y = as_labels(labels, both_classes=False)
        s = as_scores(scores)
        check_lengths(labels=y, scores=s)
        return float((self.predict(s) == y).mean())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON."""
        return asdict(self)


def choose_threshold(labels: Any, scores: Any, *, method: str = "youden") -> RiskThreshold:
    """Choose the risk threshold on internal-validation patients.

    Args:
        labels: 0/1 landmark labels of the patients (ignored by ``median``; pass the same length).
        scores: predicted event-free probabilities.
        method: ``youden`` (maximise sensitivity + specificity - 1) or ``median``.

    Returns:
        The frozen :class:`RiskThreshold`.

    Raises:
        SurvivalInputError: malformed input or unknown method.
        StatisticUndefinedError: ``youden`` with one class only.
    """
    s = as_scores(scores)
    if method == "median":
        check_lengths(labels=np.asarray(labels), scores=s)
        return RiskThreshold(value=float(np.median(s)), method="median", n_fit=int(s.size))
    if method != "youden":
        raise SurvivalInputError(f"method must be 'youden' or 'median', got {method!r}")
    y = as_labels(labels)
    check_lengths(labels=y, scores=s)
    fpr, tpr, cuts = roc_curve(y, s)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # cuts[0] is +inf (nobody positive)
    return RiskThreshold(value=float(cuts[best]), method="youden", n_fit=int(s.size), youden_j=float(j[best]))
