"""Input validation shared by the survival statistics, and the two error types they raise.

* :class:`SurvivalInputError`: the input is malformed (negative or NaN duration, an event that is
  not 0/1, arrays of different lengths, a score that is not finite). The message names the
  argument and the first offending index, so the caller can find the patient.
* :class:`StatisticUndefinedError`: the input is well formed but the statistic does not exist on it
  (one class only, a group with a single patient, zero DeLong variance). Study runners catch this
  one, and only this one, and record a warning instead of a number.

Both subclass :class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "StatisticUndefinedError",
    "SurvivalInputError",
    "as_durations",
    "as_events",
    "as_labels",
    "as_scores",
    "check_lengths",
]


class SurvivalInputError(ValueError):
    """Malformed input to a survival statistic; the message names the argument and the index."""


class StatisticUndefinedError(ValueError):
    """The statistic is undefined on this (well-formed) input, e.g. only one class of labels."""


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise SurvivalInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise SurvivalInputError(f"{name} is empty")
    return arr


def _as_float(values: Any, name: str) -> np.ndarray:
    arr = _as_1d(values, name)
    try:
        return arr.astype(float)
    except (TypeError, ValueError) as e:
        raise SurvivalInputError(f"{name} must be numeric, got dtype {arr.dtype}") from e


def as_durations(values: Any, name: str = "durations") -> np.ndarray:
    """Float array of follow-up times; raises on NaN, infinite or negative entries."""
    arr = _as_float(values, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_bad(bad)
        raise SurvivalInputError(f"{name}[{i}] is {float(arr[i])!r}: durations must be finite numbers")
    if (arr < 0).any():
        i = _first_bad(arr < 0)
        raise SurvivalInputError(f"{name}[{i}] is {float(arr[i])!r}: durations must be >= 0")
    return arr


def _as_binary(values: Any, name: str, what: str) -> np.ndarray:
    arr = _as_float(values, name)
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        i = _first_bad(bad)
        raise SurvivalInputError(f"{name}[{i}] is {float(arr[i])!r}: {what} must be 0 or 1")
    return arr.astype(np.int8)


def as_events(values: Any, name: str = "events") -> np.ndarray:
    """0/1 int8 array (1 = event observed, 0 = censored); raises on anything else.

    lifelines' NCCTG ``status`` is already 0/1; R's ``survival::lung`` codes 1 = censored,
    2 = dead and must be recoded (``status - 1``) before it gets here.
    """
    return _as_binary(values, name, "events (1 = event, 0 = censored)")


def as_labels(values: Any, name: str = "labels", *, both_classes: bool = True) -> np.ndarray:
    """0/1 int8 array of binary labels; with ``both_classes`` raises unless 0 and 1 both occur."""
    arr = _as_binary(values, name, "labels")
    if both_classes and (arr.min() == arr.max()):
        raise StatisticUndefinedError(
            f"{name} holds only class {int(arr[0])} ({arr.size} values): the statistic needs "
            "patients of both classes"
        )
    return arr


def as_scores(values: Any, name: str = "scores", *, probability: bool = False) -> np.ndarray:
    """Finite float array of model scores; with ``probability`` also checks 0 <= s <= 1."""
    arr = _as_float(values, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_bad(bad)
        raise SurvivalInputError(f"{name}[{i}] is {float(arr[i])!r}: scores must be finite")
    if probability and ((arr < 0) | (arr > 1)).any():
        i = _first_bad((arr < 0) | (arr > 1))
        raise SurvivalInputError(f"{name}[{i}] is {float(arr[i])!r}: probabilities must lie in [0, 1]")
    return arr


def check_lengths(**arrays: Sequence[Any] | np.ndarray) -> int:
    """Return the common length of the named arrays; raise naming them if they differ."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise SurvivalInputError(f"length mismatch: {listed}; one entry per patient is expected")
    return next(iter(lengths.values()))
