"""The prognostic study runner: train on internal, freeze a threshold on validation, report.

:func:`run_study` takes a :class:`~validation.survival.cohorts.StudyCohort` and a mapping
``name -> Scorer`` and, for every competitor:

1. fits it on the internal ``train`` split;
2. chooses the risk threshold on the internal ``val`` split (Youden's J by default) and freezes it;
3. scores every evaluation cohort: the internal ``test`` split and the external sites (each site,
   plus all external sites pooled when there are several; one pooled cohort when the cohort says
   ``external_by_site=False``), and computes n, events, excluded-as-censored, AUC [95% CI]
   (stratified bootstrap), accuracy at the frozen threshold, DeLong P against the reference
   competitor, log-rank P between the predicted risk groups (full follow-up), Harrell's C-index
   and the IPCW Brier score at the landmark, and a binned calibration curve.

A statistic that is undefined on a cohort (one class, a single-patient risk group, ...) is recorded
as ``None`` with a ``not_computed`` :class:`StudyWarning`; so is a competitor that cannot be trained
on the internal data (one class, no convergence), which is then left out. A cohort below the power
thresholds (``min_patients``, ``min_events``, ``min_per_class``, ``min_group``) keeps its numbers
and gets an ``underpowered`` warning; ``results.power_check`` turns the warnings into a pass/fail
result for the orchestration layer's asset check. Nothing here crashes on a small cohort;
malformed data still raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from lifelines.exceptions import ConvergenceError

from validation.survival.calibration import brier_at_landmark, c_index, calibration_curve
from validation.survival.checks import StatisticUndefinedError
from validation.survival.cohorts import StudyCohort
from validation.survival.competitors import Scorer
from validation.survival.labels import landmark_labels
from validation.survival.logrank import logrank_by_group
from validation.survival.results import CohortSummary, CompetitorStats, StudyResult, StudyWarning
from validation.survival.stats import auc_ci, delong_test
from validation.survival.thresholds import RiskThreshold, choose_threshold

__all__ = ["run_study"]


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------


def _evaluation_cohorts(cohort: StudyCohort) -> dict[str, np.ndarray]:
    p = cohort.patients
    out = {"internal_test": (p["site_role"] == "internal").to_numpy() & (p["split"] == "test").to_numpy()}
    external = (p["site_role"] == "external").to_numpy()
    sites = sorted(p.loc[external, "site"].unique())
    if cohort.external_by_site:
        for site in sites:
            out[f"external_{site}"] = external & (p["site"] == site).to_numpy()
    if not cohort.external_by_site or len(sites) > 1:
        out["external_all"] = external
    return {k: v for k, v in out.items() if v.any()}


class _Recorder:
    """Collects warnings; ``attempt`` runs a statistic and records StatisticUndefinedError."""

    def __init__(self) -> None:
        self.warnings: list[StudyWarning] = []

    def warn(self, cohort: str, competitor: str | None, statistic: str, kind: str, message: str) -> None:
        self.warnings.append(StudyWarning(cohort, competitor, statistic, kind, message))

    def attempt(self, cohort: str, competitor: str, statistic: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StatisticUndefinedError as err:
            self.warn(cohort, competitor, statistic, "not_computed", str(err))
            return None


def _fit(name: str, scorer: Scorer, cohort: StudyCohort, rec: _Recorder) -> bool:
    """Fit on internal train; a fit the data cannot support becomes a warning (False)."""
    p = cohort.patients
    train = p[(p["site_role"] == "internal") & (p["split"] == "train")]
    if train.empty:
        rec.warn("internal_train", name, "fit", "not_computed", "no internal training patient")
        return False
    try:
        scorer.fit(train, landmark=cohort.landmark)
    except (StatisticUndefinedError, ConvergenceError) as err:
        msg = f"{type(err).__name__} on {len(train)} training patients: {err}".splitlines()[0]
        rec.warn("internal_train", name, "fit", "not_computed", msg)
        return False
    return True


def _threshold(
    name: str, scorer: Scorer, cohort: StudyCohort, method: str, rec: _Recorder
) -> RiskThreshold | None:
    p = cohort.patients
    val = p[(p["site_role"] == "internal") & (p["split"] == "val")]
    if val.empty:
        rec.warn("internal_val", name, "threshold", "not_computed", "no internal validation patient")
        return None
    labels, included = landmark_labels(val["duration"], val["event"], cohort.landmark)
    if not included.any():
        rec.warn(
            "internal_val", name, "threshold", "not_computed", "no validation patient with a known label"
        )
        return None
    scores = scorer.predict(val)
    return rec.attempt(
        "internal_val",
        name,
        "threshold",
        lambda: choose_threshold(labels[included], scores[included], method=method),
    )


def _summary(frame: pd.DataFrame, landmark: float) -> tuple[CohortSummary, np.ndarray, np.ndarray]:
    labels, included = landmark_labels(frame["duration"], frame["event"], landmark)
    summary = CohortSummary(
        n=len(frame),
        events=int(frame["event"].sum()),
        included=int(included.sum()),
        events_by_landmark=int((labels == 0).sum()),
        event_free_beyond=int((labels == 1).sum()),
        excluded_censored=int((~included).sum()),
    )
    return summary, labels, included


def _power_warnings(name: str, s: CohortSummary, limits: Mapping[str, int], rec: _Recorder) -> None:
    if s.n < limits["min_patients"]:
        rec.warn(name, None, "cohort", "underpowered", f"n={s.n} < min_patients={limits['min_patients']}")
    if s.events < limits["min_events"]:
        rec.warn(
            name,
            None,
            "logrank/c_index",
            "underpowered",
            f"events={s.events} < min_events={limits['min_events']}",
        )
    smaller = min(s.events_by_landmark, s.event_free_beyond)
    if smaller < limits["min_per_class"]:
        rec.warn(
            name,
            None,
            "auc/delong/calibration",
            "underpowered",
            f"events by landmark={s.events_by_landmark}, event-free beyond={s.event_free_beyond}; "
            f"smaller class < min_per_class={limits['min_per_class']}",
        )


def _competitor_stats(
    cohort_name: str,
    comp: str,
    frame: pd.DataFrame,
    labels: np.ndarray,
    included: np.ndarray,
    scores: np.ndarray,
    threshold: RiskThreshold | None,
    landmark: float,
    opts: Mapping[str, int],
    rec: _Recorder,
) -> CompetitorStats:
    """One competitor's statistics on one cohort; ``opts``: ``n_boot``, ``seed``, ``min_group``."""
    st = CompetitorStats()
    t, e = frame["duration"].to_numpy(), frame["event"].to_numpy()
    y, s = labels[included], scores[included]
    if y.size == 0:
        rec.warn(cohort_name, comp, "all", "not_computed", "no patient with a known landmark label")
        return st
    ci = rec.attempt(cohort_name, comp, "auc", lambda: auc_ci(y, s, n_boot=opts["n_boot"], seed=opts["seed"]))
    if ci is not None:
        st.auc, st.auc_low, st.auc_high = ci
    st.c_index = rec.attempt(cohort_name, comp, "c_index", lambda: c_index(t, e, scores))
    st.brier = rec.attempt(cohort_name, comp, "brier", lambda: brier_at_landmark(t, e, scores, landmark))
    st.calibration = calibration_curve(y, s, n_bins=5).to_dict()
    if threshold is None:
        rec.warn(
            cohort_name, comp, "accuracy/logrank", "not_computed", "no frozen threshold (see internal_val)"
        )
        return st
    st.accuracy = threshold.accuracy(y, s)
    groups = threshold.apply(scores)
    st.risk_groups = {
        str(k): int(v) for k, v in zip(*np.unique(groups.astype(str), return_counts=True), strict=True)
    }
    min_group = opts["min_group"]
    if len(st.risk_groups) == 2 and min(st.risk_groups.values()) < min_group:
        rec.warn(
            cohort_name,
            comp,
            "logrank",
            "underpowered",
            f"risk groups {st.risk_groups}; min_group={min_group}",
        )
    lr = rec.attempt(cohort_name, comp, "logrank", lambda: logrank_by_group(t, e, groups))
    if lr is not None:
        st.logrank_chi2, st.logrank_p = float(lr.test_statistic), float(lr.p_value)
    return st


