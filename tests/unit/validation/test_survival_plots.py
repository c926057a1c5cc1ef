"""Plot functions draw on the given axes (or a new one) and return it; nothing is shown."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from validation.survival import calibration_curve, plot_calibration, plot_km_by_group


def test_km_plot_draws_one_curve_per_group_with_at_risk_table():
    fig, ax = plt.subplots()
    out = plot_km_by_group(
        [1, 2, 3, 4, 5, 6], [1, 0, 1, 1, 0, 1], ["a", "a", "a", "b", "b", "b"], ax=ax, p_value=0.04
    )
    assert out is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["a (n=3)", "b (n=3)"] and ax.get_legend().get_title().get_text() == "log-rank P = 0.04"
    assert len(fig.axes) > 1  # lifelines' at-risk table adds axes
    plt.close(fig)


def test_calibration_plot_returns_new_axes():
    ax = plot_calibration({"m": calibration_curve([0, 1, 1, 0], [0.2, 0.7, 0.9, 0.4], n_bins=2)}, title="x")
    assert ax.get_title() == "x" and len(ax.lines) == 2  # diagonal + one model
    plt.close(ax.figure)
