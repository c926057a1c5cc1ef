"""Deterministic generator of the XMed demo corpus (DVC stage ``generate@<profile>``).

Patients are planned first (cohort, site, clinical covariates, lesions with their region and
per-visit size, survival drawn from :mod:`model.data.hazard`), then each visit is laid out
(catalogue regions at their canonical box plus jitter, lesions inside their region), rendered by
:mod:`model.data.render` and written with all targets: labels, a structured report, VQA, MCQ
and spoken queries (:mod:`model.data.tts`). Internal sites (``hospital_a``, ``hospital_b``) store
PNG; external sites (``site_c``, ``site_d``) scan only CT/MRI/X-ray patients and export 16-bit
DICOM at another resolution with a documented acquisition shift (:data:`SITES`).

Everything comes from numpy Generators seeded by ``seed``: the same parameters give byte-identical
files. Output layout (paths in records are relative to ``out_dir``'s parent, the profile root)::

    records.jsonl  patients.jsonl  generator.json
    images/<site>/<patient>/<image_id>.png     dicom/<site>/<patient>/<image_id>.dcm
    masks/<site>/<patient>/<image_id>_<k>.png  audio/<image_id>_<k>.wav

Usage::

    python -m model.data.synth --params params.yaml --profile ci --out data/ci/raw
    python -m model.data.synth manifest-only --rows 1000000 --seed 0 --out /tmp/m
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from model.data.catalogue import RegionCatalogue, load_region_catalogue
from model.data.hazard import hazard_spec, linear_predictor, sample_outcomes
from model.data.io import ShardedParquetWriter, assign_split, atomic_dir
from model.data.render import LesionShape, SiteShift, render_image, to_uint8
from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA
from model.data.tts import EspeakTTS, TextToSpeech

__all__ = [
    "COHORTS",
    "MODALITY_SPECS",
    "SITES",
    "SOURCE",
    "GenerateParams",
    "ModalitySpec",
    "generate_corpus",
    "generate_manifest_only",
    "main",
]

log = logging.getLogger(__name__)
SOURCE = "xmed-synth"
Box = tuple[float, float, float, float]

# ---------------------------------------------------------------------------------------------
# what is generated
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModalitySpec:
    """A modality: display name, body part, field of view, lesion types -> regions they occur in."""

    display: str
    body_part: str
    fov_mm: float
    lesions: dict[str, tuple[str, ...]]
    dicom: str | None = None
    normal_sentence: str = "No focal abnormality is seen."


_LUNGS = ("right lung", "left lung")
_LOBES = tuple(f"{s} {lobe} lobe" for lobe in ("frontal", "temporal", "occipital") for s in ("right", "left"))
_WALLS = ("upper wall", "lower wall", "left wall", "right wall")
MODALITY_SPECS: dict[str, ModalitySpec] = {
    "ct": ModalitySpec(
        display="CT",
        body_part="chest",
        fov_mm=360.0,
        lesions={"nodule": _LUNGS, "mass": (*_LUNGS, "liver"), "effusion": _LUNGS},
        dicom="CT",
        normal_sentence="The lungs are clear and the mediastinum is unremarkable.",
    ),
    "mri": ModalitySpec(
        display="MRI",
        body_part="brain",
        fov_mm=220.0,
        lesions={"glioma": _LOBES, "hemorrhage": _LOBES, "edema": _LOBES},
        dicom="MR",
        normal_sentence="The brain parenchyma shows normal signal.",
    ),
    "xray": ModalitySpec(
        display="X-ray",
        body_part="chest",
        fov_mm=400.0,
        lesions={
            "nodule": _LUNGS,
            "consolidation": _LUNGS,
            "pneumothorax": _LUNGS,
            "effusion": ("right costophrenic angle", "left costophrenic angle"),
            "cardiomegaly": ("heart",),
        },
        dicom="DX",
        normal_sentence="The lungs are clear and the cardiac silhouette is normal.",
    ),
    "fundus": ModalitySpec(
        display="fundus photography",
        body_part="retina",
        fov_mm=12.0,
        lesions={
            "hemorrhage": ("superior arcade", "inferior arcade", "macula"),
            "exudate": ("macula", "superior arcade", "inferior arcade"),
            "drusen": ("macula",),
            "cotton wool spot": ("superior arcade", "inferior arcade"),
        },
        normal_sentence="The optic disc, macula and vessels appear normal.",
    ),
    "pathology": ModalitySpec(
        display="histopathology",
        body_part="tissue section",
        fov_mm=2.0,
        lesions={
            "carcinoma": ("epithelium",),
            "necrosis": ("stroma",),
            "lymphocytic infiltrate": ("stroma", "epithelium"),
        },
        normal_sentence="The tissue architecture is preserved.",
    ),
    "dermoscopy": ModalitySpec(
        display="dermoscopy",
        body_part="skin",
        fov_mm=20.0,
        lesions={
            "melanoma": ("central field",),
            "nevus": ("central field", "superior field", "inferior field"),
            "seborrheic keratosis": ("central field", "superior field", "inferior field"),
            "basal cell carcinoma": ("central field",),
        },
        normal_sentence="The skin shows no pigmented lesion.",
    ),
    "ultrasound": ModalitySpec(
        display="ultrasound",
        body_part="abdomen",
        fov_mm=160.0,
        lesions={
            "cyst": ("liver", "right kidney"),
            "mass": ("liver", "right kidney"),
            "stone": ("gallbladder", "right kidney"),
        },
        normal_sentence="The liver, gallbladder and right kidney appear normal.",
    ),
    "endoscopy": ModalitySpec(
        display="endoscopy",
        body_part="colon",
        fov_mm=40.0,
        lesions={"polyp": _WALLS, "ulcer": _WALLS, "bleeding": _WALLS},
        normal_sentence="The colonic mucosa appears normal.",
    ),
}
_PHRASE = {"effusion": "pleural effusion"}
_MASS_NOUNS = {
    "pleural effusion",
    "edema",
    "hemorrhage",
    "consolidation",
    "pneumothorax",
    "cardiomegaly",
    "necrosis",
    "lymphocytic infiltrate",
    "bleeding",
    "drusen",
    "exudate",
}
SEVERITY_FRACTIONS = (0.09, 0.15)  # lesion diameter / field of view: mild < 0.09 <= moderate < 0.15 <= severe

#: Sites and their acquisition shift. External sites export DICOM at ``size_factor`` x the
#: profile's image size, with stored values scaled by ``intensity_scale`` (undone by RescaleSlope).
SITES: dict[str, tuple[str, SiteShift]] = {
    "hospital_a": ("internal", SiteShift()),
    "hospital_b": ("internal", SiteShift(contrast=0.95, brightness=0.02, gamma=1.05, noise=0.02)),
    "site_c": ("external", SiteShift(contrast=0.80, brightness=0.04, noise=0.05, size_factor=1.5)),
    "site_d": (
        "external",
        SiteShift(
            contrast=1.15,
            brightness=-0.04,
            gamma=0.9,
            noise=0.03,
            blur=1,
            size_factor=0.75,
            intensity_scale=2.0,
        ),
    ),
}


@dataclass(frozen=True)
class CohortSpec:
    """A cohort: its modalities, lesion burden, visit schedule, growth and clinical distributions."""

    modalities: tuple[str, ...]
    lesion_count_p: tuple[float, float, float]
    primary: tuple[str, ...]
    min_visits: int
    growth_mean: float
    growth_sd: float
    age: tuple[float, float]
    stage_p: tuple[float, float, float, float]
    smoking_p: tuple[float, float, float]
    mutation: dict[str, float]
    treatment: dict[str, float]
    disease: str
    complaints: tuple[str, ...] = ()


COHORTS: dict[str, CohortSpec] = {
    "lung_tki": CohortSpec(
        modalities=("ct",),
        lesion_count_p=(0.0, 0.6, 0.4),
        primary=("nodule", "mass"),
        min_visits=2,
        growth_mean=0.15,  # log diameter change per 3 months; EGFR+ on TKI: 0.27 lower (response)
        growth_sd=0.22,
        age=(64, 9),
        stage_p=(0.05, 0.10, 0.35, 0.50),
        smoking_p=(0.35, 0.40, 0.25),
        mutation={"EGFR+": 0.65, "EGFR-": 0.35},
        treatment={"TKI": 0.8, "chemo": 0.2},
        disease="non-small cell lung cancer",
        complaints=("persistent cough", "shortness of breath", "follow-up of a treated lung tumour"),
    ),
    "nsclc": CohortSpec(
        modalities=("ct",),
        lesion_count_p=(0.0, 0.65, 0.35),
        primary=("nodule", "mass"),
        min_visits=1,
        growth_mean=0.10,
        growth_sd=0.20,
        age=(66, 9),
        stage_p=(0.20, 0.25, 0.30, 0.25),
        smoking_p=(0.20, 0.45, 0.35),
        mutation={"EGFR+": 0.25, "EGFR-": 0.75},
        treatment={"chemo": 0.4, "radiotherapy": 0.2, "surgery": 0.3, "TKI": 0.1},
        disease="non-small cell lung cancer",
        complaints=("persistent cough", "haemoptysis", "chest pain", "weight loss"),
    ),
    "gbm": CohortSpec(
        modalities=("mri",),
        lesion_count_p=(0.0, 0.55, 0.45),
        primary=("glioma",),
        min_visits=1,
        growth_mean=0.15,
        growth_sd=0.20,
        age=(58, 12),
        stage_p=(0.10, 0.20, 0.30, 0.40),
        smoking_p=(0.55, 0.30, 0.15),
        mutation={"IDH-mutant": 0.3, "IDH-wildtype": 0.7},
        treatment={"radiotherapy": 0.5, "chemo": 0.3, "surgery": 0.2},
        disease="glioblastoma",
        complaints=("headache", "new-onset seizure", "progressive weakness", "confusion"),
    ),
    "general": CohortSpec(
        modalities=("xray", "fundus", "pathology", "dermoscopy", "ultrasound", "endoscopy"),
        lesion_count_p=(0.3, 0.5, 0.2),
        primary=(),
        min_visits=1,
        growth_mean=0.0,
        growth_sd=0.15,
        age=(52, 16),
        stage_p=(0.40, 0.30, 0.20, 0.10),
        smoking_p=(0.55, 0.30, 0.15),
        mutation={"none": 1.0},
        treatment={"none": 0.6, "surgery": 0.4},
        disease="",  # complaints per modality (_COMPLAINTS)
    ),
}
_INTERNAL_COHORT_P = {"lung_tki": 0.14, "nsclc": 0.10, "gbm": 0.12, "general": 0.64}
_EXTERNAL_COHORT_P = {"lung_tki": 0.30, "nsclc": 0.20, "gbm": 0.25, "general": 0.25}  # general = X-ray there
_COMPLAINTS = {
    "xray": ("cough with fever", "chest pain", "shortness of breath", "pre-operative assessment"),
    "fundus": ("blurred vision", "diabetic eye screening", "floaters"),
    "pathology": ("biopsy review", "palpable mass", "abnormal screening result"),
    "dermoscopy": ("changing mole", "new pigmented skin lesion", "itchy skin lesion"),
    "ultrasound": ("right upper quadrant pain", "abnormal liver tests", "flank pain"),
    "endoscopy": (
        "rectal bleeding",
        "change in bowel habit",
        "screening colonoscopy",
        "iron-deficiency anaemia",
    ),
}
_STAGES = ("I", "II", "III", "IV")
_SMOKING = ("never", "former", "current")


@dataclass(frozen=True)
class GenerateParams:
    """The ``data.<profile>.generate`` block of params.yaml (every key required)."""

    seed: int
    n_patients: int
    image_size: int
    external_fraction: float
    max_visits: int
    spoken_queries: int

    @classmethod
    def from_file(cls, path: str | os.PathLike, profile: str) -> GenerateParams:
        """Read ``data.<profile>.generate`` from a params file.

        Raises:
            ValueError: missing profile or key, or an unknown key (the message names the file).
        """
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
        try:
            block = doc["data"][profile]["generate"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: no data.{profile}.generate block") from e
        names = {f for f in cls.__dataclass_fields__}
        if set(block) != names:
            raise ValueError(
                f"{path}: data.{profile}.generate needs exactly {sorted(names)}, got {sorted(block)}"
            )
        return cls(**block)


# ---------------------------------------------------------------------------------------------
# patient plans (no pixels)
# ---------------------------------------------------------------------------------------------


@dataclass
class LesionPlan:
    """A lesion followed over visits: type, region, relative centre, shape and diameter per visit."""

    lesion_type: str
    region: str
    u: float
    v: float
    aspect: float
    angle: float
    phase: float
    diam_mm: list[float] = field(default_factory=list)


@dataclass
class PatientPlan:
    """Everything about one patient except pixels: the patient row, lesions, visits and jitters."""

    index: int
    patient: dict[str, Any]
    modality: str
    lesions: list[LesionPlan]
    visit_months: list[float]
    jitters: list[list[float]]  # per visit: [scale, dx, dy] then (dx1, dy1, dx2, dy2) per region


class _Stream:
    """Fast scalar draws from a seeded numpy Generator.

    Uniforms are drawn from the Generator in blocks and consumed one by one; normals use
    Box-Muller and exponentials inversion, so the stream is as deterministic as the Generator
    but a scalar draw costs a list index instead of a numpy call (manifest mode needs well
    over 10k rows/s). Method names follow ``numpy.random.Generator``.
    """

    __slots__ = ("_it", "random")

    def __init__(self, rng: np.random.Generator) -> None:
        def blocks() -> Iterator[list[float]]:
            while True:
                yield rng.random(4096).tolist()

        self._it = itertools.chain.from_iterable(blocks())
        #: the next uniform on [0, 1) (a C-level call: the hot path of manifest mode)
        self.random = self._it.__next__

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def normal(self, loc: float = 0.0, scale: float = 1.0) -> float:
        r = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        return loc + scale * r * math.cos(2.0 * math.pi * self.random())

    def standard_exponential(self) -> float:
        return -math.log(1.0 - self.random())

    def exponential(self, scale: float = 1.0) -> float:
        return scale * self.standard_exponential()

    def integers(self, low: int, high: int) -> int:
        return low + min(int(self.random() * (high - low)), high - low - 1)

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = int(self.random() * (i + 1))
            items[i], items[j] = items[j], items[i]

    def permutation(self, n: int) -> list[int]:
        order = list(range(n))
        self.shuffle(order)
        return order

    def sample(self, items: Sequence[Any], k: int) -> list[Any]:
        """Up to ``k`` distinct items in random order (partial Fisher-Yates)."""
        pool, n = list(items), len(items)
        for i in range(min(k, n)):
            j = i + int(self.random() * (n - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[: min(k, n)]

    def uniforms(self, low: float, high: float, n: int) -> list[float]:
        """``n`` uniform draws on ``[low, high)``."""
        w = high - low
        return [low + w * u for u in itertools.islice(self._it, n)]


_CUMULATIVE: dict[tuple, tuple[list[str], list[float]]] = {}


def _pick(rng: _Stream, weights: dict[str, float]) -> str:
    """A key drawn with probability proportional to its weight (cumulative tables cached by content)."""
    items = tuple(weights.items())
    table = _CUMULATIVE.get(items)
    if table is None:
        keys, cum, acc = list(weights), [], 0.0
        for w in weights.values():
            acc += w
            cum.append(acc)
        table = _CUMULATIVE[items] = (keys, cum)
    keys, cum = table
    u = rng.random() * cum[-1]
    for key, c in zip(keys, cum):
        if u < c:
            return key
    return keys[-1]


def _one(rng: _Stream, options: Sequence[Any]) -> Any:
    return options[int(rng.random() * len(options))]


def _site_for(index: int, external_fraction: float, offset: float, rng: _Stream) -> str:
    """Stratified, streamable site assignment: exactly ~external_fraction of patients are external."""
    lo, hi = (
        math.floor(index * external_fraction + offset),
        math.floor((index + 1) * external_fraction + offset),
    )
    if hi > lo:
        return "site_c" if lo % 2 == 0 else "site_d"
    return "hospital_a" if rng.random() < 0.5 else "hospital_b"


def _clinical(rng: _Stream, cohort: str, modality: str) -> dict[str, Any]:
    spec = COHORTS[cohort]
    age = min(max(round(rng.normal(*spec.age)), 18), 89)
    sex = "F" if rng.random() < 0.5 else "M"
    smoking = _pick(rng, dict(zip(_SMOKING, spec.smoking_p)))
    stage = _pick(rng, dict(zip(_STAGES, spec.stage_p)))
    mutation, treatment = _pick(rng, spec.mutation), _pick(rng, spec.treatment)
    complaint = _one(rng, spec.complaints or _COMPLAINTS[modality])
    person = "woman" if sex == "F" else "man"
    smoke_txt = {"never": "never smoker", "former": "former smoker", "current": "current smoker"}[smoking]
    if spec.disease:
        history = (
            f"{age}-year-old {person}, {smoke_txt}, with stage {stage} {spec.disease} "
            f"({mutation}), treated with {treatment}."
        )
    else:
        history = f"{age}-year-old {person}, {smoke_txt}, referred for {MODALITY_SPECS[modality].display}."
    return {
        "cohort": cohort,
        "age": float(age),
        "sex": sex,
        "smoking": smoking,
        "tnm_stage": stage,
        "mutation": mutation,
        "treatment": treatment,
        "chief_complaint": complaint,
        "history": history,
    }


@dataclass(frozen=True)
class _Tables:
    """Catalogue lookups precomputed once per run: regions per modality and lesion size caps."""

    catalogue: RegionCatalogue
    regions: dict[str, list[tuple[str, Box]]]
    cap_mm: dict[tuple[str, str], float]

    @classmethod
    def build(cls, catalogue: RegionCatalogue) -> _Tables:
        regions = {m: [(e.name, e.box) for e in catalogue.for_modality(m)] for m in MODALITY_SPECS}
        missing = [
            (m, r)
            for m, spec in MODALITY_SPECS.items()
            for rs in spec.lesions.values()
            for r in rs
            if r not in dict(regions[m])
        ]
        if missing:
            raise ValueError(f"the region catalogue lacks lesion regions {missing} (modality, region)")
        # largest lesion diameter that fits its region (boundary reach 1.12 x radius, 15% margin for jitter)
        cap = {
            (m, name): 0.85 * min(b[2] - b[0], b[3] - b[1]) * MODALITY_SPECS[m].fov_mm / 1.12
            for m, rows in regions.items()
            for name, b in rows
        }
        return cls(catalogue, regions, cap)


def _plan_lesions(rng: _Stream, cohort: str, modality: str, tables: _Tables) -> list[LesionPlan]:
    spec, mspec = COHORTS[cohort], MODALITY_SPECS[modality]
    u, p0, p1 = rng.random(), spec.lesion_count_p[0], spec.lesion_count_p[1]
    n = 0 if u < p0 else 1 if u < p0 + p1 else 2
    lesions: list[LesionPlan] = []
    used: set[str] = set()
    for k in range(n):
        types = list(spec.primary) if (k == 0 and spec.primary) else list(mspec.lesions)
        rng.shuffle(types)
        for t in types:
            free = [r for r in mspec.lesions[t] if r not in used]
            if free:
                region = _one(rng, free)
                used.add(region)
                d0 = mspec.fov_mm * rng.uniform(0.05, 0.16)
                lesions.append(
                    LesionPlan(
                        t,
                        region,
                        rng.random(),
                        rng.random(),
                        rng.uniform(0.65, 1.0),
                        rng.uniform(0, math.pi),
                        rng.uniform(0, 2 * math.pi),
                        [min(d0, tables.cap_mm[(modality, region)])],
                    )
                )
                break
    return lesions


def _imaging_biomarkers(plan_lesions: list[LesionPlan], growth: float, cohort: str) -> tuple[float, float]:
    if cohort == "general" or not plan_lesions:
        return 0.0, 0.0
    return sum(lp.diam_mm[0] for lp in plan_lesions) / 10.0, growth


def _plan_patient(index: int, rng: _Stream, *, site: str, max_visits: int, tables: _Tables) -> PatientPlan:
    role = SITES[site][0]
    cohort = _pick(rng, _EXTERNAL_COHORT_P if role == "external" else _INTERNAL_COHORT_P)
    spec = COHORTS[cohort]
    modality = "xray" if (role == "external" and cohort == "general") else _one(rng, spec.modalities)
    clinical = _clinical(rng, cohort, modality)
    lesions = _plan_lesions(rng, cohort, modality, tables)
    mean = spec.growth_mean - (
        0.27 if (clinical["mutation"] == "EGFR+" and clinical["treatment"] == "TKI") else 0
    )
    growth = float(rng.normal(mean, spec.growth_sd))
    n_visits = int(rng.integers(min(spec.min_visits, max_visits), max_visits + 1))
    months = [0.0]
    for _ in range(n_visits - 1):
        months.append(round(months[-1] + rng.uniform(2.0, 4.0), 1))
    size_cm, g = _imaging_biomarkers(lesions, growth, cohort)
    eta = linear_predictor(
        age=clinical["age"],
        tnm_stage=clinical["tnm_stage"],
        smoking=clinical["smoking"],
        mutation=clinical["mutation"],
        treatment=clinical["treatment"],
        size_cm=size_cm,
        growth=g,
    )
    outcomes = sample_outcomes(rng, cohort=cohort, eta=eta)
    months = [m for m in months if m == 0.0 or m <= outcomes["os_months"]]
    floor_mm = 0.02 * MODALITY_SPECS[modality].fov_mm
    for lp in lesions:
        cap, d0 = tables.cap_mm[(modality, lp.region)], lp.diam_mm[0]
        for m in months[1:]:
            d = d0 * math.exp(growth * m / 3.0 + rng.normal(0.0, 0.03))
            lp.diam_mm.append(min(max(d, floor_mm), cap))
    n_regions = len(tables.regions[modality])
    jitters = [
        [
            rng.uniform(0.94, 1.04),
            rng.uniform(-0.04, 0.04),
            rng.uniform(-0.04, 0.04),
            *rng.uniforms(-0.015, 0.015, 4 * n_regions),
        ]
        for _ in months
    ]
    patient = {"patient_id": f"P{index:06d}", "site": site, "site_role": role, **clinical, **outcomes}
    return PatientPlan(index, patient, modality, lesions, months, jitters)


def _iter_plans(
    *, seed: int, external_fraction: float, max_visits: int, tables: _Tables
) -> Iterator[PatientPlan]:
    """An endless, deterministic stream of patient plans."""
    rng = _Stream(np.random.default_rng([seed, 0]))
    offset = float(np.random.default_rng([seed, 4]).random())
    index = 0
    while True:
        site = _site_for(index, external_fraction, offset, rng)
        yield _plan_patient(index, rng, site=site, max_visits=max_visits, tables=tables)
        index += 1


# ---------------------------------------------------------------------------------------------
# layout of one visit: pixel boxes and lesion geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitLayout:
    """Pixel geometry of one visit at one resolution."""

    size: int
    spacing_mm: float
    regions: dict[str, Box]
    shapes: list[LesionShape]
    sizes_mm: list[float]


def _layout(plan: PatientPlan, visit: int, size: int, tables: _Tables) -> VisitLayout:
    """Regions at their canonical box, scaled/shifted/jittered per visit; lesions inside their region."""
    j = plan.jitters[visit]
    scale, dx, dy = j[0], j[1], j[2]
    regions: dict[str, Box] = {}
    sx, sy = 0.5 + dx, 0.5 + dy
    o = 3
    for name, (bx1, by1, bx2, by2) in tables.regions[plan.modality]:
        x1 = min(max((bx1 - 0.5) * scale + sx + j[o], 0.0), 0.98)
        y1 = min(max((by1 - 0.5) * scale + sy + j[o + 1], 0.0), 0.98)
        x2 = min(max((bx2 - 0.5) * scale + sx + j[o + 2], x1 + 0.02), 1.0)
        y2 = min(max((by2 - 0.5) * scale + sy + j[o + 3], y1 + 0.02), 1.0)
        regions[name] = (round(x1 * size, 1), round(y1 * size, 1), round(x2 * size, 1), round(y2 * size, 1))
        o += 4
    spacing = MODALITY_SPECS[plan.modality].fov_mm / size
    shapes, sizes = [], []
    for lp in plan.lesions:
        rx1, ry1, rx2, ry2 = regions[lp.region]
        fit = min(rx2 - rx1, ry2 - ry1) / 2.0 / 1.12 - 0.3
        a = max(min(lp.diam_mm[visit] / 2.0 / spacing, fit), 1.0)
        reach = a * 1.12
        cx = rx1 + reach + lp.u * max(rx2 - rx1 - 2 * reach, 0.0)
        cy = ry1 + reach + lp.v * max(ry2 - ry1 - 2 * reach, 0.0)
        shapes.append(LesionShape(lp.lesion_type, cx, cy, a, max(a * lp.aspect, 1.0), lp.angle, lp.phase))
        sizes.append(round(2 * a * spacing, 2 if spacing < 0.1 else 1))
    return VisitLayout(size, spacing, regions, shapes, sizes)


def _analytic_box(s: LesionShape, size: int) -> Box:
    c, n = math.cos(s.angle), math.sin(s.angle)
    hx = math.sqrt((s.a * c) ** 2 + (s.b * n) ** 2) * 1.05
    hy = math.sqrt((s.a * n) ** 2 + (s.b * c) ** 2) * 1.05
    x1, y1 = max(s.cx - hx, 0.0), max(s.cy - hy, 0.0)
    return (
        round(x1, 1),
        round(y1, 1),
        round(max(min(s.cx + hx, size), x1 + 1), 1),
        round(max(min(s.cy + hy, size), y1 + 1), 1),
    )


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


# ---------------------------------------------------------------------------------------------
# targets: labels, report, VQA, MCQ
# ---------------------------------------------------------------------------------------------


def _severity(size_mm: float, fov_mm: float) -> str:
    frac = size_mm / fov_mm
    return (
        "mild" if frac < SEVERITY_FRACTIONS[0] else "moderate" if frac < SEVERITY_FRACTIONS[1] else "severe"
    )


def _phrase(t: str) -> str:
    return _PHRASE.get(t, t)


# phrase tables, computed once: article before a (consonant-initial) severity word or bare phrase
_ALL_TYPES = sorted({t for spec in MODALITY_SPECS.values() for t in spec.lesions})
_ART = {t: "" if _phrase(t) in _MASS_NOUNS else "a " for t in _ALL_TYPES}
_ART_BARE = {
    t: "" if _phrase(t) in _MASS_NOUNS else ("an " if _phrase(t)[0] in "aeiou" else "a ") for t in _ALL_TYPES
}
_NEGATIONS = {
    m: [(t, f"No {_phrase(t)} is seen.") for t in spec.lesions] for m, spec in MODALITY_SPECS.items()
}
_OTHER_DISPLAYS = {m: [o.display for k, o in MODALITY_SPECS.items() if k != m] for m in MODALITY_SPECS}


def _mm(v: float) -> str:
    return f"{v:.0f} mm" if v >= 10 else f"{v:.1f} mm" if v >= 1 else f"{v:.2f} mm"


def _change(d_prev: float, d_now: float) -> str:
    return "increased" if d_now > 1.1 * d_prev else "decreased" if d_now < 0.9 * d_prev else "stable"


def _report(modality: str, lesions: list[dict], prior_sizes: list[float] | None) -> tuple[str, str]:
    """Structured report: one sentence per finding (present with severity/region/size, or negated)."""
    spec = MODALITY_SPECS[modality]
    present = {les["lesion_type"] for les in lesions}
    negations = [text for t, text in _NEGATIONS[modality] if t not in present]
    if not lesions:
        return " ".join([spec.normal_sentence, *negations]), f"Normal {spec.display} examination."
    sentences = [
        f"There is {_ART[les['lesion_type']]}{les['severity']} {_phrase(les['lesion_type'])} in the "
        f"{les['region']}, measuring {_mm(les['size_mm'])}."
        for les in lesions
    ]
    impression = (
        "; ".join(
            f"{les['severity'].capitalize()} {_phrase(les['lesion_type'])} in the {les['region']}"
            for les in lesions
        )
        + "."
    )
    for les, d0 in zip(lesions, prior_sizes or ()):
        ch, what = _change(d0, les["size_mm"]), f"the {_phrase(les['lesion_type'])} in the {les['region']}"
        sizes = f"({_mm(d0)} to {_mm(les['size_mm'])})"
        impression += f" Compared with the prior study, {what} " + (
            "is stable." if ch == "stable" else f"has {ch} in size {sizes}."
        )
    return " ".join(sentences + negations), impression


def _closed_pair(rng: _Stream, modality: str, lesions: list[dict], regions: list[str]) -> list[dict]:
    """One yes and one no question (so closed answers are exactly balanced); only the chosen text is built."""
    spec = MODALITY_SPECS[modality]
    present = {les["lesion_type"] for les in lesions}
    absent = [t for t in spec.lesions if t not in present]
    if lesions:
        les = lesions[int(rng.random() * len(lesions))]
        t, k = les["lesion_type"], int(rng.random() * 3)
        yes = (
            f"Is the imaging modality {spec.display}?"
            if k == 0
            else f"Is there {_ART_BARE[t]}{_phrase(t)} in the {les['region']}?"
            if k == 1
            else "Is there any abnormality in this image?"
        )
        taken = {x["region"] for x in lesions if x["lesion_type"] == t}
        wrong = [r for r in regions if r not in taken]
        k = int(rng.random() * 4)
        if k == 2 and wrong:
            no = f"Is there {_ART_BARE[t]}{_phrase(t)} in the {_one(rng, wrong)}?"
        elif k == 3 and absent:
            a = _one(rng, absent)
            no = f"Is there {_ART_BARE[a]}{_phrase(a)} in this image?"
        else:
            no = (
                "Is this image normal?"
                if k == 1
                else f"Is the imaging modality {_one(rng, _OTHER_DISPLAYS[modality])}?"
            )
    else:
        yes = "Is this image normal?" if rng.random() < 0.5 else f"Is the imaging modality {spec.display}?"
        k = int(rng.random() * 3)
        a = _one(rng, absent)
        no = (
            "Is there any abnormality in this image?"
            if k == 0
            else f"Is there {_ART_BARE[a]}{_phrase(a)} in this image?"
            if k == 1
            else f"Is the imaging modality {_one(rng, _OTHER_DISPLAYS[modality])}?"
        )
    return [
        {"question": yes, "answer": "yes", "answer_type": "closed"},
        {"question": no, "answer": "no", "answer_type": "closed"},
    ]


def _open_items(
    rng: _Stream, modality: str, diagnosis: str, lesions: list[dict], prior_sizes: list[float] | None
) -> list[dict]:
    """Two open questions: modality, body part, main finding, lesion location/size/severity/change."""
    spec = MODALITY_SPECS[modality]
    n = 3 + (3 + (prior_sizes is not None) if lesions else 0)
    i = int(rng.random() * len(lesions)) if lesions else 0
    out = []
    for k in sorted(rng.sample(range(n), 2)):
        if k == 0:
            q, a = "What imaging modality is used?", spec.display
        elif k == 1:
            q, a = "Which body part is shown?", spec.body_part
        elif k == 2:
            q, a = "What is the main finding?", diagnosis
        else:
            les, p = lesions[i], _phrase(lesions[i]["lesion_type"])
            where = " and ".join(x["region"] for x in lesions if x["lesion_type"] == les["lesion_type"])
            q, a = (
                (f"Where is the {p} located?", where)
                if k == 3
                else (f"What is the size of the {p}?", _mm(les["size_mm"]))
                if k == 4
                else (f"How severe is the {p}?", les["severity"])
                if k == 5
                else (
                    f"How has the {p} changed since the prior study?",
                    _change(prior_sizes[i], les["size_mm"]),
                )
            )
        out.append({"question": q, "answer": a, "answer_type": "open"})
    return out


def _mcq(rng: _Stream, modality: str, lesions: list[dict], regions: list[str]) -> list[dict]:
    """One or two lettered multiple-choice questions: the modality, then lesion location or main finding."""
    spec = MODALITY_SPECS[modality]
    items = [
        (
            "Which imaging modality was used for this image?",
            spec.display,
            rng.sample(_OTHER_DISPLAYS[modality], 3),
        )
    ]
    if rng.random() < 0.5:
        if lesions:
            les = lesions[0]
            taken = {x["region"] for x in lesions if x["lesion_type"] == les["lesion_type"]}
            wrong = [r for r in regions if r not in taken]
            if wrong:
                items.append(
                    (
                        f"Where is the {_phrase(les['lesion_type'])} located?",
                        les["region"],
                        rng.sample(wrong, 3),
                    )
                )
        else:
            items.append(("What is the main finding?", "normal", rng.sample(list(spec.lesions), 3)))
    out = []
    for question, right, wrong in items:
        options = [right, *wrong]
        rng.shuffle(options)
        out.append({"question": question, "options": options, "answer": chr(65 + options.index(right))})
    return out


def _image_record(
    plan: PatientPlan,
    visit: int,
    lay: VisitLayout,
    lesion_boxes: list[Box],
    *,
    image_path: str,
    mask_paths: list[str | None],
    prior_sizes: list[float] | None,
    text_rng: _Stream,
) -> dict[str, Any]:
    """One records.jsonl row (every ImageRecord field but ``split`` and ``image_sha256``).

    ``prior_sizes`` are the lesion sizes recorded at the previous visit (None at the first).
    """
    p, m = plan.patient, plan.modality
    fov = MODALITY_SPECS[m].fov_mm
    lesions = [
        {
            "lesion_type": lp.lesion_type,
            "region": lp.region,
            "x1": b[0],
            "y1": b[1],
            "x2": b[2],
            "y2": b[3],
            "size_mm": s,
            "severity": _severity(s, fov),
            "mask_path": mp,
        }
        for lp, b, s, mp in zip(plan.lesions, lesion_boxes, lay.sizes_mm, mask_paths)
    ]
    diagnosis = max(lesions, key=lambda x: x["size_mm"])["lesion_type"] if lesions else "normal"
    findings = list(dict.fromkeys(x["lesion_type"] for x in lesions)) or ["normal"]
    names = list(lay.regions)
    report_findings, impression = _report(m, lesions, prior_sizes)
    vqa = _closed_pair(text_rng, m, lesions, names) + _open_items(
        text_rng, m, diagnosis, lesions, prior_sizes
    )
    vqa = [vqa[k] for k in text_rng.permutation(len(vqa))]
    pid = p["patient_id"]
    return {
        "image_id": f"{pid}_v{visit}_{m}",
        "source": SOURCE,
        "patient_id": pid,
        "visit_index": visit,
        "visit_month": plan.visit_months[visit],
        "site": p["site"],
        "site_role": p["site_role"],
        "modality": m,
        "body_part": MODALITY_SPECS[m].body_part,
        "image_path": image_path,
        "width": lay.size,
        "height": lay.size,
        "pixel_spacing_mm": round(lay.spacing_mm, 4),
        "diagnosis": diagnosis,
        "findings": findings,
        "regions": [
            {"name": n, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]} for n, b in lay.regions.items()
        ],
        "lesions": lesions,
        "report_findings": report_findings,
        "report_impression": impression,
        "vqa": vqa,
        "mcq": _mcq(text_rng, m, lesions, names),
        "spoken_queries": [],
        "prior_image_id": f"{pid}_v{visit - 1}_{m}" if visit > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# file writers
# ---------------------------------------------------------------------------------------------

#: DICOM encoding per modality: real value = base + v * span for a rendered v in [0, 1]
#: (CT in HU, MR in arbitrary units, DX in detector units); stored = (real + offset) * scale.
_DICOM_ENCODING = {"ct": (-1000.0, 2000.0, 1024.0), "mri": (0.0, 1000.0, 0.0), "xray": (0.0, 4095.0, 0.0)}
_DICOM_SOP = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
}


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")


def _write_dicom(
    path: Path,
    img: np.ndarray,
    *,
    plan: PatientPlan,
    visit: int,
    image_id: str,
    seed: int,
    spacing_mm: float,
    shift: SiteShift,
) -> None:
    """Export a rendered grayscale image as a 16-bit MONOCHROME2 DICOM file with deterministic UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    base, span, offset = _DICOM_ENCODING[plan.modality]
    scale = shift.intensity_scale
    stored = np.clip(np.rint((base + img.astype(np.float64) * span + offset) * scale), 0, 65535).astype(
        np.uint16
    )
    pid, dicom_modality = plan.patient["patient_id"], MODALITY_SPECS[plan.modality].dicom

    def uid(kind: str, key: str) -> str:
        return generate_uid(entropy_srcs=[f"xmed-synth:{seed}", kind, key])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DICOM_SOP[dicom_modality]
    meta.MediaStorageSOPInstanceUID = uid("sop", image_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study", f"{pid}_v{visit}")
    ds.SeriesInstanceUID = uid("series", image_id)
    ds.FrameOfReferenceUID = uid("frame", pid)
    ds.Modality, ds.Manufacturer, ds.InstitutionName = dicom_modality, "XMed synthetic", plan.patient["site"]
    ds.PatientID, ds.PatientSex, ds.PatientAge = pid, plan.patient["sex"], f"{int(plan.patient['age']):03d}Y"
    ds.BodyPartExamined = MODALITY_SPECS[plan.modality].body_part.upper()
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = str(visit), 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if plan.modality != "xray" else "PA"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.RescaleSlope, ds.RescaleIntercept = f"{1.0 / scale:g}", f"{-offset:g}"
    ds.RescaleType = "HU" if dicom_modality == "CT" else "US"
    ds.WindowCenter, ds.WindowWidth = f"{base + span / 2:g}", f"{span:g}"
    ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------


def _check_args(
    *, n_patients: int, image_size: int, external_fraction: float, max_visits: int, spoken_queries: int
) -> None:
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be within 16..1024 pixels, got {image_size}")
    if not 0.0 <= external_fraction < 1.0:
        raise ValueError(f"external_fraction must be within [0, 1), got {external_fraction}")
    if max_visits < 1:
        raise ValueError(f"max_visits must be >= 1, got {max_visits}")
    if spoken_queries < 0:
        raise ValueError(f"spoken_queries must be >= 0, got {spoken_queries}")


_PATIENT_FIELDS = [f.name for f in PATIENT_SCHEMA if f.name != "split"]


def _patient_row(plan: PatientPlan) -> dict[str, Any]:
    return {k: plan.patient[k] for k in _PATIENT_FIELDS}


def _spoken_counts(n_images: int, n_queries: int, seed: int) -> Counter:
    """How many spoken queries each image (by global index) carries; spread evenly, then cycled."""
    perm = np.random.default_rng([seed, 3]).permutation(n_images)
    return Counter(int(perm[j % n_images]) for j in range(n_queries))


@dataclass
class _Writer:
    """Writes the files of one corpus under ``root`` (the temporary folder) and counts them."""

    root: Path
    prefix: str
    seed: int
    image_size: int
    tables: _Tables
    tts: TextToSpeech | None
    pixel_rng: np.random.Generator
    text_rng: _Stream
    counts: Counter = field(default_factory=Counter)

    def visit(self, plan: PatientPlan, visit: int, prior_sizes: list[float] | None, n_spoken: int) -> dict:
        site = plan.patient["site"]
        role, shift = SITES[site]
        size = round(self.image_size * shift.size_factor) if role == "external" else self.image_size
        lay = _layout(plan, visit, size, self.tables)
        img, masks = render_image(
            plan.modality, size=size, regions=lay.regions, lesions=lay.shapes, rng=self.pixel_rng, shift=shift
        )
        iid, rel = (
            f"{plan.patient['patient_id']}_v{visit}_{plan.modality}",
            f"{site}/{plan.patient['patient_id']}",
        )
        image_path = self._store_image(img, plan, visit, iid, rel, lay.spacing_mm, shift)
        mask_paths = []
        for k, mask in enumerate(masks):
            _write_png(self.root / "masks" / rel / f"{iid}_{k}.png", mask.astype(np.uint8) * 255)
            mask_paths.append(f"{self.prefix}/masks/{rel}/{iid}_{k}.png")
        rec = _image_record(
            plan,
            visit,
            lay,
            [_mask_box(m) for m in masks],
            image_path=image_path,
            mask_paths=mask_paths,
            prior_sizes=prior_sizes,
            text_rng=self.text_rng,
        )
        rec["spoken_queries"] = [
            self._speak(iid, k, rec["vqa"][k % len(rec["vqa"])]) for k in range(n_spoken)
        ]
        self.counts.update(
            {
                "images": 1,
                f"modality:{plan.modality}": 1,
                f"site:{site}": 1,
                "masks": len(masks),
                "dicom_files" if role == "external" else "png_images": 1,
            }
        )
        return rec

    def _store_image(
        self,
        img: np.ndarray,
        plan: PatientPlan,
        visit: int,
        iid: str,
        rel: str,
        spacing: float,
        shift: SiteShift,
    ) -> str:
        """PNG for internal sites, DICOM for external ones; returns the record's image_path."""
        if plan.patient["site_role"] != "external":
            _write_png(self.root / "images" / rel / f"{iid}.png", to_uint8(img))
            return f"{self.prefix}/images/{rel}/{iid}.png"
        dst = self.root / "dicom" / rel / f"{iid}.dcm"
        _write_dicom(
            dst, img, plan=plan, visit=visit, image_id=iid, seed=self.seed, spacing_mm=spacing, shift=shift
        )
        return f"{self.prefix}/dicom/{rel}/{iid}.dcm"

    def _speak(self, image_id: str, k: int, item: dict) -> dict:
        (self.root / "audio").mkdir(exist_ok=True)
        self.tts.synthesize(item["question"], self.root / "audio" / f"{image_id}_{k}.wav")
        self.counts["audio_files"] += 1
        return {
            "text": item["question"],
            "audio_path": f"{self.prefix}/audio/{image_id}_{k}.wav",
            "answer": item["answer"],
        }


def _generator_json(
    params: dict[str, Any], catalogue: RegionCatalogue, counts: dict[str, Any], tts: TextToSpeech | None
) -> dict[str, Any]:
    return {
        "generator": "model.data.synth",
        "source": SOURCE,
        "params": params,
        "catalogue": {"version": catalogue.version, "regions": len(catalogue)},
        "modalities": {k: asdict(v) for k, v in MODALITY_SPECS.items()},
        "severity_fractions_of_fov": list(SEVERITY_FRACTIONS),
        "sites": {k: {"role": role, **asdict(shift)} for k, (role, shift) in SITES.items()},
        "dicom_encoding": {k: dict(zip(("base", "span", "offset"), v)) for k, v in _DICOM_ENCODING.items()},
        "cohort_probabilities": {"internal": _INTERNAL_COHORT_P, "external": _EXTERNAL_COHORT_P},
        "cohorts": {
            k: {
                "modalities": list(v.modalities),
                "growth_mean_log_per_3_months": v.growth_mean,
                "growth_sd": v.growth_sd,
                "min_visits": v.min_visits,
            }
            for k, v in COHORTS.items()
        },
        "hazard": hazard_spec(),
        "tts": None
        if tts is None
        else {
            "backend": type(tts).__name__,
            **{k: getattr(tts, k) for k in ("voice", "speed") if hasattr(tts, k)},
        },
        "counts": counts,
    }


def generate_corpus(
    out_dir: str | os.PathLike,
    *,
    seed: int,
    n_patients: int,
    image_size: int,
    external_fraction: float,
    max_visits: int,
    spoken_queries: int,
    tts: TextToSpeech | None = None,
) -> dict[str, Any]:
    """Generate the raw corpus into ``out_dir`` (atomically: a failure leaves nothing behind).

    Args:
        out_dir: the output folder, normally ``data/<profile>/raw``; record paths start with its
            name and are relative to its parent.
        seed: seeds every random stream; same arguments give byte-identical files.
        n_patients: number of patients (each with 1..max_visits visits).
        image_size: width and height of internal-site images (external DICOM: x1.5 or x0.75).
        external_fraction: share of patients scanned at the external sites.
        max_visits: most visits per patient.
        spoken_queries: number of questions rendered to WAV.
        tts: speech backend; ``None`` uses :class:`~model.data.tts.EspeakTTS` (only when
            ``spoken_queries > 0``).

    Returns:
        Counts (patients, images, per modality/site/cohort, files) plus ``elapsed_s``.

    Raises:
        ValueError: an argument is out of range.
        TTSError: spoken queries were requested and espeak-ng is missing.
    """
    _check_args(
        n_patients=n_patients,
        image_size=image_size,
        external_fraction=external_fraction,
        max_visits=max_visits,
        spoken_queries=spoken_queries,
    )
    start = time.perf_counter()
    params = {
        "seed": seed,
        "n_patients": n_patients,
        "image_size": image_size,
        "external_fraction": external_fraction,
        "max_visits": max_visits,
        "spoken_queries": spoken_queries,
    }
    if tts is None and spoken_queries > 0:
        tts = EspeakTTS()
    catalogue = load_region_catalogue()
    tables = _Tables.build(catalogue)
    plan_args = {
        "seed": seed,
        "external_fraction": external_fraction,
        "max_visits": max_visits,
        "tables": tables,
    }
    # two passes over the (cheap, deterministic) plan stream keep memory flat: count, then render
    n_images = sum(len(p.visit_months) for p in itertools.islice(_iter_plans(**plan_args), n_patients))
    spoken = _spoken_counts(n_images, spoken_queries, seed)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        w = _Writer(
            tmp,
            out.name,
            seed,
            image_size,
            tables,
            tts,
            np.random.default_rng([seed, 1]),
            _Stream(np.random.default_rng([seed, 2])),
        )
        g = 0
        with (
            open(tmp / "records.jsonl", "w", encoding="utf-8") as rec_fh,
            open(tmp / "patients.jsonl", "w", encoding="utf-8") as pat_fh,
        ):
            for plan in itertools.islice(_iter_plans(**plan_args), n_patients):
                pat_fh.write(json.dumps(_patient_row(plan)) + "\n")
                w.counts.update({"patients": 1, f"cohort:{plan.patient['cohort']}": 1})
                prior = None
                for v in range(len(plan.visit_months)):
                    rec = w.visit(plan, v, prior, spoken.get(g, 0))
                    rec_fh.write(json.dumps(rec) + "\n")
                    prior, g = [x["size_mm"] for x in rec["lesions"]], g + 1
                w.counts["multi_visit_patients"] += len(plan.visit_months) > 1
        counts = _nest_counts(w.counts)
        with open(tmp / "generator.json", "w", encoding="utf-8") as fh:
            json.dump(_generator_json(params, catalogue, counts, tts), fh, indent=2, sort_keys=True)
    log.info(
        "generated %d patients, %d images into %s in %.1fs",
        counts["patients"],
        counts["images"],
        out,
        time.perf_counter() - start,
    )
    return {**counts, "out_dir": str(out), "elapsed_s": round(time.perf_counter() - start, 2)}


def _nest_counts(c: Counter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(c):
        if ":" in k:
            group, name = k.split(":", 1)
            out.setdefault(f"by_{group}", {})[name] = c[k]
        else:
            out[k] = c[k]
    for k in (
        "patients",
        "images",
        "masks",
        "png_images",
        "dicom_files",
        "audio_files",
        "multi_visit_patients",
    ):
        out.setdefault(k, 0)
    return out


# ---------------------------------------------------------------------------------------------
# manifest-only mode (scale tests): the same record shapes, no pixels
# ---------------------------------------------------------------------------------------------


def generate_manifest_only(
    out_dir: str | os.PathLike,
    *,
    n_rows: int,
    seed: int,
    image_size: int = 64,
    external_fraction: float = 0.2,
    max_visits: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_salt: str = "xmed-v1",
    rows_per_shard: int = 100_000,
    row_group_size: int = 2_048,
) -> dict[str, Any]:
    """Stream ``n_rows`` image-manifest rows (no pixels) as ingest would write them; memory is constant.

    Rows have the full generator's shapes (regions, lesions, reports, VQA, MCQ, some spoken
    queries), a patient-level split from :func:`~model.data.io.assign_split`, a well-formed
    fake sha256 and paths to files that do not exist. Writes ``out_dir/images/part-*.parquet``
    (:data:`IMAGE_SCHEMA`) and ``out_dir/patients.parquet`` (:data:`PATIENT_SCHEMA`).

    Args:
        out_dir: output folder (replaced atomically).
        n_rows: number of image rows.
        seed: seeds the patient stream.
        image_size: pixel grid of the boxes (external rows too, as after ingest).
        external_fraction: share of external-site patients.
        max_visits: most visits per patient.
        val_fraction: validation share of internal patients.
        test_fraction: test share of internal patients.
        split_salt: salt of the split hash.
        rows_per_shard: rows per Parquet shard.
        row_group_size: rows buffered before each Parquet write (bounds memory).

    Returns:
        Counts: rows, patients, shards, per split, ``rows_per_s``.

    Raises:
        ValueError: an argument is out of range.
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    _check_args(
        n_patients=1,
        image_size=image_size,
        external_fraction=external_fraction,
        max_visits=max_visits,
        spoken_queries=0,
    )
    start = time.perf_counter()
    tables = _Tables.build(load_region_catalogue())
    text_rng = _Stream(np.random.default_rng([seed, 2]))
    counts: Counter = Counter()
    with (
        atomic_dir(out_dir) as tmp,
        ShardedParquetWriter(
            tmp / "images", IMAGE_SCHEMA, rows_per_shard=rows_per_shard, row_group_size=row_group_size
        ) as writer,
        _PatientWriter(tmp / "patients.parquet", row_group_size) as patients,
    ):
        for plan in _iter_plans(
            seed=seed, external_fraction=external_fraction, max_visits=max_visits, tables=tables
        ):
            pid, role = plan.patient["patient_id"], plan.patient["site_role"]
            split = assign_split(pid, role, val=val_fraction, test=test_fraction, salt=split_salt)
            patients.write({**_patient_row(plan), "split": split})
            counts.update({"patients": 1, f"split:{split}": 1})
            prior = None
            for v in range(len(plan.visit_months)):
                rec = _manifest_row(plan, v, image_size, tables, prior, text_rng, seed, counts["rows"])
                rec["split"] = split
                writer.write(rec)
                prior = [x["size_mm"] for x in rec["lesions"]]
                counts["rows"] += 1
                if counts["rows"] >= n_rows:
                    break
            if counts["rows"] >= n_rows:
                break
    elapsed = time.perf_counter() - start
    out = _nest_counts(counts)
    out.update(
        rows=counts["rows"],
        shards=len(writer.shards),
        out_dir=str(out_dir),
        elapsed_s=round(elapsed, 2),
        rows_per_s=round(counts["rows"] / max(elapsed, 1e-9)),
    )
    for k in ("images", "masks", "png_images", "dicom_files", "audio_files", "multi_visit_patients"):
        out.pop(k, None)
    return out


def _manifest_row(
    plan: PatientPlan,
    visit: int,
    size: int,
    tables: _Tables,
    prior: list[float] | None,
    text_rng: _Stream,
    seed: int,
    row_index: int,
) -> dict[str, Any]:
    site, pid = plan.patient["site"], plan.patient["patient_id"]
    lay = _layout(plan, visit, size, tables)
    iid = f"{pid}_v{visit}_{plan.modality}"
    folder = "manifest/png" if plan.patient["site_role"] == "external" else "raw/images"
    rec = _image_record(
        plan,
        visit,
        lay,
        [_analytic_box(s, size) for s in lay.shapes],
        image_path=f"{folder}/{site}/{pid}/{iid}.png",
        mask_paths=[f"raw/masks/{site}/{pid}/{iid}_{k}.png" for k in range(len(lay.shapes))],
        prior_sizes=prior,
        text_rng=text_rng,
    )
    rec["image_sha256"] = hashlib.sha256(f"xmed-synth:{seed}:{iid}".encode()).hexdigest()
    if row_index % 25 == 0:
        q = rec["vqa"][0]
        rec["spoken_queries"] = [
            {"text": q["question"], "audio_path": f"raw/audio/{iid}_0.wav", "answer": q["answer"]}
        ]
    return rec


class _PatientWriter:
    """Streams patient rows into one Parquet file, ``row_group_size`` rows in memory at a time."""

    def __init__(self, path: Path, row_group_size: int) -> None:
        self._writer = pq.ParquetWriter(path, PATIENT_SCHEMA, compression="zstd")
        self._buf: list[dict[str, Any]] = []
        self._n = row_group_size

    def write(self, row: dict[str, Any]) -> None:
        self._buf.append(row)
        if len(self._buf) >= self._n:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=PATIENT_SCHEMA))
            self._buf = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self._writer.close()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``--params P --profile X --out D`` or ``manifest-only --rows N --seed S --out D``."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args and args[0] == "manifest-only":
        ap = argparse.ArgumentParser(
            prog="python -m model.data.synth manifest-only",
            description="Stream manifest rows without pixels (scale tests).",
        )
        ap.add_argument("--rows", type=int, required=True, help="number of image rows")
        ap.add_argument("--seed", type=int, default=0, help="random seed")
        ap.add_argument("--image-size", type=int, default=64, help="pixel grid of the boxes")
        ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
        a = ap.parse_args(args[1:])
        summary = generate_manifest_only(a.out, n_rows=a.rows, seed=a.seed, image_size=a.image_size)
    else:
        ap = argparse.ArgumentParser(
            prog="python -m model.data.synth",
            description="Generate the raw demo corpus for one params.yaml profile.",
        )
        ap.add_argument("--params", default="params.yaml", help="params file with data.<profile>.generate")
        ap.add_argument("--profile", required=True, help="profile name, e.g. ci or demo")
        ap.add_argument("--out", required=True, help="output folder, normally data/<profile>/raw")
        a = ap.parse_args(args)
        params = GenerateParams.from_file(a.params, a.profile)
        summary = generate_corpus(a.out, **asdict(params))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