def run_study(
    cohort: StudyCohort,
    competitors: Mapping[str, Scorer],
    *,
    reference: str,
    threshold_method: str = "youden",
    n_boot: int = 2000,
    seed: int = 0,
    min_patients: int = 20,
    min_events: int = 10,
    min_per_class: int = 10,
    min_group: int = 5,
) -> StudyResult:
    """Run one prognostic study (see the module docstring for the protocol).

    Args:
        cohort: the study's patients (splits, outcomes, covariates, images).
        competitors: ``{name: Scorer}``; each is fitted here on the internal train split.
        reference: the competitor DeLong tests compare against (the assistant when present).
        threshold_method: ``youden`` or ``median`` (see :mod:`validation.survival.thresholds`).
        n_boot: bootstrap resamples of the AUC CI.
        seed: bootstrap seed.
        min_patients: cohorts smaller than this get an ``underpowered`` warning.
        min_events: fewer observed events -> ``underpowered`` (log-rank, C-index).
        min_per_class: fewer patients in the smaller landmark class -> ``underpowered`` (AUC).
        min_group: a smaller predicted risk group -> ``underpowered`` (log-rank).

    Returns:
        The :class:`StudyResult`.

    Raises:
        ValueError: no competitor, or ``reference`` not among them.
    """
    if not competitors or reference not in competitors:
        raise ValueError(f"reference {reference!r} must be one of the competitors {sorted(competitors)}")
    rec = _Recorder()
    fitted = {n: sc for n, sc in competitors.items() if _fit(n, sc, cohort, rec)}
    thresholds = {n: _threshold(n, sc, cohort, threshold_method, rec) for n, sc in fitted.items()}
    limits = {"min_patients": min_patients, "min_events": min_events, "min_per_class": min_per_class}
    opts = {"n_boot": n_boot, "seed": seed, "min_group": min_group}
    cohorts, members, all_scores = {}, {}, {n: [] for n in fitted}
    for cname, mask in _evaluation_cohorts(cohort).items():
        frame = cohort.patients[mask]
        summary, scores = _evaluate_cohort(
            cname, frame, fitted, thresholds, cohort.landmark, reference, opts, rec
        )
        _power_warnings(cname, summary, limits, rec)
        for n, sc in scores.items():
            all_scores[n].append(pd.Series(sc, index=frame["patient_id"].to_numpy()))
        cohorts[cname], members[cname] = summary, frame["patient_id"].tolist()
    settings = {
        "threshold_method": threshold_method,
        "n_boot": n_boot,
        "seed": seed,
        "min_patients": min_patients,
        "min_events": min_events,
        "min_per_class": min_per_class,
        "min_group": min_group,
        "competitors": list(competitors),
        "fitted": list(fitted),
        "notes": cohort.notes,
    }
    scores_by_comp = {n: pd.concat(v)[lambda x: ~x.index.duplicated()] for n, v in all_scores.items()}
    return StudyResult(
        name=cohort.name,
        endpoint=cohort.endpoint,
        landmark=cohort.landmark,
        time_unit=cohort.time_unit,
        reference=reference,
        thresholds=thresholds,
        cohorts=cohorts,
        scores=scores_by_comp,
        members=members,
        patients=cohort.patients,
        warnings=rec.warnings,
        settings=settings,
    )


