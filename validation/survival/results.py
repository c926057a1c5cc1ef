"""Result types of a prognostic study and the power check the orchestration layer reads.

* :class:`StudyResult`: numbers per evaluation cohort and competitor (:class:`CohortSummary`,
  :class:`CompetitorStats`), the frozen thresholds, per-patient scores and the warnings;
  :meth:`StudyResult.to_dict` is the JSON written next to the report.
* :class:`StudyWarning`: a statistic not computed (``not_computed``) or computed on fewer
  patients/events than the study's thresholds (``underpowered``).
* :func:`power_check`: pass/fail over the warnings, for a (non-blocking) Dagster asset check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from validation.survival.thresholds import RiskThreshold

__all__ = ["CohortSummary", "CompetitorStats", "PowerCheck", "StudyResult", "StudyWarning", "power_check"]


@dataclass(frozen=True)
class StudyWarning:
    """A statistic that was not computed, or computed on too few patients.

    Attributes:
        cohort: evaluation cohort (or ``internal_val`` / ``internal_train``).
        competitor: competitor name, None for cohort-level warnings.
        statistic: ``cohort``, ``auc``, ``delong``, ``logrank``, ``c_index``, ``brier``, ``threshold``...
        kind: ``not_computed`` or ``underpowered``.
        message: the reason, with the counts.
    """

    cohort: str
    competitor: str | None
    statistic: str
    kind: str
    message: str


@dataclass
class CompetitorStats:
    """Numbers of one competitor on one cohort (None where not computed; see the warnings)."""

    auc: float | None = None
    auc_low: float | None = None
    auc_high: float | None = None
    accuracy: float | None = None
    delong_z: float | None = None
    delong_p: float | None = None
    logrank_chi2: float | None = None
    logrank_p: float | None = None
    risk_groups: dict[str, int] = field(default_factory=dict)
    c_index: float | None = None
    brier: float | None = None
    calibration: dict[str, list[float]] | None = None


@dataclass
class CohortSummary:
    """Counts of one evaluation cohort (``events``: observed over the whole follow-up)."""

    n: int
    events: int
    included: int
    events_by_landmark: int
    event_free_beyond: int
    excluded_censored: int
    competitors: dict[str, CompetitorStats] = field(default_factory=dict)


@dataclass
class StudyResult:
    """Everything a study report needs (numbers, thresholds, scores, warnings).

    Attributes:
        name / endpoint / landmark / time_unit: the study.
        reference: competitor the DeLong tests compare against.
        thresholds: frozen threshold per competitor (None if it could not be chosen).
        cohorts: ``{cohort name: CohortSummary}`` in report order.
        scores: ``{competitor: Series of scores indexed by patient_id}`` (every evaluated patient).
        members: ``{cohort name: patient ids}``.
        patients: the study's patient frame (durations for the figures).
        warnings: every :class:`StudyWarning`.
        settings: run settings (bootstrap, seed, thresholds of power) and cohort notes.
    """

    name: str
    endpoint: str
    landmark: float
    time_unit: str
    reference: str
    thresholds: dict[str, RiskThreshold | None]
    cohorts: dict[str, CohortSummary]
    scores: dict[str, pd.Series]
    members: dict[str, list[str]]
    patients: pd.DataFrame
    warnings: list[StudyWarning]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """All numbers as plain JSON-able data (no per-patient scores)."""
        return {
            "study": self.name,
            "endpoint": self.endpoint,
            "landmark": self.landmark,
            "time_unit": self.time_unit,
            "reference": self.reference,
            "thresholds": {k: (v.to_dict() if v else None) for k, v in self.thresholds.items()},
            "cohorts": {k: asdict(v) for k, v in self.cohorts.items()},
            "warnings": [asdict(w) for w in self.warnings],
            "settings": self.settings,
        }


@dataclass(frozen=True)
class PowerCheck:
    """Outcome of :func:`power_check`: ``passed`` is False if any warning was recorded."""

    passed: bool
    reasons: list[str]
    n_warnings: int


def power_check(result: StudyResult) -> PowerCheck:
    """Pass only if no statistic was skipped or computed on too few patients/events.

    Args:
        result: a study result.

    Returns:
        ``PowerCheck(passed, reasons, n_warnings)``, one reason line per warning.
    """
    reasons = [
        f"{w.cohort}/{w.competitor or '-'}/{w.statistic}: {w.kind}: {w.message}" for w in result.warnings
    ]
    return PowerCheck(passed=not reasons, reasons=reasons, n_warnings=len(reasons))
