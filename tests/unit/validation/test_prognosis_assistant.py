"""Flattening a study's results into MLflow metrics (the model-backed parts run in the integration tier)."""

from __future__ import annotations

import pytest

from validation.prognosis_assistant import run_prognosis_study, study_metrics


def test_study_metrics_flattens_and_skips_uncomputed_statistics():
    results = {
        "study": "gbm",
        "cohorts": {
            "internal_test": {
                "n": 25,
                "competitors": {
                    "assistant": {"auc": 0.75, "auc_low": 0.5, "auc_high": 0.9, "delong_p": None, "c_index": 0.6},
                    "clinical_cox": {"auc": 0.8, "accuracy": 0.7, "brier": 0.2, "risk_groups": {"low risk": 25}},
                },
            }
        },
    }
    assert study_metrics(results) == {
        "prognosis/gbm/internal_test/n": 25.0,
        "prognosis/gbm/internal_test/assistant/auc": 0.75,
        "prognosis/gbm/internal_test/assistant/auc_low": 0.5,
        "prognosis/gbm/internal_test/assistant/auc_high": 0.9,
        "prognosis/gbm/internal_test/assistant/c_index": 0.6,
        "prognosis/gbm/internal_test/clinical_cox/auc": 0.8,
        "prognosis/gbm/internal_test/clinical_cox/accuracy": 0.7,
        "prognosis/gbm/internal_test/clinical_cox/brier": 0.2,
    }


def test_imaging_study_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="give the checkpoint"):
        run_prognosis_study("gbm", data_root=tmp_path, checkpoint=None, out_dir=tmp_path / "out")