def _evaluate_cohort(
    cname: str,
    frame: pd.DataFrame,
    fitted: Mapping[str, Scorer],
    thresholds: Mapping[str, RiskThreshold | None],
    landmark: float,
    reference: str,
    opts: Mapping[str, int],
    rec: _Recorder,
) -> tuple[CohortSummary, dict[str, np.ndarray]]:
    """Counts, every competitor's statistics and the DeLong tests on one evaluation cohort."""
    summary, labels, included = _summary(frame, landmark)
    scores = {n: np.asarray(sc.predict(frame), dtype=float) for n, sc in fitted.items()}
    for n, sc in scores.items():
        summary.competitors[n] = _competitor_stats(
            cname, n, frame, labels, included, sc, thresholds[n], landmark, opts, rec
        )
    _delong(cname, reference, labels[included], {n: sc[included] for n, sc in scores.items()}, summary, rec)
    return summary, scores


def _delong(
    cname: str,
    reference: str,
    labels: np.ndarray,
    scores: Mapping[str, np.ndarray],
    summary: CohortSummary,
    rec: _Recorder,
) -> None:
    if reference not in scores:
        rec.warn(cname, reference, "delong", "not_computed", f"reference {reference!r} was not fitted")
        return
    if labels.size == 0:
        return  # recorded by _competitor_stats
    for n, s in scores.items():
        if n == reference:
            continue
        zp = rec.attempt(cname, n, "delong", lambda s=s: delong_test(labels, scores[reference], s))
        if zp is not None:
            summary.competitors[n].delong_z, summary.competitors[n].delong_p = zp
