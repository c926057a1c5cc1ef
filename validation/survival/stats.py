"""Discrimination statistics for landmark labels: AUC, its stratified bootstrap CI, paired DeLong.

* :func:`auc`: the Mann-Whitney AUC, ``P(score_case > score_control) + 0.5 P(tie)``.
* :func:`auc_bootstrap` / :func:`auc_ci`: stratified bootstrap over patients (cases and controls
  resampled separately, so every resample keeps the observed class sizes), percentile interval.
  Vectorised: a resample is a row of an index matrix; its AUC is a sum over the drawn cases of
  the number of drawn controls below them, read from a cumulative count of the drawn controls
  over the sorted control scores (``O(n)`` per resample, no sort, no Python loop per resample).
  Rows are processed in chunks of at most ``max_elements`` matrix entries to bound memory.
* :func:`delong_test`: paired DeLong test of two AUCs on the same patients (DeLong, DeLong &
  Clarke-Pearson, Biometrics 1988), fast midrank algorithm of Sun & Xu (IEEE SPL 21(11), 2014),
  following the reference implementation https://github.com/yandexdataschool/roc_comparison.

Convention: label 1 is the "positive" class and higher scores should mean label 1. For landmark
labels that is "event-free beyond the landmark", and the score is the predicted probability of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from validation.survival.checks import (
    StatisticUndefinedError,
    SurvivalInputError,
    as_labels,
    as_scores,
    check_lengths,
)

__all__ = ["auc", "auc_bootstrap", "auc_ci", "delong_test", "stratified_indices"]


def _split(labels: Any, scores: Any, scores_name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(labels)
    s = as_scores(scores, scores_name)
    check_lengths(labels=y, **{scores_name: s})
    return s[y == 1], s[y == 0]


def auc(labels: Any, scores: Any) -> float:
    """Mann-Whitney AUC (ties count one half).

    Args:
        labels: 0/1 per patient, both classes present.
        scores: finite score per patient; higher means label 1 more likely.

    Returns:
        The AUC in [0, 1].

    Raises:
        SurvivalInputError: malformed labels or scores, or lengths differ.
        StatisticUndefinedError: only one class in ``labels``.
    """
    cases, controls = _split(labels, scores)
    ranks = rankdata(np.concatenate([cases, controls]))
    m, n = cases.size, controls.size
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def stratified_indices(
    n_cases: int, n_controls: int, n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_boot`` stratified resamples: ``(case_idx (n_boot, n_cases), control_idx (n_boot, n_controls))``.

    Row ``b`` is drawn from ``rng``'s stream after rows ``0..b-1`` (uniforms in row-major order,
    ``floor(u * n)``), so drawing the rows in chunks of any size gives the same resamples.
    """
    u = rng.random((n_boot, n_cases + n_controls))
    cases = (u[:, :n_cases] * n_cases).astype(np.int32)
    controls = (u[:, n_cases:] * n_controls).astype(np.int32)
    return cases, controls


