"""Typed schemas of the platform's data plane.

Three tables flow through the data stages:

* the **image manifest** (one row per image): what every importer produces and what curation
  reads. Boxes are in *pixel* coordinates of the stored image, ``(x1, y1, x2, y2)`` with
  ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
* the **patient table** (one row per patient): demographics, clinical covariates and survival
  outcomes used by the prognostic studies.
* the **instruction table** (one row per instruction pair): what training reads; it is exported
  to InternVL chat jsonl. Boxes inside the text use InternVL's 0-1000 normalised integer format.

Each table has a pyarrow schema (the storage contract, enforced when Parquet is written) and a
dataclass (the in-memory record with validation). ``ImageRecord.from_dict`` and friends raise
:class:`SchemaError` naming the record and the field, so a malformed input says where it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

__all__ = [
    "MODALITIES",
    "SPLITS",
    "SITE_ROLES",
    "TASKS",
    "SEVERITIES",
    "SchemaError",
    "Region",
    "Lesion",
    "VQAItem",
    "MCQItem",
    "SpokenQuery",
    "ImageRecord",
    "PatientRecord",
    "Turn",
    "InstructionRecord",
    "IMAGE_SCHEMA",
    "PATIENT_SCHEMA",
    "INSTRUCTION_SCHEMA",
]

#: Imaging modalities the platform knows. Importers map source-specific names onto these.
MODALITIES: tuple[str, ...] = (
    "ct",
    "mri",
    "xray",
    "fundus",
    "pathology",
    "dermoscopy",
    "ultrasound",
    "endoscopy",
    "other",
)
SPLITS: tuple[str, ...] = ("train", "val", "test", "external")
SITE_ROLES: tuple[str, ...] = ("internal", "external")
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe")
#: Instruction task families (the paper's training mix).
TASKS: tuple[str, ...] = (
    "single_label",
    "multi_label",
    "vqa_closed",
    "vqa_open",
    "mcq",
    "report",
    "region_recognition",
    "region_detection",
    "lesion_detection",
    "region_vqa",
    "guardrail",
    "prognosis",
)


class SchemaError(ValueError):
    """A record does not match its schema. The message names the record and the field."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _where(ctx: str, name: str) -> str:
    return f"{ctx}: field '{name}'"


def _req(d: dict[str, Any], name: str, ctx: str) -> Any:
    if name not in d or d[name] is None:
        raise SchemaError(f"{_where(ctx, name)} is missing")
    return d[name]


def _str(d: dict[str, Any], name: str, ctx: str, *, optional: bool = False, allowed=None) -> str | None:
    if optional and d.get(name) is None:
        return None
    v = _req(d, name, ctx)
    if not isinstance(v, str) or (not optional and v == ""):
        raise SchemaError(f"{_where(ctx, name)} must be a non-empty string, got {v!r}")
    if allowed is not None and v not in allowed:
        raise SchemaError(f"{_where(ctx, name)} is {v!r}; allowed: {sorted(allowed)}")
    return v


def _num(d: dict[str, Any], name: str, ctx: str, *, optional: bool = False, integer: bool = False):
    if optional and d.get(name) is None:
        return None
    v = _req(d, name, ctx)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError(f"{_where(ctx, name)} must be a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise SchemaError(f"{_where(ctx, name)} must be finite, got {v!r}")
    if integer:
        if float(v) != int(v):
            raise SchemaError(f"{_where(ctx, name)} must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _list(d: dict[str, Any], name: str, ctx: str) -> list:
    v = d.get(name)
    if v is None:
        return []
    if not isinstance(v, (list, tuple)):
        raise SchemaError(f"{_where(ctx, name)} must be a list, got {type(v).__name__}")
    return list(v)


def check_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float, ctx: str) -> None:
    """Raise :class:`SchemaError` unless the pixel box is non-empty and inside the image."""
    if not (x1 < x2 and y1 < y2):
        raise SchemaError(f"{ctx}: impossible box ({x1}, {y1}, {x2}, {y2}): need x1 < x2 and y1 < y2")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise SchemaError(
            f"{ctx}: box ({x1}, {y1}, {x2}, {y2}) lies outside the {width}x{height} image"
        )


# ---------------------------------------------------------------------------------------------
# image manifest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A named anatomical region, pixel box."""

    name: str
    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str) -> Region:
        return cls(
            name=_str(d, "name", ctx),
            **{k: _num(d, k, ctx) for k in ("x1", "y1", "x2", "y2")},
        )


