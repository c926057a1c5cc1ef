"""The competitors of a prognostic study: scorers of the landmark event-free probability.

Every competitor follows :class:`Scorer`: ``fit(train, landmark=...)`` on the internal training
patients, then ``predict(patients)`` returns, per patient, the predicted probability of being
event-free beyond the landmark (label 1). A study is run with a mapping ``name -> Scorer``.

* :class:`CoxClinicalScorer`: the clinical risk score, a lifelines ``CoxPHFitter`` (small ridge
  penalty) on the clinical covariates, categoricals one-hot encoded with the training categories
  (an unseen category falls on the reference level). Risk at the landmark = ``1 - S(landmark | x)``;
  the scorer returns ``S(landmark | x)``.
* :class:`LinearFeatureScorer`: the task-specific model, standardised features + logistic
  regression (scikit-learn) trained on the internal patients with a known landmark label. Feature
  rows come from :class:`ImageFeatureRows` (frozen image features from a caller's ``feature_fn``;
  per patient: mean over visits and last-minus-first change; or per image with the predictions
  averaged per patient) or :class:`CovariateRows` (a table's numeric columns).
* :class:`AssistantScorer`: wraps the caller's ``score_fn(patient_ids) -> probabilities`` (the
  fine-tuned assistant's yes-token probability, averaged over its slices/visits by the caller);
  ``fit`` does nothing because the assistant is fine-tuned upstream by the training recipes.
* :func:`mean_pixel_features`: a model-free ``feature_fn`` (intensity statistics of the image) for
  tests and runs without a vision encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from validation.survival.checks import StatisticUndefinedError, SurvivalInputError, as_scores
from validation.survival.labels import landmark_labels

__all__ = [
    "AssistantScorer",
    "CovariateRows",
    "CoxClinicalScorer",
    "FeatureRows",
    "ImageFeatureRows",
    "LinearFeatureScorer",
    "Scorer",
    "mean_pixel_features",
]


class Scorer(Protocol):
    """Shape of a competitor (sklearn-style: fit returns self, results as trailing-underscore attributes)."""

    def fit(self, train: pd.DataFrame, *, landmark: float) -> Scorer:
        """Train on the internal training patients (``duration``, ``event`` and covariate columns)."""
        ...

    def predict(self, patients: pd.DataFrame) -> np.ndarray:
        """Predicted probability of being event-free beyond the landmark, one per row of ``patients``."""
        ...


class FeatureRows(Protocol):
    """Feature rows of patients: ``(X (rows, d), owner (rows,))``, owner = position in ``patients``."""

    def __call__(self, patients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...


def _not_fitted(obj: object, attr: str) -> None:
    if not hasattr(obj, attr):
        raise RuntimeError(f"{type(obj).__name__} is not fitted: call fit(train, landmark=...) first")


# ---------------------------------------------------------------------------------------------
# clinical Cox model
# ---------------------------------------------------------------------------------------------


class CoxClinicalScorer:
    """Clinical risk score: Cox proportional hazards on clinical covariates (lifelines).

    Args:
        numeric: numeric covariate columns.
        categorical: categorical covariate columns (one-hot, first level dropped).
        penalizer: lifelines' ridge penalty (small; keeps the fit stable on small cohorts).

    Attributes:
        model_: the fitted ``CoxPHFitter``.
        columns_: design-matrix columns used (constant columns of the training data dropped).
        dropped_: design columns dropped as constant in training.
        landmark_: the landmark the survival probability is read at.
    """

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str] = (), *, penalizer: float = 0.05):
        if not numeric and not categorical:
            raise ValueError("CoxClinicalScorer needs at least one covariate")
        if penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {penalizer}")
        self.numeric, self.categorical, self.penalizer = tuple(numeric), tuple(categorical), penalizer

    def _design(self, patients: pd.DataFrame) -> pd.DataFrame:
        for col in (*self.numeric, *self.categorical):
            missing = patients[col].isna().to_numpy()
            if missing.any():
                row = patients.iloc[int(missing.argmax())]
                raise SurvivalInputError(
                    f"patient {row.get('patient_id', '?')}: covariate {col!r} is missing"
                )
        parts = [patients[list(self.numeric)].astype(float)]
        for col in self.categorical:  # an unseen category -> all-zero dummies (the reference level)
            cat = pd.Categorical(patients[col], categories=self.categories_[col])
            dummies = pd.get_dummies(cat, prefix=col, drop_first=True, dtype=float)
            parts.append(dummies.set_index(patients.index))
        return pd.concat(parts, axis=1)

    def fit(self, train: pd.DataFrame, *, landmark: float) -> CoxClinicalScorer:
        """Fit the Cox model on ``train`` (all patients: Cox uses the censored follow-up)."""
        self.categories_ = {c: sorted(train[c].dropna().unique()) for c in self.categorical}
        design = self._design(train)
        constant = [c for c in design if design[c].nunique() < 2]
        self.dropped_, self.columns_ = constant, [c for c in design if c not in constant]
        frame = design[self.columns_].assign(
            duration=train["duration"].to_numpy(), event=train["event"].to_numpy()
        )
        self.model_ = CoxPHFitter(penalizer=self.penalizer).fit(
            frame, duration_col="duration", event_col="event"
        )
        self.landmark_ = float(landmark)
        return self

    def predict(self, patients: pd.DataFrame) -> np.ndarray:
        """``S(landmark | x)`` per patient (the clinical risk is ``1 -`` this)."""
        _not_fitted(self, "model_")
        design = self._design(patients)[self.columns_]
        surv = self.model_.predict_survival_function(design, times=[self.landmark_])
        return surv.to_numpy().ravel().astype(float)

    def risk(self, patients: pd.DataFrame) -> np.ndarray:
        """The clinical risk at the landmark, ``1 - S(landmark | x)``."""
        return 1.0 - self.predict(patients)


# ---------------------------------------------------------------------------------------------
# task-specific linear model on features
# ---------------------------------------------------------------------------------------------


class CovariateRows:
    """One feature row per patient: the given numeric columns."""

    def __init__(self, columns: Sequence[str]):
        self.columns = tuple(columns)

    def __call__(self, patients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(patients[columns] as float, arange(n))``."""
        x = patients[list(self.columns)].to_numpy(dtype=float)
        return x, np.arange(len(patients))


