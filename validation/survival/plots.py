"""Figures of the prognostic studies: Kaplan-Meier curves by risk group, calibration curves.

Each function draws on ``ax`` (a new figure when None) and returns the axes; nothing is shown or
saved here (the report writer saves the figure). Use the Agg backend on servers
(``matplotlib.use("Agg")`` before pyplot is imported, or ``MPLBACKEND=Agg``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in the pipeline; harmless if a backend was chosen already

import matplotlib.pyplot as plt
import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from matplotlib.axes import Axes

from validation.survival.calibration import CalibrationCurve
from validation.survival.checks import as_durations, as_events, check_lengths

__all__ = ["plot_calibration", "plot_km_by_group"]


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=size)
    return ax


def plot_km_by_group(
    durations: Any,
    events: Any,
    groups: Any,
    *,
    ax: Axes | None = None,
    at_risk: bool = True,
    p_value: float | None = None,
    title: str | None = None,
    time_label: str = "time",
) -> Axes:
    """Kaplan-Meier curves (95% CI bands) per group, with the at-risk table under the axes.

    Args:
        durations: follow-up per patient.
        events: 1 = event, 0 = censored.
        groups: group label per patient (e.g. predicted risk group).
        ax: axes to draw on; a new figure if None.
        at_risk: add lifelines' at-risk / censored / events table below the plot.
        p_value: a log-rank P shown as the legend title (None: not shown).
        title: axes title.
        time_label: x-axis label (say the unit).

    Returns:
        The axes.
    """
    t, e = as_durations(durations), as_events(events)
    g = np.asarray(groups, dtype=object).astype(str)
    check_lengths(durations=t, events=e, groups=g)
    ax = _axes(ax, (6.0, 4.5))
    fitters = []
    for key in sorted(np.unique(g)):
        sel = g == key
        km = KaplanMeierFitter(label=f"{key} (n={int(sel.sum())})").fit(t[sel], e[sel])
        km.plot_survival_function(ax=ax, ci_show=True)
        fitters.append(km)
    if at_risk:
        add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk", "Events"])
    ax.legend(
        loc="upper right", fontsize="small", title=None if p_value is None else f"log-rank P = {p_value:.3g}"
    )
    ax.set_xlabel(time_label)
    ax.set_ylabel("event-free probability")
    ax.set_ylim(0.0, 1.05)
    if title:
        ax.set_title(title)
    return ax


def plot_calibration(
    curves: Mapping[str, CalibrationCurve], *, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Reliability diagram: observed vs predicted event-free fraction, one line per model.

    Args:
        curves: ``{model name: CalibrationCurve}``; marker size grows with the bin count.
        ax: axes to draw on; a new figure if None.
        title: axes title.

    Returns:
        The axes.
    """
    ax = _axes(ax, (4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="ideal")
    for name, c in curves.items():
        sizes = 20 + 80 * c.counts / max(1, int(c.counts.max()))
        ax.plot(c.mean_predicted, c.observed, marker="", label=name)
        ax.scatter(c.mean_predicted, c.observed, s=sizes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted event-free probability")
    ax.set_ylabel("observed event-free fraction")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return ax