@dataclass(frozen=True)
class Lesion:
    """A lesion: type, the region it lies in, pixel box, size in mm and severity."""

    lesion_type: str
    region: str
    x1: float
    y1: float
    x2: float
    y2: float
    size_mm: float
    severity: str
    mask_path: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str) -> Lesion:
        size = _num(d, "size_mm", ctx)
        if size <= 0:
            raise SchemaError(f"{_where(ctx, 'size_mm')} must be > 0, got {size}")
        return cls(
            lesion_type=_str(d, "lesion_type", ctx),
            region=_str(d, "region", ctx),
            **{k: _num(d, k, ctx) for k in ("x1", "y1", "x2", "y2")},
            size_mm=size,
            severity=_str(d, "severity", ctx, allowed=SEVERITIES),
            mask_path=_str(d, "mask_path", ctx, optional=True),
        )


@dataclass(frozen=True)
class VQAItem:
    """A question/answer pair; ``answer_type`` is ``closed`` (yes/no) or ``open``."""

    question: str
    answer: str
    answer_type: str

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str) -> VQAItem:
        return cls(
            question=_str(d, "question", ctx),
            answer=_str(d, "answer", ctx),
            answer_type=_str(d, "answer_type", ctx, allowed=("closed", "open")),
        )


@dataclass(frozen=True)
class MCQItem:
    """A multiple-choice question; ``answer`` is the letter of the right option (A, B, ...)."""

    question: str
    options: tuple[str, ...]
    answer: str

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str) -> MCQItem:
        options = tuple(_list(d, "options", ctx))
        if len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            raise SchemaError(f"{_where(ctx, 'options')} needs at least two non-empty strings")
        letters = [chr(ord("A") + i) for i in range(len(options))]
        return cls(
            question=_str(d, "question", ctx),
            options=options,
            answer=_str(d, "answer", ctx, allowed=letters),
        )


@dataclass(frozen=True)
class SpokenQuery:
    """A text query rendered to speech (WAV path relative to the dataset root) with its answer."""

    text: str
    audio_path: str
    answer: str

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str) -> SpokenQuery:
        return cls(
            text=_str(d, "text", ctx),
            audio_path=_str(d, "audio_path", ctx),
            answer=_str(d, "answer", ctx),
        )


