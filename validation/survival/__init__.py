"""Survival analysis and prognostic studies (lifelines, scikit-survival where lifelines has nothing).

Statistics: :func:`landmark_labels` (+ IPCW :func:`ipcw_weights`), :func:`auc_ci` (vectorised
stratified bootstrap), :func:`delong_test` (paired, Sun & Xu 2014), :func:`logrank_by_group`,
:func:`km_median`, :func:`c_index`, :func:`brier_at_landmark`, :func:`calibration_curve`, frozen
risk thresholds (:func:`choose_threshold` -> :class:`RiskThreshold`), plots taking ``ax=None``.
Studies: cohorts (:func:`load_demo_cohort`, :func:`load_ncctg_cohort`), competitors (mapping
``name -> Scorer``), :func:`run_study`, :func:`power_check`, :func:`write_study_report`,
:func:`run_study_set`. Scores are predicted probabilities of being event-free beyond the landmark.
"""

from validation.survival.calibration import CalibrationCurve, brier_at_landmark, c_index, calibration_curve
from validation.survival.checks import StatisticUndefinedError, SurvivalInputError
from validation.survival.cohorts import StudyCohort, load_demo_cohort, load_ncctg_cohort, split_institutions
from validation.survival.competitors import (
    AssistantScorer,
    CovariateRows,
    CoxClinicalScorer,
    ImageFeatureRows,
    LinearFeatureScorer,
    Scorer,
    mean_pixel_features,
)
from validation.survival.labels import EXCLUDED, LandmarkLabels, ipcw_weights, landmark_labels
from validation.survival.logrank import km_median, logrank_by_group
from validation.survival.plots import plot_calibration, plot_km_by_group
from validation.survival.report import ReportFiles, write_study_report
from validation.survival.results import (
    CohortSummary,
    CompetitorStats,
    PowerCheck,
    StudyResult,
    StudyWarning,
    power_check,
)
from validation.survival.stats import auc, auc_bootstrap, auc_ci, delong_test
from validation.survival.studies import demo_competitors, ncctg_competitors, run_study_set
from validation.survival.study import run_study
from validation.survival.thresholds import HIGH_RISK, LOW_RISK, RiskThreshold, choose_threshold

__all__ = [
    "EXCLUDED",
    "HIGH_RISK",
    "LOW_RISK",
    "AssistantScorer",
    "CalibrationCurve",
    "CohortSummary",
    "CompetitorStats",
    "CovariateRows",
    "CoxClinicalScorer",
    "ImageFeatureRows",
    "LandmarkLabels",
    "LinearFeatureScorer",
    "PowerCheck",
    "ReportFiles",
    "RiskThreshold",
    "Scorer",
    "StatisticUndefinedError",
    "StudyCohort",
    "StudyResult",
    "StudyWarning",
    "SurvivalInputError",
    "auc",
    "auc_bootstrap",
    "auc_ci",
    "brier_at_landmark",
    "c_index",
    "calibration_curve",
    "choose_threshold",
    "delong_test",
    "demo_competitors",
    "ipcw_weights",
    "km_median",
    "landmark_labels",
    "load_demo_cohort",
    "load_ncctg_cohort",
    "logrank_by_group",
    "mean_pixel_features",
    "ncctg_competitors",
    "plot_calibration",
    "plot_km_by_group",
    "power_check",
    "run_study",
    "run_study_set",
    "split_institutions",
    "write_study_report",
]
