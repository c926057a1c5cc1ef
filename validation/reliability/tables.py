"""Markdown tables and plots of the reliability-index experiments, written atomically.

* :func:`markdown_tables`: the VQA AUROC and PRR tables (estimator x M), the sentence AUROC table
  (questions per sentence x score, the paper's Fig. 4b) and the reliability-level table.
* :func:`plot_vqa_auroc` / :func:`plot_sentence_auroc`: ``plot_x(result, ax=None) -> Axes``
  (a pyplot-free matplotlib ``Figure`` rendered by Agg; nothing is shown).
* :func:`write_outputs`: ``uncertainty_table.md``, ``uncertainty_table.json`` (the summaries),
  ``uncertainty_items.json`` (per-question and per-sentence records), ``vqa_auroc.png`` and
  ``sentence_auroc.png``. Everything is rendered in memory first, then each file is written with
  :func:`model.data.io.atomic_file`, so a failure leaves no half-written file.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.data.io import atomic_file

__all__ = ["markdown_tables", "plot_sentence_auroc", "plot_vqa_auroc", "write_outputs"]

TABLE_MD, TABLE_JSON, ITEMS_JSON = "uncertainty_table.md", "uncertainty_table.json", "uncertainty_items.json"
VQA_PNG, SENTENCE_PNG = "vqa_auroc.png", "sentence_auroc.png"


def _grid(
    title: str, head: str, rows: Mapping[str, Mapping[str, float]], columns: list[str], label: str
) -> list[str]:
    out = [
        f"| {head} | " + " | ".join(f"{label}{c}" for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    out += [
        f"| {name} | " + " | ".join(f"{vals[c]:.3f}" for c in columns) + " |" for name, vals in rows.items()
    ]
    return [f"### {title}", "", *out, ""]


def _vqa_section(vqa: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    ms = [str(m) for m in vqa["ms"]]
    intro = (
        f"{vqa['n']} held-out questions ({vqa['n_closed']} closed, {vqa['n'] - vqa['n_closed']} open); "
        f"greedy-answer accuracy {vqa['accuracy']:.3f} ({vqa['n_wrong']} wrong, MultiMedEval rules). "
        f"M answers per question are the first M of ONE draw of {vqa['samples_drawn']} samples "
        f"(temperature {settings.get('temperature')}, top-p {settings.get('top_p')}); clusters: "
        f"{settings.get('closed_equivalence')} (closed), {settings.get('open_equivalence')} (open)."
    )
    return [
        "## VQA", "", intro, "",
        *_grid("AUROC of the uncertainty for a wrong answer (wrong = positive)", "estimator", vqa["auroc"], ms, "M="),
        *_grid("Prediction-rejection ratio (1 = oracle, 0 = random)", "estimator", vqa["prr"], ms, "M="),
    ]  # fmt: skip


def _level_rows(levels: Mapping[str, Any]) -> list[str]:
    def cell(d: Mapping[str, Any]) -> str:
        rate = d["error_rate"]
        return f"{d['n']} | " + ("(empty)" if rate is None else f"{rate:.3f}")

    rows = [
        "| level | val n | val error rate | held-out n | held-out error rate |",
        "|---|---:|---:|---:|---:|",
    ]
    for level in ("high", "medium", "low"):
        rows.append(f"| {level} | {cell(levels['validation'][level])} | {cell(levels['held_out'][level])} |")
    return rows


def _cuts(th: Mapping[str, Any]) -> str:
    """The level rule in words; an empty level (no cut met its target on val) is named as such."""
    high = "the high level is empty" if th["high"] is None else f"high if U <= {th['high']:.4g}"
    if th["medium"] is None:
        return f"{high}, the medium level is empty, else low"
    return f"{high}, medium if U <= {th['medium']:.4g}, else low"


def _sentence_section(sen: Mapping[str, Any]) -> list[str]:
    ks = [str(k) for k in sen["questions"]]
    by_k = {
        f"{k} question{'s' if k != '1' else ''}": {sc: sen["auroc"][sc][k] for sc in sen["auroc"]} for k in ks
    }
    lv, th = sen["levels"], sen["levels"]["thresholds"]
    intro = (
        f"Generated reports: {sen['n_reports']['test']} held-out (test) and {sen['n_reports']['val']} "
        f"calibration (val); probed sentences {sen['n_sentences']['test']} held-out "
        f"({sen['n_incorrect']['test']} incorrect) and {sen['n_sentences']['val']} calibration "
        f"({sen['n_incorrect']['val']} incorrect); {sen['samples_per_question']} answers per question. "
        "U_k = mean over the first k questions of the entropy of the agree/disagree clusters "
        "(`disagreement`: mean share of non-agreeing answers, for comparison)."
    )
    levels = (
        f"Levels on U_{lv['k']} ({lv['score']}), thresholds calibrated on the val sentences with "
        f"error-rate targets {th['target_high']} (high) and {th['target_medium']} (medium): {_cuts(th)}."
    )
    return [
        "## Report sentences", "", intro, "",
        *_grid("AUROC of sentence uncertainty for an incorrect sentence (Fig. 4b)", "questions",
               by_k, list(sen["auroc"]), ""),
        "### Reliability levels", "", levels, "", *_level_rows(lv), "",
    ]  # fmt: skip


def markdown_tables(result: Mapping[str, Any]) -> str:
    """The markdown report of a :func:`~validation.reliability.experiment.run_experiments` result."""
    lines = [
        "# Reliability index (uncertainty)",
        "",
        "Natural logarithms; estimators of `validation.uncertainty`.",
        "",
    ]
    lines += _vqa_section(result["vqa"], result["settings"])
    lines += _sentence_section(result["sentences"])
    return "\n".join(lines)


def _axes(ax):
    if ax is None:  # a pyplot-free Figure: no global state, rendered by the Agg canvas
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5, 3.5)).subplots()
    return ax


def _lines(ax, table: Mapping[str, Mapping[str, float]], xlabel: str, title: str):
    for name, vals in table.items():
        xs = [int(k) for k in vals]
        ax.plot(xs, list(vals.values()), marker="o", label=name)
    ax.set_xticks(sorted({int(k) for vals in table.values() for k in vals}))
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel=xlabel, ylabel="AUROC", title=title, ylim=(0, 1))
    ax.legend(fontsize=7)
    return ax


def plot_vqa_auroc(result: Mapping[str, Any], ax=None):
    """AUROC for a wrong VQA answer against M, one line per estimator; returns the Axes."""
    return _lines(_axes(ax), result["vqa"]["auroc"], "M (sampled answers)", "VQA: wrong-answer AUROC")


def plot_sentence_auroc(result: Mapping[str, Any], ax=None):
    """AUROC for an incorrect sentence against the questions per sentence (Fig. 4b); returns the Axes."""
    return _lines(
        _axes(ax), result["sentences"]["auroc"], "questions per sentence", "Report sentences: AUROC"
    )


def _png(plot, result) -> bytes:
    fig = plot(result).figure
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_outputs(
    result: Mapping[str, Any], records: Mapping[str, Any], out_dir: str | os.PathLike
) -> dict[str, str]:
    """Write the tables, the JSON summaries and records, and the plots into ``out_dir``.

    Args:
        result: ``{"settings", "vqa", "sentences"}`` summaries.
        records: per-item records (``{"vqa": [...], "sentences": [...]}``).
        out_dir: target folder (created; other files in it are left alone).

    Returns:
        File name -> path written.

    Raises:
        ValueError: a value is not JSON-able or not finite (``allow_nan=False``).
    """
    summary = {k: result[k] for k in ("settings", "vqa", "sentences")}
    payload = {
        TABLE_MD: markdown_tables(summary) + "\n",
        TABLE_JSON: json.dumps(summary, indent=2, allow_nan=False) + "\n",
        ITEMS_JSON: json.dumps(records, indent=1, allow_nan=False) + "\n",
        VQA_PNG: _png(plot_vqa_auroc, summary),
        SENTENCE_PNG: _png(plot_sentence_auroc, summary),
    }
    out = Path(out_dir)
    written = {}
    for name, data in payload.items():
        with atomic_file(out / name, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        written[name] = str(out / name)
    return written
