"""Study cohorts: one patient table per prognostic study, in a common shape.

:class:`StudyCohort` holds a patient frame with the columns ``patient_id, site, site_role,
split, duration, event`` plus the clinical covariates, optionally an image frame
(``patient_id, visit_index, visit_month, image_path, path``; ``image_path`` relative to the data
root as stored, ``path`` absolute), the landmark and its unit.

* :func:`load_demo_cohort`: one of the three imaging studies of the demo corpus
  (``model.data.curation.DEFAULT_LANDMARKS``: ``lung_tki`` PFS > 14 months from multi-visit CT,
  ``nsclc`` OS > 24 months per image (slice-level predictions averaged per patient), ``gbm`` OS > 12
  months from FLAIR MRI) read from ``manifest/patients.parquet`` and ``manifest/images``. Only
  images acquired before the landmark are kept (a later image would leak the outcome), as in
  curation. Splits come from the manifest (internal train/val/test, ``external``).
* :func:`load_ncctg_cohort`: the NCCTG advanced lung-cancer cohort shipped with lifelines
  (``load_lung()``, n = 228, ``status`` 1 = dead / 0 = censored, time in days), complete cases on
  the clinical covariates. Institutions are split deterministically (:func:`split_institutions`):
  sorted by patient count (descending, ties by lower ``inst`` code), the largest institutions are
  "internal" until they hold at least ``internal_fraction`` of the patients; the others form one
  pooled "external" cohort. Internal patients get train/val/test from
  ``model.data.io.assign_split`` (salted hash of the patient id ``ncctg-<row>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.data.curation import DEFAULT_LANDMARKS
from model.data.io import assign_split, parquet_files
from model.data.schema import SchemaError

__all__ = [
    "DEMO_CATEGORICAL",
    "DEMO_NUMERIC",
    "NCCTG_COVARIATES",
    "NCCTG_LANDMARK_DAYS",
    "StudyCohort",
    "load_demo_cohort",
    "load_ncctg_cohort",
    "split_institutions",
]

DEMO_NUMERIC: tuple[str, ...] = ("age",)
DEMO_CATEGORICAL: tuple[str, ...] = ("sex", "smoking", "tnm_stage", "mutation", "treatment")
NCCTG_COVARIATES: tuple[str, ...] = ("age", "sex", "ph.ecog", "ph.karno", "wt.loss")
NCCTG_LANDMARK_DAYS = 365.0
_PATIENT_COLUMNS = ("patient_id", "site", "site_role", "split", "duration", "event")


@dataclass(frozen=True)
class StudyCohort:
    """The patients of one prognostic study.

    Attributes:
        name: study name (``lung_tki``, ``nsclc``, ``gbm``, ``ncctg``).
        endpoint: ``os`` or ``pfs``.
        landmark: landmark time, in ``time_unit``.
        time_unit: ``months`` or ``days``.
        patients: one row per patient (``patient_id, site, site_role, split, duration, event`` + covariates).
        numeric: numeric clinical covariates.
        categorical: categorical clinical covariates (one-hot encoded by the Cox competitor).
        images: one row per image before the landmark, or None (no imaging).
        per: ``patient`` (visits pooled per patient) or ``image`` (per-image predictions averaged).
        external_by_site: report each external site as its own cohort (else one pooled cohort).
        notes: provenance for the report (exclusions, split rule).
    """

    name: str
    endpoint: str
    landmark: float
    time_unit: str
    patients: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    images: pd.DataFrame | None = None
    per: str = "patient"
    external_by_site: bool = True
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in (*_PATIENT_COLUMNS, *self.numeric, *self.categorical) if c not in self.patients]
        if missing:
            raise ValueError(f"cohort {self.name}: patients frame lacks columns {missing}")
        if self.patients["patient_id"].duplicated().any():
            dup = self.patients.loc[self.patients["patient_id"].duplicated(), "patient_id"].iloc[0]
            raise ValueError(f"cohort {self.name}: patient_id {dup!r} appears twice")
        if self.per not in ("patient", "image"):
            raise ValueError(f"cohort {self.name}: per must be 'patient' or 'image', got {self.per!r}")


def _check_outcomes(frame: pd.DataFrame, where: str) -> None:
    """Raise :class:`SchemaError` naming the patient with a missing/negative duration or bad event."""
    bad_t = frame["duration"].isna() | ~np.isfinite(frame["duration"].astype(float)) | (frame["duration"] < 0)
    bad_e = ~frame["event"].isin([0, 1])
    for mask, col, rule in ((bad_t, "duration", "finite and >= 0"), (bad_e, "event", "0 or 1")):
        if mask.any():
            row = frame.loc[mask].iloc[0]
            value = row[col].item() if hasattr(row[col], "item") else row[col]
            raise SchemaError(f"{where}: patient {row['patient_id']}: {col} is {value!r}, must be {rule}")


def _read_images(root: Path, patient_ids: set[str], landmark: float) -> pd.DataFrame:
    cols = ["patient_id", "visit_index", "visit_month", "image_path", "modality"]
    parts = [pd.read_parquet(f, columns=cols) for f in parquet_files(root / "manifest" / "images")]
    images = pd.concat(parts, ignore_index=True)
    images = images[images["patient_id"].isin(patient_ids) & (images["visit_month"] < landmark)]
    images = images.sort_values(["patient_id", "visit_index", "image_path"], kind="stable").reset_index(
        drop=True
    )
    images["path"] = [str(root / p) for p in images["image_path"]]
    return images


def load_demo_cohort(root: str | os.PathLike, study: str) -> StudyCohort:
    """Load one imaging study of a generated corpus (``data/<profile>``).

    Args:
        root: the profile's data root (holding ``manifest/``).
        study: ``lung_tki``, ``nsclc`` or ``gbm`` (keys of ``DEFAULT_LANDMARKS``).

    Returns:
        The cohort, durations in months, with the images acquired before the landmark.

    Raises:
        KeyError: unknown study.
        SchemaError: a patient with a missing or invalid outcome, or without an image.
    """
    if study not in DEFAULT_LANDMARKS:
        raise KeyError(f"unknown study {study!r}; choose from {sorted(DEFAULT_LANDMARKS)}")
    lm = DEFAULT_LANDMARKS[study]
    root = Path(root).resolve()
    path = root / "manifest" / "patients.parquet"
    frame = pd.read_parquet(path)
    frame = frame[frame["cohort"] == study].reset_index(drop=True)
    if frame.empty:
        raise SchemaError(f"{path}: no patient of cohort {study!r}")
    frame["duration"] = frame[f"{lm.endpoint}_months"].astype(float)
    frame["event"] = frame[f"{lm.endpoint}_event"]
    _check_outcomes(frame, f"{path} ({lm.endpoint}_months/{lm.endpoint}_event)")
    frame["event"] = frame["event"].astype(int)
    images = _read_images(root, set(frame["patient_id"]), lm.months)
    no_image = sorted(set(frame["patient_id"]) - set(images["patient_id"]))
    if no_image:
        raise SchemaError(
            f"{root / 'manifest/images'}: patient {no_image[0]} of {study} has no image before the landmark"
        )
    keep = [*_PATIENT_COLUMNS, *DEMO_NUMERIC, *DEMO_CATEGORICAL]
    return StudyCohort(
        name=study,
        endpoint=lm.endpoint,
        landmark=lm.months,
        time_unit="months",
        patients=frame[keep],
        numeric=DEMO_NUMERIC,
        categorical=DEMO_CATEGORICAL,
        images=images,
        per=lm.per,
        notes={"source": str(path), "images": len(images)},
    )


def split_institutions(counts: pd.Series, internal_fraction: float) -> set[Any]:
    """The internal institutions: largest first (ties: lower code) until >= ``internal_fraction``.

    Args:
        counts: patients per institution code.
        internal_fraction: share of patients the internal group must reach, in (0, 1).

    Returns:
        The set of internal institution codes.
    """
    if not 0 < internal_fraction < 1:
        raise ValueError(f"internal_fraction must lie in (0, 1), got {internal_fraction}")
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    internal, total, held = set(), int(counts.sum()), 0
    for code, n in order:
        if held >= internal_fraction * total:
            break
        internal.add(code)
        held += int(n)
    return internal


def load_ncctg_cohort(
    *, internal_fraction: float = 0.6, val: float = 0.2, test: float = 0.2, salt: str = "ncctg"
) -> StudyCohort:
    """The NCCTG lung cohort as a 1-year overall-survival landmark study (days).

    Args:
        internal_fraction: share of patients in the internal institutions (see module docstring).
        val: share of internal patients in validation (threshold choice).
        test: share of internal patients in the internal test cohort.
        salt: hash salt of the internal split.

    Returns:
        The cohort; ``notes`` records the complete-case exclusions and the institution split.
    """
    from lifelines.datasets import load_lung  # shipped with lifelines, offline

    raw = load_lung().reset_index(drop=True)
    raw.insert(0, "patient_id", [f"ncctg-{i:03d}" for i in range(len(raw))])
    needed = ["inst", "time", "status", *NCCTG_COVARIATES]
    complete = raw.dropna(subset=needed).copy()
    dropped = raw.loc[~raw.index.isin(complete.index), "patient_id"].tolist()
    complete["inst"] = complete["inst"].astype(int)
    internal = split_institutions(complete["inst"].value_counts(), internal_fraction)
    complete["site"] = [f"inst_{k:02d}" for k in complete["inst"]]
    complete["site_role"] = np.where(complete["inst"].isin(internal), "internal", "external")
    complete["split"] = [
        assign_split(pid, role, val=val, test=test, salt=salt)
        for pid, role in zip(complete["patient_id"], complete["site_role"], strict=True)
    ]
    complete["duration"] = complete["time"].astype(float)
    complete["event"] = complete["status"].astype(int)
    _check_outcomes(complete, "lifelines.datasets.load_lung()")
    notes = {
        "source": "lifelines.datasets.load_lung() (NCCTG, Loprinzi et al. 1994)",
        "n_raw": len(raw),
        "dropped_incomplete": len(dropped),
        "dropped_patient_ids": dropped,
        "internal_institutions": sorted(int(k) for k in internal),
        "external_institutions": sorted(int(k) for k in set(complete["inst"]) - internal),
        "split_rule": (
            f"institutions by patient count (desc, ties lower code) are internal until >= "
            f"{internal_fraction:g} of patients; internal patients split by model.data.io.assign_split "
            f"(val={val:g}, test={test:g}, salt={salt!r})"
        ),
    }
    return StudyCohort(
        name="ncctg",
        endpoint="os",
        landmark=NCCTG_LANDMARK_DAYS,
        time_unit="days",
        patients=complete[[*_PATIENT_COLUMNS, *NCCTG_COVARIATES]].reset_index(drop=True),
        numeric=NCCTG_COVARIATES,
        external_by_site=False,
        notes=notes,
    )
