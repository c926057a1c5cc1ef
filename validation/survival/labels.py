"""Landmark labels from right-censored follow-up, with inverse-probability-of-censoring weights.

A landmark question ("event-free beyond ``landmark``?") turns survival data into a binary label:

* label 1: follow-up beyond the landmark (``duration > landmark``), whatever the event flag;
* label 0: an event at or before the landmark (``duration <= landmark`` and ``event == 1``);
* unknown: censored at or before the landmark. ``method="exclude"`` drops these patients (the
  complete-case rule; their number is reported); ``method="ipcw"`` drops them too but re-weights the
  others by the inverse probability of remaining uncensored, ``w = 1 / G(min(T-, landmark))``, with
  ``G`` the Kaplan-Meier estimate of the censoring distribution
  (``sksurv.nonparametric.CensoringDistributionEstimator``), so that the weighted mean label is
  the Kaplan-Meier survival at the landmark (Uno et al., JASA 2007; Blanche et al., Stat Med 2013).

Both rules agree with ``model.data.curation.survival_label`` on who is labelled and how.

Example:
    >>> labels, included = landmark_labels([20.0, 10.0, 10.0], [1, 1, 0], landmark=14.0)
    >>> labels.tolist(), included.tolist()
    ([1, 0, -1], [True, True, False])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv

from validation.survival.checks import (
    StatisticUndefinedError,
    SurvivalInputError,
    as_durations,
    as_events,
    check_lengths,
)

__all__ = ["EXCLUDED", "LandmarkLabels", "ipcw_weights", "landmark_labels"]

#: the label value of a patient censored at or before the landmark (never a valid class label)
EXCLUDED = -1


@dataclass(frozen=True)
class LandmarkLabels:
    """Landmark labels of a cohort; unpacks as ``labels, included = landmark_labels(...)``.

    Attributes:
        labels: int8 per patient: 1 event-free beyond the landmark, 0 event at or before it,
            :data:`EXCLUDED` (-1) censored at or before it. Use ``labels[included]``.
        included: bool per patient, False for the censored-before-landmark patients.
        weights: float per patient: 1.0 (``exclude``) or the IPCW weight (``ipcw``); 0 if excluded.
        method: ``exclude`` or ``ipcw``.
    """

    labels: np.ndarray
    included: np.ndarray
    weights: np.ndarray
    method: str

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.labels, self.included))

    @property
    def n_excluded(self) -> int:
        """Number of patients censored at or before the landmark."""
        return int((~self.included).sum())


def _check_landmark(landmark: Any) -> float:
    try:
        value = float(landmark)
    except (TypeError, ValueError) as e:
        raise SurvivalInputError(f"landmark must be a number, got {landmark!r}") from e
    if not (np.isfinite(value) and value > 0):
        raise SurvivalInputError(f"landmark must be finite and > 0, got {landmark!r}")
    return value


def landmark_labels(
    durations: Any, events: Any, landmark: float, *, method: str = "exclude"
) -> LandmarkLabels:
    """Binary landmark labels (1 = event-free beyond ``landmark``) and who has a known label.

    Args:
        durations: follow-up per patient (same unit as ``landmark``), finite and >= 0.
        events: 1 = event observed, 0 = censored.
        landmark: the landmark time, > 0.
        method: ``exclude`` (complete case, weights 1) or ``ipcw`` (weights ``1/G(min(T-, landmark))``).

    Returns:
        A :class:`LandmarkLabels`; it unpacks as ``(labels, included)``.

    Raises:
        SurvivalInputError: bad durations/events/landmark/method, or lengths differ.
    """
    t, e = as_durations(durations), as_events(events)
    check_lengths(durations=t, events=e)
    lm = _check_landmark(landmark)
    if method not in ("exclude", "ipcw"):
        raise SurvivalInputError(f"method must be 'exclude' or 'ipcw', got {method!r}")
    survived = t > lm
    included = survived | (e == 1)
    labels = np.where(survived, 1, np.where(included, 0, EXCLUDED)).astype(np.int8)
    if method == "exclude":
        weights = included.astype(float)
    else:
        weights = ipcw_weights(t, e, lm)
    return LandmarkLabels(labels=labels, included=included, weights=weights, method=method)


def ipcw_weights(durations: Any, events: Any, landmark: float) -> np.ndarray:
    """Inverse-probability-of-censoring weights for a landmark label.

    ``w_i = 1/G(T_i-)`` for an event at ``T_i <= landmark`` (censoring just before the event
    time, Uno et al. 2007), ``1/G(landmark)`` for follow-up beyond the landmark and 0 for a
    patient censored at or before it. ``G`` is the Kaplan-Meier censoring survival of these same
    patients (sksurv's ``CensoringDistributionEstimator``). ``sum(w * label) / n`` equals the
    Kaplan-Meier survival at the landmark; without tied times ``sum(w) == n``.

    Args:
        durations: follow-up per patient.
        events: 1 = event, 0 = censored.
        landmark: the landmark time, > 0.

    Returns:
        Float array of weights, one per patient.

    Raises:
        SurvivalInputError: bad inputs.
        StatisticUndefinedError: everybody is censored by the landmark (``G(landmark) == 0``).
    """
    t, e = as_durations(durations), as_events(events)
    check_lengths(durations=t, events=e)
    lm = _check_landmark(landmark)
    y = Surv.from_arrays(event=e.astype(bool), time=t)
    cens = CensoringDistributionEstimator().fit(y)
    g_landmark = float(cens.predict_proba(np.array([lm]))[0])
    survived = t > lm
    if survived.any() and g_landmark <= 0:
        raise StatisticUndefinedError(f"the censoring survival G({lm:g}) is 0: IPCW weights undefined")
    weights = np.zeros(t.size)
    early_event = (~survived) & (e == 1)
    if early_event.any():  # G(T-): a censoring tied with the event happens after it
        g_before = cens.predict_proba(np.nextafter(t[early_event], -np.inf))
        weights[early_event] = 1.0 / g_before
    weights[survived] = 1.0 / g_landmark if survived.any() else 0.0
    return weights
