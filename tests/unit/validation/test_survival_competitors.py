"""Competitors: the Cox clinical score equals a direct lifelines fit; feature rows and averaging."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from validation.survival import CovariateRows, CoxClinicalScorer, ImageFeatureRows, LinearFeatureScorer


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=n)
    stage = rng.choice(["I", "II", "III"], size=n)
    hazard = np.exp(0.8 * x + (stage == "III") * 0.7)
    t_event, t_cens = rng.exponential(10 / hazard), rng.uniform(2, 30, n)
    return pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(n)],
            "x": x,
            "stage": stage,
            "duration": np.minimum(t_event, t_cens),
            "event": (t_event <= t_cens).astype(int),
        }
    )


def test_cox_scorer_is_lifelines_survival_at_the_landmark(frame):
    scorer = CoxClinicalScorer(["x"], ["stage"], penalizer=0.05).fit(frame, landmark=6.0)
    design = pd.DataFrame(
        {
            "x": frame["x"],
            "stage_II": (frame["stage"] == "II").astype(float),
            "stage_III": (frame["stage"] == "III").astype(float),
        }
    )
    ref = CoxPHFitter(penalizer=0.05).fit(
        design.assign(duration=frame["duration"], event=frame["event"]), "duration", "event"
    )
    expected = ref.predict_survival_function(design, times=[6.0]).to_numpy().ravel()
    np.testing.assert_allclose(scorer.predict(frame), expected, rtol=1e-6)
    assert scorer.columns_ == ["x", "stage_II", "stage_III"] and scorer.dropped_ == []
    # higher hazard covariate -> lower event-free probability; an unseen stage falls on the reference "I"
    new = pd.DataFrame({"patient_id": ["a", "b", "c"], "x": [0.0, 2.0, 0.0], "stage": ["I", "I", "IV"]})
    p = scorer.predict(new)
    assert p[1] < p[0] and p[2] == pytest.approx(p[0])


def test_cox_scorer_reports_missing_covariates(frame):
    scorer = CoxClinicalScorer(["x"]).fit(frame, landmark=6.0)
    bad = frame.head(3).copy()
    bad.loc[bad.index[1], "x"] = np.nan
    with pytest.raises(ValueError, match="patient p1: covariate 'x' is missing"):
        scorer.predict(bad)
    np.testing.assert_allclose(scorer.risk(frame.head(3)), 1 - scorer.predict(frame.head(3)))


def test_image_rows_cache_and_per_image_averaging():
    images = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "c", "c", "c"],
            "visit_index": [0, 1, 0, 0, 1, 2],
            "path": ["a0", "a1", "b0", "c0", "c1", "c2"],
        }
    )
    values = {"a0": 1.0, "a1": 3.0, "b0": -2.0, "c0": 0.0, "c1": 1.0, "c2": 5.0}
    calls = []

    def feature_fn(paths):
        calls.append(list(paths))
        return np.array([[values[p]] for p in paths])

    patients = pd.DataFrame({"patient_id": ["c", "a", "b"]})  # order differs from the images
    rows = ImageFeatureRows(images, feature_fn, per="patient")
    x, owner = rows(patients)
    assert owner.tolist() == [0, 1, 2]  # positions in `patients`: c, a, b
    np.testing.assert_allclose(x, [[2.0, 5.0], [2.0, 2.0], [-2.0, 0.0]])  # [mean, last - first]
    rows(patients)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(values)  # features computed once

    per_image = ImageFeatureRows(images, feature_fn, per="image")
    x_img, owner_img = per_image(patients)
    assert x_img.shape == (6, 1)
    train = pd.DataFrame({"patient_id": ["a", "b", "c"], "duration": [20.0, 2.0, 20.0], "event": [1, 1, 0]})
    model = LinearFeatureScorer(per_image).fit(train, landmark=10.0)
    probs = model.model_.predict_proba(x_img)[:, 1]
    expected = [probs[owner_img == i].mean() for i in range(3)]
    np.testing.assert_allclose(model.predict(patients), expected)


def test_covariate_rows_and_unfitted_errors(frame):
    x, owner = CovariateRows(["x"])(frame)
    assert x.shape == (len(frame), 1) and owner.tolist() == list(range(len(frame)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearFeatureScorer(CovariateRows(["x"])).predict(frame)
    with pytest.raises(ValueError, match="at least one covariate"):
        CoxClinicalScorer([])
