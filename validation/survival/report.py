"""The study report: markdown + PNG figures + a JSON of every number, written atomically.

:func:`write_study_report` writes into ``out_dir`` (replaced as a whole, via
``model.data.io.atomic_dir``, so a failed run leaves the previous report intact):

* ``report.md``: settings, the frozen thresholds, one table per evaluation cohort (n, events,
  excluded-as-censored, AUC [95% CI], accuracy, DeLong P vs the reference, log-rank P, C-index,
  Brier) and the warnings;
* ``results.json``: :meth:`StudyResult.to_dict` (what MLflow and the Dagster check read);
* ``figures/km_<competitor>.png``: Kaplan-Meier curves of the predicted risk groups per cohort,
  at-risk counts and log-rank P; ``figures/calibration.png``: one reliability diagram per cohort.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from model.data.io import atomic_dir
from validation.survival.calibration import CalibrationCurve
from validation.survival.plots import plot_calibration, plot_km_by_group
from validation.survival.results import StudyResult

__all__ = ["ReportFiles", "render_markdown", "write_study_report"]


@dataclass(frozen=True)
class ReportFiles:
    """Paths of a written report (inside the final ``out_dir``)."""

    out_dir: Path
    markdown: Path
    json: Path
    figures: list[Path]


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _cohort_table(result: StudyResult, cname: str) -> list[str]:
    s = result.cohorts[cname]
    lines = [
        f"### {cname}",
        "",
        (
            f"n = {s.n}, events (whole follow-up) = {s.events}, events by the landmark = "
            f"{s.events_by_landmark}, event-free beyond = {s.event_free_beyond}, "
            f"excluded (censored before the landmark) = {s.excluded_censored}"
        ),
        "",
        (
            f"| competitor | AUC [95% CI] | accuracy | DeLong P vs {result.reference} "
            "| risk groups (high/low) | log-rank P | C-index | Brier |"
        ),
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for comp, st in s.competitors.items():
        auc = "n/a" if st.auc is None else f"{st.auc:.3f} [{st.auc_low:.3f}, {st.auc_high:.3f}]"
        delong = "(reference)" if comp == result.reference else _p(st.delong_p)
        groups = (
            f"{st.risk_groups.get('high risk', 0)}/{st.risk_groups.get('low risk', 0)}"
            if st.risk_groups
            else "n/a"
        )
        lines.append(
            f"| {comp} | {auc} | {_num(st.accuracy)} | {delong} | {groups} | {_p(st.logrank_p)} | "
            f"{_num(st.c_index)} | {_num(st.brier)} |"
        )
    return [*lines, ""]


def render_markdown(result: StudyResult, figures: list[str]) -> str:
    """The markdown report of ``result``; ``figures`` are paths relative to the report."""
    st = result.settings
    lines = [
        f"# Prognostic study `{result.name}`: {result.endpoint.upper()} beyond {result.landmark:g} {result.time_unit}",
        "",
        (
            f"Competitors: {', '.join(st['competitors'])}; DeLong reference: `{result.reference}`. "
            f"Thresholds chosen on internal validation ({st['threshold_method']}) and frozen. "
            f"AUC CI: stratified bootstrap, {st['n_boot']} resamples, seed {st['seed']}, percentile interval. "
            "Scores are predicted probabilities of being event-free beyond the landmark; "
            "high risk = score below the threshold. Log-rank and C-index use the whole follow-up; "
            "Brier is IPCW at the landmark."
        ),
        "",
        "## Frozen thresholds",
        "",
        "| competitor | threshold | method | n (val) | Youden J |",
        "|---|---:|---|---:|---:|",
    ]
    for comp, th in result.thresholds.items():
        if th is None:
            lines.append(f"| {comp} | n/a | n/a | n/a | n/a |")
        else:
            lines.append(f"| {comp} | {th.value:.4f} | {th.method} | {th.n_fit} | {_num(th.youden_j)} |")
    for comp in st["competitors"]:
        if comp not in result.thresholds:
            lines.append(f"| {comp} | not fitted (see warnings) | | | |")
    lines += ["", "## Cohorts", ""]
    for cname in result.cohorts:
        lines += _cohort_table(result, cname)
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + ["", "## Warnings", ""]
    lines += [
        f"- {w.cohort} / {w.competitor or '-'} / {w.statistic}: **{w.kind}**: {w.message}"
        for w in result.warnings
    ]
    if not result.warnings:
        lines.append("none")
    notes = {k: v for k, v in st["notes"].items() if k != "dropped_patient_ids"}
    lines += ["", "## Notes", "", "```json", json.dumps(notes, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _km_figure(result: StudyResult, comp: str, path: Path, dpi: int) -> None:
    th = result.thresholds[comp]
    names = list(result.cohorts)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.5), squeeze=False)
    frame = result.patients.set_index("patient_id")
    for ax, cname in zip(axes[0], names, strict=True):
        ids = result.members[cname]
        sub = frame.loc[ids]
        groups = th.apply(result.scores[comp].loc[ids].to_numpy()) if th else np.full(len(ids), "all")
        st = result.cohorts[cname].competitors[comp]
        plot_km_by_group(
            sub["duration"],
            sub["event"],
            groups,
            ax=ax,
            at_risk=True,
            p_value=st.logrank_p,
            title=f"{comp}: {cname}",
            time_label=result.time_unit,
        )
        ax.axvline(result.landmark, color="grey", linestyle=":", linewidth=1)
    fig.subplots_adjust(wspace=0.55)  # room for the at-risk row labels of the next panel
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _calibration_figure(result: StudyResult, path: Path, dpi: int) -> None:
    names = list(result.cohorts)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4.5), squeeze=False)
    for ax, cname in zip(axes[0], names, strict=True):
        curves = {}
        for comp, st in result.cohorts[cname].competitors.items():
            if st.calibration is not None:
                curves[comp] = CalibrationCurve(**{k: np.asarray(v) for k, v in st.calibration.items()})
        plot_calibration(curves, ax=ax, title=cname)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_study_report(result: StudyResult, out_dir: str | os.PathLike, *, dpi: int = 90) -> ReportFiles:
    """Write ``report.md``, ``results.json`` and ``figures/*.png`` into ``out_dir`` atomically.

    Args:
        result: a study result from :func:`~validation.survival.study.run_study`.
        out_dir: the report folder (replaced as a whole on success).
        dpi: figure resolution.

    Returns:
        The :class:`ReportFiles` written.
    """
    out = Path(out_dir)
    rel = [f"figures/km_{comp}.png" for comp in result.thresholds] + ["figures/calibration.png"]
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        for comp in result.thresholds:
            _km_figure(result, comp, tmp / f"figures/km_{comp}.png", dpi)
        _calibration_figure(result, tmp / "figures/calibration.png", dpi)
        (tmp / "results.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        (tmp / "report.md").write_text(render_markdown(result, rel))
    return ReportFiles(out, out / "report.md", out / "results.json", [out / r for r in rel])