def _resampled_aucs(
    cases: np.ndarray, controls: np.ndarray, case_idx: np.ndarray, control_idx: np.ndarray
) -> np.ndarray:
    """AUC of each resample row, given index matrices into ``cases`` and ``controls``."""
    order = np.argsort(controls, kind="stable")
    position = np.empty(controls.size, dtype=np.int32)
    position[order] = np.arange(controls.size, dtype=np.int32)
    sorted_controls = controls[order]
    below = np.searchsorted(sorted_controls, cases, side="left")  # controls < case
    upto = np.searchsorted(sorted_controls, cases, side="right")  # controls <= case
    b, n = control_idx.shape
    flat = (position[control_idx] + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    counts = np.bincount(flat, minlength=b * n).reshape(b, n)
    cum = np.zeros((b, n + 1), dtype=np.int64)  # cum[r, k]: drawn controls among the k lowest
    np.cumsum(counts, axis=1, out=cum[:, 1:])
    lo = np.take_along_axis(cum, below[case_idx], axis=1)
    hi = np.take_along_axis(cum, upto[case_idx], axis=1)
    return (lo.sum(axis=1) + 0.5 * (hi - lo).sum(axis=1)) / (case_idx.shape[1] * n)


def auc_bootstrap(
    labels: Any, scores: Any, n_boot: int = 2000, seed: int = 0, *, max_elements: int = 1_000_000
) -> np.ndarray:
    """AUCs of ``n_boot`` stratified bootstrap resamples (cases and controls resampled separately).

    Args:
        labels: 0/1 per patient, both classes present.
        scores: finite score per patient.
        n_boot: number of resamples (>= 1).
        seed: seed of ``numpy.random.default_rng``; same seed, same resamples (whatever ``max_elements``).
        max_elements: bound on the index-matrix entries held at once (peak memory ~ 40 bytes each).

    Returns:
        Float array of ``n_boot`` resampled AUCs.

    Raises:
        SurvivalInputError: malformed input or ``n_boot < 1``.
        StatisticUndefinedError: only one class in ``labels``.
    """
    cases, controls = _split(labels, scores)
    if int(n_boot) < 1 or int(max_elements) < 1:
        raise SurvivalInputError(f"n_boot and max_elements must be >= 1, got {n_boot}, {max_elements}")
    rng = np.random.default_rng(seed)
    chunk = max(1, int(max_elements) // (cases.size + controls.size))
    out = np.empty(int(n_boot))
    for start in range(0, int(n_boot), chunk):
        rows = min(chunk, int(n_boot) - start)
        case_idx, control_idx = stratified_indices(cases.size, controls.size, rows, rng)
        out[start : start + rows] = _resampled_aucs(cases, controls, case_idx, control_idx)
    return out


def auc_ci(
    labels: Any, scores: Any, n_boot: int = 2000, seed: int = 0, *, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC with a stratified-bootstrap percentile confidence interval.

    Args:
        labels: 0/1 per patient, both classes present.
        scores: finite score per patient.
        n_boot: bootstrap resamples.
        seed: random seed (results are reproducible).
        level: coverage of the interval, e.g. 0.95.

    Returns:
        ``(auc, low, high)``: the AUC of the data and the percentile interval of the resamples.

    Raises:
        SurvivalInputError: malformed input or ``level`` outside (0, 1).
        StatisticUndefinedError: only one class in ``labels``.

    Example:
        >>> auc_ci([1, 1, 0, 0, 1, 0], [0.9, 0.8, 0.3, 0.5, 0.4, 0.1], n_boot=200)[0]
        0.8888888888888888
    """
    if not 0 < level < 1:
        raise SurvivalInputError(f"level must lie in (0, 1), got {level}")
    point = auc(labels, scores)
    boots = auc_bootstrap(labels, scores, n_boot=n_boot, seed=seed)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def _structural_components(cases: np.ndarray, controls: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components via midranks (Sun & Xu 2014, Algorithm 1).

    ``v10[i] = mean_j psi(case_i, control_j)``, ``v01[j] = mean_i psi(case_i, control_j)``, with
    ``psi = 1`` if case > control, 1/2 on a tie, else 0.
    """
    m, n = cases.size, controls.size
    tx, ty = rankdata(cases), rankdata(controls)
    tz = rankdata(np.concatenate([cases, controls]))
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    return float(v10.mean()), v10, v01


def delong_test(labels: Any, scores_a: Any, scores_b: Any) -> tuple[float, float]:
    """Paired DeLong test of ``AUC(a) == AUC(b)`` on the same patients (two-sided).

    ``z = (AUC_a - AUC_b) / sqrt(Var_a + Var_b - 2 Cov_ab)``, the (co)variances being
    ``S10/m + S01/n`` from the sample covariances of the structural components.

    Args:
        labels: 0/1 per patient, both classes present.
        scores_a: scores of model a.
        scores_b: scores of model b, same patients and order.

    Returns:
        ``(z, p)``; ``z > 0`` means model a has the higher AUC.

    Raises:
        SurvivalInputError: malformed input or lengths differ.
        StatisticUndefinedError: only one class, a class with a single patient, or zero variance
            of the difference (e.g. identical rankings).
    """
    y = as_labels(labels)
    a, b = as_scores(scores_a, "scores_a"), as_scores(scores_b, "scores_b")
    check_lengths(labels=y, scores_a=a, scores_b=b)
    m, n = int(y.sum()), int((y == 0).sum())
    if min(m, n) < 2:
        raise StatisticUndefinedError(
            f"labels has {m} case(s) and {n} control(s): DeLong's variance needs >= 2 of each"
        )
    auc_a, v10_a, v01_a = _structural_components(a[y == 1], a[y == 0])
    auc_b, v10_b, v01_b = _structural_components(b[y == 1], b[y == 0])
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if not var > 1e-15:
        raise StatisticUndefinedError(
            f"DeLong variance of the AUC difference is {var:.3g}: the two models rank the patients "
            "identically (or nearly), the test is undefined"
        )
    z = (auc_a - auc_b) / np.sqrt(var)
    return float(z), float(2 * norm.sf(abs(z)))