@dataclass(frozen=True)
class ImageRecord:
    """One image of the manifest with all of its targets.

    ``split`` is assigned by patient at ingest (``external`` for external sites); ``image_path``
    and every other path are relative to the dataset root.
    """

    image_id: str
    source: str
    patient_id: str
    visit_index: int
    visit_month: float
    site: str
    site_role: str
    split: str
    modality: str
    body_part: str
    image_path: str
    width: int
    height: int
    image_sha256: str
    pixel_spacing_mm: float | None = None
    diagnosis: str | None = None
    findings: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    lesions: tuple[Lesion, ...] = ()
    report_findings: str | None = None
    report_impression: str | None = None
    vqa: tuple[VQAItem, ...] = ()
    mcq: tuple[MCQItem, ...] = ()
    spoken_queries: tuple[SpokenQuery, ...] = ()
    prior_image_id: str | None = None

    _NESTED: ClassVar[dict[str, type]] = {
        "regions": Region,
        "lesions": Lesion,
        "vqa": VQAItem,
        "mcq": MCQItem,
        "spoken_queries": SpokenQuery,
    }

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str | None = None) -> ImageRecord:
        """Validate a plain dict (JSON, Parquet row) into a record.

        Args:
            d: the record's fields.
            ctx: where the record came from (file and line), used in error messages.

        Raises:
            SchemaError: a field is missing, of the wrong type, out of range, or a box is
                impossible or outside the image.
        """
        if not isinstance(d, dict):
            raise SchemaError(f"{ctx or 'record'}: expected an object, got {type(d).__name__}")
        ctx = ctx or f"image {d.get('image_id', '?')}"
        width = _num(d, "width", ctx, integer=True)
        height = _num(d, "height", ctx, integer=True)
        if width <= 0 or height <= 0:
            raise SchemaError(f"{ctx}: image size {width}x{height} must be positive")
        nested = {}
        for name, typ in cls._NESTED.items():
            items = []
            for i, item in enumerate(_list(d, name, ctx)):
                if not isinstance(item, dict):
                    raise SchemaError(f"{ctx}: {name}[{i}] must be an object")
                items.append(typ.from_dict(item, f"{ctx}: {name}[{i}]"))
            nested[name] = tuple(items)
        for name in ("regions", "lesions"):
            for i, b in enumerate(nested[name]):
                check_box(b.x1, b.y1, b.x2, b.y2, width, height, f"{ctx}: {name}[{i}]")
        findings = _list(d, "findings", ctx)
        if not all(isinstance(f, str) and f for f in findings):
            raise SchemaError(f"{_where(ctx, 'findings')} must be a list of non-empty strings")
        visit_index = _num(d, "visit_index", ctx, integer=True)
        if visit_index < 0:
            raise SchemaError(f"{_where(ctx, 'visit_index')} must be >= 0")
        spacing = _num(d, "pixel_spacing_mm", ctx, optional=True)
        if spacing is not None and spacing <= 0:
            raise SchemaError(f"{_where(ctx, 'pixel_spacing_mm')} must be > 0")
        return cls(
            image_id=_str(d, "image_id", ctx),
            source=_str(d, "source", ctx),
            patient_id=_str(d, "patient_id", ctx),
            visit_index=visit_index,
            visit_month=_num(d, "visit_month", ctx),
            site=_str(d, "site", ctx),
            site_role=_str(d, "site_role", ctx, allowed=SITE_ROLES),
            split=_str(d, "split", ctx, allowed=SPLITS),
            modality=_str(d, "modality", ctx, allowed=MODALITIES),
            body_part=_str(d, "body_part", ctx),
            image_path=_str(d, "image_path", ctx),
            width=width,
            height=height,
            image_sha256=_str(d, "image_sha256", ctx),
            pixel_spacing_mm=spacing,
            diagnosis=_str(d, "diagnosis", ctx, optional=True),
            findings=tuple(findings),
            report_findings=_str(d, "report_findings", ctx, optional=True),
            report_impression=_str(d, "report_impression", ctx, optional=True),
            prior_image_id=_str(d, "prior_image_id", ctx, optional=True),
            **nested,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form matching :data:`IMAGE_SCHEMA` (tuples become lists)."""
        return _plain(self)


# ---------------------------------------------------------------------------------------------
# patients
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRecord:
    """One patient: site, split, clinical covariates and survival outcomes (months).

    ``pfs_*`` is null where progression-free survival is not defined for the cohort.
    Events are 1 (event observed) or 0 (censored).
    """

    patient_id: str
    site: str
    site_role: str
    split: str
    cohort: str
    age: float
    sex: str
    smoking: str
    tnm_stage: str
    mutation: str
    treatment: str
    os_months: float
    os_event: int
    pfs_months: float | None = None
    pfs_event: int | None = None
    chief_complaint: str | None = None
    history: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str | None = None) -> PatientRecord:
        """Validate a plain dict into a patient record (durations finite and >= 0, events 0/1)."""
        ctx = ctx or f"patient {d.get('patient_id', '?')}"
        out: dict[str, Any] = {}
        for name in ("os", "pfs"):
            months = _num(d, f"{name}_months", ctx, optional=(name == "pfs"))
            event = _num(d, f"{name}_event", ctx, optional=(name == "pfs"), integer=True)
            if (months is None) != (event is None):
                raise SchemaError(f"{ctx}: {name}_months and {name}_event must both be set or both null")
            if months is not None and months < 0:
                raise SchemaError(f"{_where(ctx, name + '_months')} must be >= 0, got {months}")
            if event is not None and event not in (0, 1):
                raise SchemaError(f"{_where(ctx, name + '_event')} must be 0 or 1, got {event}")
            out[f"{name}_months"], out[f"{name}_event"] = months, event
        age = _num(d, "age", ctx)
        if not 0 <= age <= 120:
            raise SchemaError(f"{_where(ctx, 'age')} must be within 0..120, got {age}")
        return cls(
            patient_id=_str(d, "patient_id", ctx),
            site=_str(d, "site", ctx),
            site_role=_str(d, "site_role", ctx, allowed=SITE_ROLES),
            split=_str(d, "split", ctx, allowed=SPLITS),
            cohort=_str(d, "cohort", ctx),
            age=age,
            sex=_str(d, "sex", ctx, allowed=("F", "M")),
            smoking=_str(d, "smoking", ctx),
            tnm_stage=_str(d, "tnm_stage", ctx),
            mutation=_str(d, "mutation", ctx),
            treatment=_str(d, "treatment", ctx),
            chief_complaint=_str(d, "chief_complaint", ctx, optional=True),
            history=_str(d, "history", ctx, optional=True),
            **out,
        )

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


# ---------------------------------------------------------------------------------------------
# instructions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One chat turn; ``from_`` is ``human`` or ``gpt`` (stored as ``from``)."""

    from_: str
    value: str


@dataclass(frozen=True)
class InstructionRecord:
    """One instruction pair (or multi-turn conversation) for training and evaluation.

    ``images`` are dataset-root-relative paths (several for multi-visit prognosis prompts);
    the first human turn holds one ``<image>`` placeholder per image. ``target`` is a JSON
    string with the structured answer (label, boxes, ...) used by evaluation.
    """

    id: str
    task: str
    images: tuple[str, ...]
    image_ids: tuple[str, ...]
    width: int
    height: int
    conversations: tuple[Turn, ...]
    patient_id: str
    split: str
    site: str
    site_role: str
    modality: str
    source: str
    template_id: int
    target: str = "{}"

    def to_dict(self) -> dict[str, Any]:
        d = _plain(self)
        d["conversations"] = [{"from": t.from_, "value": t.value} for t in self.conversations]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], ctx: str | None = None) -> InstructionRecord:
        """Validate a plain dict (Parquet row) into an instruction record."""
        ctx = ctx or f"instruction {d.get('id', '?')}"
        turns = []
        for i, t in enumerate(_list(d, "conversations", ctx)):
            c = f"{ctx}: conversations[{i}]"
            turns.append(Turn(from_=_str(t, "from", c, allowed=("human", "gpt")), value=_str(t, "value", c)))
        if len(turns) < 2 or turns[0].from_ != "human":
            raise SchemaError(f"{_where(ctx, 'conversations')} must start with a human turn and have an answer")
        return cls(
            id=_str(d, "id", ctx),
            task=_str(d, "task", ctx, allowed=TASKS),
            images=tuple(_list(d, "images", ctx)),
            image_ids=tuple(_list(d, "image_ids", ctx)),
            width=_num(d, "width", ctx, integer=True),
            height=_num(d, "height", ctx, integer=True),
            conversations=tuple(turns),
            patient_id=_str(d, "patient_id", ctx),
            split=_str(d, "split", ctx, allowed=SPLITS),
            site=_str(d, "site", ctx),
            site_role=_str(d, "site_role", ctx, allowed=SITE_ROLES),
            modality=_str(d, "modality", ctx, allowed=MODALITIES),
            source=_str(d, "source", ctx),
            template_id=_num(d, "template_id", ctx, integer=True),
            target=d.get("target") or "{}",
        )


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# pyarrow storage schemas
# ---------------------------------------------------------------------------------------------

