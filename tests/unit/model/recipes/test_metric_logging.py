"""Metric loggers: the in-memory fake, stdout, and MLflow logging into the ACTIVE run (SQLite store).

The MLflow test runs a tiny SFT recipe inside ``mlflow.start_run()`` (what the Dagster asset does)
and reads the loss curve, learning rate, throughput and system metrics back from the tracking store.
"""

from __future__ import annotations

import pytest

from model.recipes.metric_logging import (
    ListLogger,
    MetricLogger,
    MlflowLogger,
    StdoutLogger,
    flatten_params,
    system_metrics,
)
from model.recipes.sft import run_sft
from tests.unit.model.recipes._world import sft_config


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    # artifacts under tmp_path too (the SQLite store's default artifact root is ./mlruns in the CWD)
    experiment = mlflow.create_experiment("recipes", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    yield mlflow
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_loggers_satisfy_the_protocol():
    assert isinstance(ListLogger(), MetricLogger) and isinstance(StdoutLogger(), MetricLogger)


def test_list_logger_and_stdout(capsys):
    lg = ListLogger()
    lg.log_params({"a": 1})
    lg.log_metrics({"x": 1.0, "y": 2.0}, step=3)
    lg.log_metrics({"x": 0.5}, step=4)
    lg.log_artifact("/tmp/f.parquet")
    assert (
        lg.params == {"a": 1}
        and lg.series("x") == [(3, 1.0), (4, 0.5)]
        and lg.artifacts == ["/tmp/f.parquet"]
    )
    out = StdoutLogger()
    out.log_metrics({"sft/loss": 1.23456}, step=7)
    out.log_params({"lr": 0.1})
    text = capsys.readouterr().out
    assert "step 7 | sft/loss=1.235" in text and "param lr = 0.1" in text


def test_flatten_and_system_metrics():
    assert flatten_params({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": {}}) == {
        "a.b.c": 1,
        "a.d": [1, 2],
        "e": {},
    }
    m = system_metrics()
    assert set(m) == {
        "system/cpu_percent",
        "system/process_cpu_percent",
        "system/rss_mb",
        "system/memory_percent",
    }
    assert m["system/rss_mb"] > 10


def test_mlflow_logger_needs_an_active_run(mlflow_store):
    with pytest.raises(RuntimeError, match="none is active"):
        MlflowLogger()
    with mlflow_store.start_run():
        lg = MlflowLogger()
    with pytest.raises(RuntimeError, match="no longer the active run"):
        lg.log_metrics({"x": 1.0}, step=0)


def test_recipe_logs_into_the_active_mlflow_run(world, tmp_path, mlflow_store):
    with mlflow_store.start_run() as run:
        logger = MlflowLogger(artifact_dir="sft")
        run_sft(sft_config(world, tmp_path / "sft", "train.max_steps=4", "train.save_every=4"), logger)
        logger.log_artifact(tmp_path / "sft" / "model" / "xmed_provenance.json")
    client = mlflow_store.tracking.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["sft.train.micro_batch_size"] == "4" and data.params["sft.derived.total_steps"] == "4"
    loss = client.get_metric_history(run.info.run_id, "sft/loss")
    assert [m.step for m in loss] == [2, 4] and all(m.value > 0 for m in loss)
    for key in ("sft/lr", "sft/samples_per_s", "sft/tokens_per_s", "system/cpu_percent", "system/rss_mb"):
        assert key in data.metrics, key
    assert [a.path for a in client.list_artifacts(run.info.run_id, "sft")] == ["sft/xmed_provenance.json"]
