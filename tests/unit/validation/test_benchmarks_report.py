"""Results table, files, plots and MLflow logging (fake trackers; the real MLflow store in the slow tier)."""

from __future__ import annotations

import base64
import csv
import io
import textwrap

import pandas as pd
import pytest
from PIL import Image

from validation.benchmarks import (
    load_registry,
    log_results,
    plot_benchmark,
    results_table,
    run_suite,
    write_results,
)
from validation.benchmarks.report import metric_key


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Fixed:
    def __init__(self, fingerprint, answer):
        self.fingerprint, self.answer = fingerprint, answer

    def predict(self, items):
        return [self.answer(it) for it in items]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    with open(root / "mcq.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["index", "question", "A", "B", "answer", "image"])
        w.writerows([i, "Organ?", "liver", "heart", "AB"[i % 2], _png_b64()] for i in range(10))
    (root / "reg.yaml").write_text(
        textwrap.dedent(
            """
            benchmarks:
              mcq:
                family: mcq
                source: {kind: vlmevalkit_tsv, path: mcq.tsv}
                metrics: [mcq_accuracy]
            """
        )
    )
    systems = {"base": Fixed("base", lambda it: "A"), "cand": Fixed("cand", lambda it: it.gold)}
    specs = load_registry(root / "reg.yaml").select()
    return run_suite(specs, systems, candidate="cand", benchmarks_root=root, n_boot=200)


def test_results_table_has_values_cis_and_deltas(suite):
    table = results_table(suite)
    (row,) = table.to_dict("records")
    assert (row["benchmark"], row["family"], row["metric"], row["n"]) == ("mcq", "mcq", "mcq_accuracy", 10)
    assert row["base"] == 0.5 and row["cand"] == 1.0 and row["cand_ci_low"] == row["cand_ci_high"] == 1.0
    assert row["delta_vs_base"] == 0.5 and row["delta_vs_base_ci_low"] <= 0.5 <= row["delta_vs_base_ci_high"]
    assert "delta_vs_cand" not in table.columns


def test_write_results_replaces_the_folder(suite, tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    paths = write_results(suite, out)
    assert sorted(p.name for p in out.iterdir()) == ["plots", "results.csv", "results.json", "results.md"]
    assert paths["plot:mcq"] == out / "plots" / "mcq.png" and paths["plot:mcq"].stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "| benchmark | metric | n | base [95% CI] | cand [95% CI] | delta_vs_base [95% CI] |" in md
    assert "| mcq | mcq_accuracy | 10 | 0.500 [" in md and "200 resamples" in md
    assert pd.read_csv(out / "results.csv").loc[0, "delta_vs_base"] == 0.5


def test_plot_has_one_bar_per_system_and_metric_with_error_bars(suite):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plot_benchmark(suite, "mcq", ax=ax) is ax
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "cand"]
    bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
    assert len(bars) == 2 and all(c.errorbar is not None for c in bars)
    plt.close(fig)


class ModuleTracker:
    """Stands in for the ``mlflow`` module with an active run."""

    def __init__(self):
        self.metrics, self.artifacts = {}, []

    def log_metrics(self, metrics):
        self.metrics.update(metrics)

    def log_artifact(self, local_path, artifact_path=None):
        self.artifacts.append((artifact_path, local_path.rsplit("/", 1)[-1]))


class ClientTracker:
    """Stands in for ``mlflow.MlflowClient``."""

    def __init__(self):
        self.metrics, self.artifacts = {}, []

    def log_metric(self, run_id, key, value):
        self.metrics[(run_id, key)] = value

    def log_artifact(self, run_id, local_path, artifact_path=None):
        self.artifacts.append((run_id, artifact_path, local_path.rsplit("/", 1)[-1]))


def test_log_results_keys_and_artifacts_with_the_module_api(suite):
    tracker = ModuleTracker()
    logged = log_results(suite, tracker)
    assert tracker.metrics == logged
    assert tracker.metrics["bench/mcq/mcq_accuracy"] == 1.0
    assert tracker.metrics["bench/mcq/mcq_accuracy/base"] == 0.5
    assert tracker.metrics["bench/mcq/mcq_accuracy/delta_vs_base"] == 0.5
    lo, hi = (
        tracker.metrics["bench/mcq/mcq_accuracy/delta_vs_base/ci_low"],
        tracker.metrics["bench/mcq/mcq_accuracy/delta_vs_base/ci_high"],
    )
    assert lo <= 0.5 <= hi
    assert sorted(tracker.artifacts) == [
        ("benchmarks", "results.csv"),
        ("benchmarks", "results.json"),
        ("benchmarks", "results.md"),
        ("benchmarks/plots", "mcq.png"),
    ]


def test_log_results_with_a_client_and_an_existing_folder(suite, tmp_path):
    write_results(suite, tmp_path / "r")
    client = ClientTracker()
    logged = log_results(suite, client, run_id="run1", out_dir=tmp_path / "r", artifact_path="bench")
    assert client.metrics == {("run1", k): v for k, v in logged.items()}
    assert ("run1", "bench/plots", "mcq.png") in client.artifacts and len(client.artifacts) == 4


def test_metric_keys_are_mlflow_safe():
    assert (
        metric_key("gmai", "mcq_accuracy", "clinical vqa task") == "bench/gmai/mcq_accuracy/clinical_vqa_task"
    )
    assert metric_key("a(b)", "m:1") == "bench/a_b_/m_1"


@pytest.mark.slow
def test_log_results_into_a_real_mlflow_sqlite_store(suite, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("bench", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    logged = log_results(suite, client, run_id=run.info.run_id)
    stored = client.get_run(run.info.run_id).data.metrics
    assert stored == pytest.approx(logged)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "benchmarks")}
    assert {"benchmarks/results.md", "benchmarks/results.csv", "benchmarks/plots"} <= names