_BOX = [("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32())]

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("patient_id", pa.string()),
        ("visit_index", pa.int32()),
        ("visit_month", pa.float32()),
        ("site", pa.string()),
        ("site_role", pa.string()),
        ("split", pa.string()),
        ("modality", pa.string()),
        ("body_part", pa.string()),
        ("image_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image_sha256", pa.string()),
        ("pixel_spacing_mm", pa.float32()),
        ("diagnosis", pa.string()),
        ("findings", pa.list_(pa.string())),
        ("regions", pa.list_(pa.struct([("name", pa.string()), *_BOX]))),
        (
            "lesions",
            pa.list_(
                pa.struct(
                    [
                        ("lesion_type", pa.string()),
                        ("region", pa.string()),
                        *_BOX,
                        ("size_mm", pa.float32()),
                        ("severity", pa.string()),
                        ("mask_path", pa.string()),
                    ]
                )
            ),
        ),
        ("report_findings", pa.string()),
        ("report_impression", pa.string()),
        (
            "vqa",
            pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()), ("answer_type", pa.string())])),
        ),
        (
            "mcq",
            pa.list_(
                pa.struct([("question", pa.string()), ("options", pa.list_(pa.string())), ("answer", pa.string())])
            ),
        ),
        (
            "spoken_queries",
            pa.list_(pa.struct([("text", pa.string()), ("audio_path", pa.string()), ("answer", pa.string())])),
        ),
        ("prior_image_id", pa.string()),
    ]
)

PATIENT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),
        ("site", pa.string()),
        ("site_role", pa.string()),
        ("split", pa.string()),
        ("cohort", pa.string()),
        ("age", pa.float32()),
        ("sex", pa.string()),
        ("smoking", pa.string()),
        ("tnm_stage", pa.string()),
        ("mutation", pa.string()),
        ("treatment", pa.string()),
        ("os_months", pa.float32()),
        ("os_event", pa.int8()),
        ("pfs_months", pa.float32()),
        ("pfs_event", pa.int8()),
        ("chief_complaint", pa.string()),
        ("history", pa.string()),
    ]
)

INSTRUCTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("task", pa.string()),
        ("images", pa.list_(pa.string())),
        ("image_ids", pa.list_(pa.string())),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
        ("patient_id", pa.string()),
        ("split", pa.string()),
        ("site", pa.string()),
        ("site_role", pa.string()),
        ("modality", pa.string()),
        ("source", pa.string()),
        ("template_id", pa.int32()),
        ("target", pa.string()),
    ]
)
