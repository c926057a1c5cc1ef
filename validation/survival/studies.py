"""The platform's study set: NCCTG (real, offline) and the three demo-corpus imaging studies.

* :func:`demo_competitors` / :func:`ncctg_competitors`: the competitor mapping of each study.
  Imaging studies: ``assistant`` (only when the caller passes ``score_fn``), ``task_specific``
  (logistic regression on ``feature_fn`` image features) and ``clinical_cox``. NCCTG (no images):
  ``clinical_cox`` and ``task_specific`` as a logistic regression on the same covariates.
* :func:`run_study_set`: load, run and write one report folder per study under ``out_dir``.
  The DeLong reference is ``assistant`` when present, else ``clinical_cox``.

CLI (no assistant, model-free pixel features)::

    python -m validation.survival --root data/demo --out data/demo/prognosis \
        --studies ncctg lung_tki nsclc gbm --n-boot 2000
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from validation.survival.cohorts import StudyCohort, load_demo_cohort, load_ncctg_cohort
from validation.survival.competitors import (
    AssistantScorer,
    CovariateRows,
    CoxClinicalScorer,
    ImageFeatureRows,
    LinearFeatureScorer,
    Scorer,
    mean_pixel_features,
)
from validation.survival.report import ReportFiles, write_study_report
from validation.survival.results import StudyResult
from validation.survival.study import run_study

__all__ = ["DEMO_STUDIES", "demo_competitors", "main", "ncctg_competitors", "run_study_set"]

DEMO_STUDIES: tuple[str, ...] = ("lung_tki", "nsclc", "gbm")
ScoreFn = Callable[[list[str]], Sequence[float] | np.ndarray]
FeatureFn = Callable[[list[str]], np.ndarray]


def demo_competitors(
    cohort: StudyCohort, *, feature_fn: FeatureFn, score_fn: ScoreFn | None = None
) -> dict[str, Scorer]:
    """Competitors of an imaging study: [assistant,] task_specific, clinical_cox.

    Args:
        cohort: an imaging cohort (with ``images``).
        feature_fn: ``feature_fn(absolute image paths) -> (n, d)`` frozen image features.
        score_fn: the assistant's ``score_fn(patient_ids) -> probabilities``; None leaves it out.

    Returns:
        ``{name: Scorer}``.
    """
    if cohort.images is None:
        raise ValueError(f"cohort {cohort.name} has no images: use ncctg_competitors for clinical-only data")
    out: dict[str, Scorer] = {}
    if score_fn is not None:
        out["assistant"] = AssistantScorer(score_fn)
    out["task_specific"] = LinearFeatureScorer(ImageFeatureRows(cohort.images, feature_fn, per=cohort.per))
    out["clinical_cox"] = CoxClinicalScorer(cohort.numeric, cohort.categorical)
    return out


def ncctg_competitors(cohort: StudyCohort) -> dict[str, Scorer]:
    """Competitors of the NCCTG study: clinical_cox and a landmark logistic regression."""
    return {
        "clinical_cox": CoxClinicalScorer(cohort.numeric, cohort.categorical),
        "task_specific": LinearFeatureScorer(CovariateRows(cohort.numeric)),
    }


def run_study_set(
    *,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    studies: Sequence[str] = ("ncctg", *DEMO_STUDIES),
    feature_fn: FeatureFn = mean_pixel_features,
    score_fns: Mapping[str, ScoreFn] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    threshold_method: str = "youden",
) -> dict[str, tuple[StudyResult, ReportFiles]]:
    """Run the studies and write ``out_dir/<study>/`` reports.

    Args:
        root: the demo profile's data root (unused by ``ncctg``).
        out_dir: parent folder of the report folders.
        studies: ``ncctg`` and/or demo study names.
        feature_fn: image features of the task-specific competitor.
        score_fns: ``{study: assistant score_fn}``; studies without one run without the assistant.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        threshold_method: ``youden`` or ``median``.

    Returns:
        ``{study: (result, report files)}``.
    """
    out = {}
    for name in studies:
        if name == "ncctg":
            cohort = load_ncctg_cohort()
            comps = ncctg_competitors(cohort)
        else:
            cohort = load_demo_cohort(root, name)
            comps = demo_competitors(cohort, feature_fn=feature_fn, score_fn=(score_fns or {}).get(name))
        reference = "assistant" if "assistant" in comps else "clinical_cox"
        result = run_study(
            cohort, comps, reference=reference, threshold_method=threshold_method, n_boot=n_boot, seed=seed
        )
        out[name] = (result, write_study_report(result, Path(out_dir) / name))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: run the study set without the assistant (pixel-statistics features)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/demo", help="data root of the demo profile")
    ap.add_argument("--out", required=True, help="parent folder of the study reports")
    ap.add_argument("--studies", nargs="+", default=["ncctg", *DEMO_STUDIES])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold-method", choices=("youden", "median"), default="youden")
    args = ap.parse_args(argv)
    done = run_study_set(
        root=args.root,
        out_dir=args.out,
        studies=args.studies,
        n_boot=args.n_boot,
        seed=args.seed,
        threshold_method=args.threshold_method,
    )
    for name, (result, files) in done.items():
        print(f"{name}: {len(result.cohorts)} cohorts, {len(result.warnings)} warnings -> {files.markdown}")