class ImageFeatureRows:
    """Feature rows from per-image features, computed once per image path and cached.

    Args:
        images: one row per image: ``patient_id``, ``visit_index``, ``path`` (what ``feature_fn`` reads).
        feature_fn: ``feature_fn(paths) -> array (len(paths), d)``, e.g. frozen vision-encoder features.
        per: ``patient``: one row per patient, ``[mean over images, last visit - first visit]``
            (zeros for a single visit); ``image``: one row per image (predictions averaged later).
    """

    def __init__(
        self, images: pd.DataFrame, feature_fn: Callable[[list[str]], np.ndarray], *, per: str = "patient"
    ):
        if per not in ("patient", "image"):
            raise ValueError(f"per must be 'patient' or 'image', got {per!r}")
        self.images = images.sort_values(["patient_id", "visit_index", "path"], kind="stable")
        self.feature_fn, self.per = feature_fn, per
        self._cache: dict[str, np.ndarray] = {}

    def _features(self, paths: list[str]) -> np.ndarray:
        todo = [p for p in dict.fromkeys(paths) if p not in self._cache]
        if todo:
            feats = np.asarray(self.feature_fn(todo), dtype=float)
            if feats.ndim != 2 or feats.shape[0] != len(todo) or not np.isfinite(feats).all():
                raise ValueError(f"feature_fn returned shape {feats.shape} (finite?) for {len(todo)} paths")
            self._cache.update(zip(todo, feats, strict=True))
        return np.stack([self._cache[p] for p in paths])

    def __call__(self, patients: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and their owner (row position in ``patients``)."""
        pos = {pid: i for i, pid in enumerate(patients["patient_id"])}
        imgs = self.images[self.images["patient_id"].isin(pos)]
        missing = set(pos) - set(imgs["patient_id"])
        if missing:
            raise SurvivalInputError(f"patient {min(missing)} has no image for the feature model")
        feats = self._features(imgs["path"].tolist())
        owner = imgs["patient_id"].map(pos).to_numpy()
        if self.per == "image":
            return feats, owner
        rows, owners = [], []
        for i in np.unique(owner):
            f = feats[owner == i]  # visits in order
            rows.append(np.concatenate([f.mean(axis=0), f[-1] - f[0]]))
            owners.append(i)
        return np.stack(rows), np.asarray(owners)


class LinearFeatureScorer:
    """Task-specific model: standardised features + L2 logistic regression on landmark labels.

    Trained on internal training patients with a known landmark label (censored-before-landmark
    excluded); every feature row of a patient carries the patient's label, and a patient's
    prediction is the mean of its rows' probabilities (slice-level predictions averaged).

    Args:
        rows: the :class:`FeatureRows` source (image features or covariates).
        C: inverse L2 strength of the logistic regression.

    Attributes:
        model_: the fitted scikit-learn pipeline.
        n_train_: patients trained on.
    """

    def __init__(self, rows: FeatureRows, *, C: float = 1.0):
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.rows, self.C = rows, C

    def fit(self, train: pd.DataFrame, *, landmark: float) -> LinearFeatureScorer:
        """Fit on the training patients whose landmark label is known."""
        labels, included = landmark_labels(train["duration"], train["event"], landmark)
        x, owner = self.rows(train)
        keep = included[owner]
        y = labels[owner][keep]
        if np.unique(y).size < 2:
            raise StatisticUndefinedError(f"training labels hold one class only ({np.unique(y)}): cannot fit")
        self.model_: Pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.model_.fit(x[keep], y)
        self.n_train_ = int(included.sum())
        return self

    def predict(self, patients: pd.DataFrame) -> np.ndarray:
        """Mean predicted event-free probability of each patient's feature rows."""
        _not_fitted(self, "model_")
        x, owner = self.rows(patients)
        p = self.model_.predict_proba(x)[:, 1]
        sums = np.bincount(owner, weights=p, minlength=len(patients))
        counts = np.bincount(owner, minlength=len(patients))
        return sums / counts


# ---------------------------------------------------------------------------------------------
# the assistant and a model-free feature function
# ---------------------------------------------------------------------------------------------


class AssistantScorer:
    """The assistant as a competitor: ``score_fn(patient_ids) -> probabilities`` from the caller.

    Args:
        score_fn: returns, per patient id, the probability of "yes, event-free beyond the landmark"
            (the model's yes/no token probabilities, averaged over slices/visits by the caller).
    """

    def __init__(self, score_fn: Callable[[list[str]], Sequence[float] | np.ndarray]):
        self.score_fn = score_fn

    def fit(self, train: pd.DataFrame, *, landmark: float) -> AssistantScorer:
        """No-op: the assistant is fine-tuned on the internal cohort by the training recipes."""
        return self

    def predict(self, patients: pd.DataFrame) -> np.ndarray:
        """The caller's probabilities, checked: one per patient, finite, within [0, 1]."""
        ids = patients["patient_id"].tolist()
        p = as_scores(
            np.asarray(self.score_fn(ids), dtype=float).ravel(), "score_fn output", probability=True
        )
        if p.size != len(ids):
            raise SurvivalInputError(f"score_fn returned {p.size} probabilities for {len(ids)} patients")
        return p


def mean_pixel_features(paths: Sequence[str]) -> np.ndarray:
    """Model-free image features: grey-level mean, sd, 10/50/90th percentiles, share above 0.5.

    Args:
        paths: image files PIL can open.

    Returns:
        Array (len(paths), 6), intensities scaled to [0, 1].
    """
    out = np.empty((len(paths), 6))
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=float) / 255.0
        out[i] = (a.mean(), a.std(), *np.percentile(a, [10, 50, 90]), (a > 0.5).mean())
    return out
