"""Instruction curation: the image manifest -> instruction pairs for every task family of the paper.

XMedGPT (InternVL2-8B fine-tuned on ~7M medical image-text pairs) trains on single- and
multi-label diagnosis, closed/open VQA, multiple choice, report generation, region recognition
(box -> name), text-to-region and lesion detection (name -> boxes), region VQA, a guardrail that
refuses to locate a region absent from the image, and landmark prognosis prompts (visit images +
clinical text -> survival beyond a landmark). This module builds those pairs from
:class:`~model.data.schema.ImageRecord` rows:

* templates: :func:`load_templates` reads ``templates.yaml`` (>= 5 paraphrases per key);
  :class:`TemplatePicker` chooses one deterministically from ``(seed, instruction id, key)``.
* builders: ``build_<task>(record, picker)`` return instruction rows (dicts of
  :data:`~model.data.schema.INSTRUCTION_SCHEMA`, validated by ``InstructionRecord.from_dict``); boxes are
  written with :mod:`model.data.boxes` (InternVL ``<ref>..</ref><box>[[x1, y1, x2, y2]]</box>``,
  0..1000); ``target`` holds the structured answer as JSON for evaluation.
* prognosis: :func:`build_prognosis` (one prompt per patient or per image, images acquired before
  the landmark only; patients censored before the landmark are excluded and counted).
* stage: :func:`curate` streams ``manifest/images`` -> ``shards/part-*.parquet`` + the InternVL
  export + ``manifest.json``, atomically, with memory bounded by one batch and one row group.

Splits are carried from the manifest, never re-assigned; an external-site row with a non-external
split raises. CLI: ``python -m model.data.curation --params params.yaml --profile ci --root data/ci``.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from model.data.boxes import format_boxes, format_ref_boxes, to_normalised
from model.data.catalogue import load_region_catalogue
from model.data.export import export_internvl
from model.data.io import (
    ShardedParquetWriter,
    atomic_dir,
    atomic_file,
    iter_parquet_rows,
    parquet_files,
    sha256_file,
)
from model.data.schema import (
    INSTRUCTION_SCHEMA,
    MODALITIES,
    SPLITS,
    TASKS,
    ImageRecord,
    PatientRecord,
    SchemaError,
)

__all__ = [
    "DEFAULT_LANDMARKS",
    "MODALITY_NAMES",
    "ORGAN_MODALITIES",
    "REFUSAL",
    "TEMPLATES_PATH",
    "TEMPLATE_FIELDS",
    "Landmark",
    "PrognosisPatient",
    "Row",
    "TemplateError",
    "TemplatePicker",
    "build_guardrail",
    "build_image_instructions",
    "build_lesion_detection",
    "build_mcq",
    "build_multi_label",
    "build_prognosis",
    "build_region_detection",
    "build_region_recognition",
    "build_region_vqa",
    "build_report",
    "build_single_label",
    "build_vqa",
    "clinical_text",
    "curate",
    "guardrail_fallbacks",
    "image_head",
    "load_prognosis_patients",
    "load_templates",
    "main",
    "prognosis_prompt",
    "survival_label",
    "templates_version",
]

TEMPLATES_PATH = Path(__file__).with_name("templates.yaml")

# ---------------------------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------------------------

_CONTEXT = frozenset({"modality", "body_part"})
#: Template key -> (required placeholders, allowed placeholders).
TEMPLATE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "single_label.modality": (frozenset(), frozenset()),
    "single_label.body_part": (frozenset(), frozenset({"modality"})),
    "single_label.diagnosis": (frozenset(), _CONTEXT),
    "multi_label": (frozenset(), _CONTEXT),
    "vqa_closed": (frozenset({"question"}), _CONTEXT | {"question"}),
    "vqa_open": (frozenset({"question"}), _CONTEXT | {"question"}),
    "mcq": (frozenset({"question", "options"}), _CONTEXT | {"question", "options"}),
    "report": (frozenset(), _CONTEXT),
    "region_recognition": (frozenset({"box"}), _CONTEXT | {"box"}),
    "region_detection": (frozenset({"region"}), _CONTEXT | {"region"}),
    "lesion_detection": (frozenset({"lesion"}), _CONTEXT | {"lesion"}),
    "region_vqa.presence": (frozenset({"region_ref"}), _CONTEXT | {"region_ref"}),
    "region_vqa.abnormality": (frozenset({"box"}), _CONTEXT | {"box"}),
    "region_vqa.abnormality_answer": (
        frozenset({"lesion"}),
        frozenset({"lesion", "severity", "size_mm", "region"}),
    ),
    "guardrail": (frozenset({"region"}), _CONTEXT | {"region"}),
    "prognosis.pfs": (
        frozenset({"visits", "clinical", "months"}),
        frozenset({"visits", "clinical", "months"}),
    ),
    "prognosis.os": (
        frozenset({"visits", "clinical", "months"}),
        frozenset({"visits", "clinical", "months"}),
    ),
}
MIN_PARAPHRASES = 5


class TemplateError(ValueError):
    """The templates file is malformed; the message names the file, the task and the template."""


def load_templates(path: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """Load and validate the prompt paraphrases.

    Args:
        path: a templates YAML file; ``None`` loads the packaged ``model/data/templates.yaml``.

    Returns:
        Template key (``task`` or ``task.kind``, see :data:`TEMPLATE_FIELDS`) -> paraphrases.

    Raises:
        TemplateError: a key is missing or unknown, a task has fewer than 5 distinct
            paraphrases, or a template uses an unknown placeholder / lacks a required one.
    """
    where = str(path or TEMPLATES_PATH)
    with open(where, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    raw = doc.get("templates") if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: expected a mapping with 'version' and 'templates'")
    unknown = sorted(set(raw) - set(TEMPLATE_FIELDS))
    if unknown:
        raise TemplateError(f"{where}: unknown template key(s) {unknown}; known: {sorted(TEMPLATE_FIELDS)}")
    out = {}
    for key, (required, allowed) in TEMPLATE_FIELDS.items():
        task = key.split(".")[0]
        items = raw.get(key)
        if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
            raise TemplateError(f"{where}: task '{task}' ({key}) needs a list of non-empty strings")
        if len(set(items)) < MIN_PARAPHRASES:
            raise TemplateError(
                f"{where}: task '{task}' ({key}) has {len(set(items))} distinct paraphrases; "
                f"at least {MIN_PARAPHRASES} are required"
            )
        for i, t in enumerate(items):
            _check_template(t, required, allowed, f"{where}: task '{task}' ({key})[{i}]")
        out[key] = list(items)
    missing = sorted(set(TASKS) - {k.split(".")[0] for k in out})
    if missing:
        raise TemplateError(f"{where}: no templates for task(s) {missing}")
    return out


def _check_template(text: str, required: frozenset[str], allowed: frozenset[str], where: str) -> None:
    if "<image>" in text:
        raise TemplateError(f"{where}: templates must not contain <image>; curation adds it")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise TemplateError(f"{where}: bad braces in {text!r}: {e}") from e
    names = set()
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if spec or conv:
            raise TemplateError(
                f"{where}: placeholder {{{name}}} must be plain (no format spec or conversion)"
            )
        if name not in allowed:
            raise TemplateError(f"{where}: unknown placeholder {{{name}}}; allowed: {sorted(allowed)}")
        names.add(name)
    if required - names:
        raise TemplateError(f"{where}: missing placeholder(s) {sorted(required - names)} in {text!r}")


def templates_version(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The templates file's ``version`` field and the sha256 of its bytes."""
    where = Path(path or TEMPLATES_PATH)
    doc = yaml.safe_load(where.read_text(encoding="utf-8"))
    return {"version": doc.get("version"), "sha256": sha256_file(where)}


@dataclass(frozen=True)
class TemplatePicker:
    """Deterministic template choice: ``crc32(f"{seed}|{record_id}|{key}") % len(paraphrases)``.

    Attributes:
        templates: the output of :func:`load_templates`.
        seed: the curation seed; another seed draws another (still deterministic) mix.
    """

    templates: Mapping[str, Sequence[str]]
    seed: int

    def pick(self, key: str, record_id: str) -> tuple[int, str]:
        """The index and text of the paraphrase of ``key`` chosen for ``record_id``."""
        options = self.templates[key]
        i = zlib.crc32(f"{self.seed}|{record_id}|{key}".encode()) % len(options)
        return i, options[i]

    def render(self, key: str, record_id: str, **fields: str) -> tuple[int, str]:
        """:meth:`pick`, then fill the placeholders with ``fields`` (extra fields are ignored)."""
        i, text = self.pick(key, record_id)
        return i, text.format(**fields)


# ---------------------------------------------------------------------------------------------
# builders: one ImageRecord -> instruction records
# ---------------------------------------------------------------------------------------------

#: Answer text of the modality question (the target label is the schema's modality code).
MODALITY_NAMES: dict[str, str] = {
    "ct": "CT",
    "mri": "MRI",
    "xray": "X-ray",
    "fundus": "fundus photography",
    "pathology": "histopathology",
    "dermoscopy": "dermoscopy",
    "ultrasound": "ultrasound",
    "endoscopy": "endoscopy",
    "other": "other",
}
_MODALITY_ADJ = {**MODALITY_NAMES, "fundus": "fundus", "pathology": "pathology", "other": "medical"}
#: The guardrail answer when the asked region is not in the image.
REFUSAL = "Sorry, I cannot find the {region} in the image."
IMAGE_TOKEN = "<image>\n"
#: An instruction row: a plain dict matching :data:`INSTRUCTION_SCHEMA` (what the shards store);
#: ``InstructionRecord.from_dict(row)`` gives the validated typed record.
Row = dict[str, Any]
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _fields(rec: ImageRecord) -> dict[str, str]:
    return {"modality": _MODALITY_ADJ[rec.modality], "body_part": rec.body_part}


def _norm(rec: ImageRecord, b: Any) -> list[int]:
    return list(to_normalised((b.x1, b.y1, b.x2, b.y2), rec.width, rec.height))


def _grouped(rec: ImageRecord, items: Sequence[Any], attr: str) -> list[tuple[str, list[list[int]]]]:
    """Normalised boxes grouped by name (``attr``), names in order of first appearance."""
    groups: dict[str, list[list[int]]] = {}
    for b in items:
        groups.setdefault(getattr(b, attr), []).append(_norm(rec, b))
    return list(groups.items())


def image_head(n: int) -> str:
    """``<image>\\n`` for one image, InternVL's ``Image-1: <image>\\nImage-2: <image>\\n`` for several."""
    return IMAGE_TOKEN if n == 1 else "".join(f"Image-{k + 1}: <image>\n" for k in range(n))


def _make(
    rec: ImageRecord,
    task: str,
    rid: str,
    tid: int,
    prompt: str,
    answer: str,
    target: dict,
    images: Sequence[ImageRecord] = (),
) -> Row:
    images = images or (rec,)
    return {
        "id": rid,
        "task": task,
        "images": [im.image_path for im in images],
        "image_ids": [im.image_id for im in images],
        "width": rec.width,
        "height": rec.height,
        "conversations": [
            {"from": "human", "value": image_head(len(images)) + prompt},
            {"from": "gpt", "value": answer},
        ],
        "patient_id": rec.patient_id,
        "split": rec.split,
        "site": rec.site,
        "site_role": rec.site_role,
        "modality": rec.modality,
        "source": rec.source,
        "template_id": tid,
        "target": _JSON.encode(target),
    }


def build_single_label(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Modality, body part and (when labelled) diagnosis questions; target ``{kind, label}``."""
    items = [
        ("modality", MODALITY_NAMES[rec.modality], rec.modality),
        ("body_part", rec.body_part, rec.body_part),
    ]
    if rec.diagnosis:
        items.append(("diagnosis", rec.diagnosis, rec.diagnosis))
    out = []
    for kind, answer, label in items:
        rid = f"{rec.image_id}:single_label:{kind}"
        tid, prompt = picker.render(f"single_label.{kind}", rid, **_fields(rec))
        out.append(_make(rec, "single_label", rid, tid, prompt, answer, {"kind": kind, "label": label}))
    return out


def build_multi_label(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """All findings of the image, comma-separated; target ``{labels}``. None without findings."""
    if not rec.findings:
        return []
    rid = f"{rec.image_id}:multi_label:0"
    tid, prompt = picker.render("multi_label", rid, **_fields(rec))
    return [
        _make(rec, "multi_label", rid, tid, prompt, ", ".join(rec.findings), {"labels": list(rec.findings)})
    ]


def build_vqa(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """One ``vqa_closed`` (answer Yes/No) or ``vqa_open`` pair per VQA item; target ``{answer, answer_type}``.

    Raises:
        SchemaError: a closed item's answer is not yes/no.
    """
    out = []
    for i, item in enumerate(rec.vqa):
        task = f"vqa_{item.answer_type}"
        answer = item.answer.strip()
        if item.answer_type == "closed":
            if answer.lower() not in ("yes", "no"):
                raise SchemaError(
                    f"image {rec.image_id}: vqa[{i}] is closed but its answer is {answer!r}; expected yes/no"
                )
            answer = answer.capitalize()
        rid = f"{rec.image_id}:{task}:{i}"
        tid, prompt = picker.render(task, rid, question=item.question, **_fields(rec))
        target = {
            "answer": answer.lower() if task == "vqa_closed" else answer,
            "answer_type": item.answer_type,
        }
        out.append(_make(rec, task, rid, tid, prompt, answer, target))
    return out


def build_mcq(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Lettered options; the answer is the letter; target ``{answer, option, options}``."""
    out = []
    for i, item in enumerate(rec.mcq):
        options = "\n".join(f"{chr(ord('A') + k)}. {o}" for k, o in enumerate(item.options))
        rid = f"{rec.image_id}:mcq:{i}"
        tid, prompt = picker.render("mcq", rid, question=item.question, options=options, **_fields(rec))
        option = item.options[ord(item.answer) - ord("A")]
        target = {"answer": item.answer, "option": option, "options": list(item.options)}
        out.append(_make(rec, "mcq", rid, tid, prompt, item.answer, target))
    return out


def build_report(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """``Findings: ...\\nImpression: ...`` (the parts present); target ``{findings, impression}``."""
    parts = [
        (k, v) for k, v in (("Findings", rec.report_findings), ("Impression", rec.report_impression)) if v
    ]
    if not parts:
        return []
    rid = f"{rec.image_id}:report:0"
    tid, prompt = picker.render("report", rid, **_fields(rec))
    answer = "\n".join(f"{k}: {v}" for k, v in parts)
    target = {"findings": rec.report_findings, "impression": rec.report_impression}
    return [_make(rec, "report", rid, tid, prompt, answer, target)]


def build_region_recognition(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Box (0..1000) -> region name, one pair per region; target ``{label, box}``."""
    out = []
    for i, r in enumerate(rec.regions):
        box = _norm(rec, r)
        rid = f"{rec.image_id}:region_recognition:{i}"
        tid, prompt = picker.render("region_recognition", rid, box=format_boxes([box]), **_fields(rec))
        out.append(_make(rec, "region_recognition", rid, tid, prompt, r.name, {"label": r.name, "box": box}))
    return out


def _detection(
    rec: ImageRecord, picker: TemplatePicker, task: str, items: Sequence[Any], attr: str, field: str
):
    out = []
    for k, (name, boxes) in enumerate(_grouped(rec, items, attr)):
        rid = f"{rec.image_id}:{task}:{k}"
        tid, prompt = picker.render(task, rid, **{field: name}, **_fields(rec))
        answer = format_ref_boxes(name, boxes)
        out.append(_make(rec, task, rid, tid, prompt, answer, {"label": name, "boxes": boxes}))
    return out


def build_region_detection(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Region name -> ``<ref>name</ref><box>[[...], ...]</box>`` with every box of that name."""
    return _detection(rec, picker, "region_detection", rec.regions, "name", "region")


def build_lesion_detection(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Lesion type -> ``<ref>type</ref><box>[[...], ...]</box>`` with every lesion of that type."""
    return _detection(rec, picker, "lesion_detection", rec.lesions, "lesion_type", "lesion")


def build_region_vqa(rec: ImageRecord, picker: TemplatePicker) -> list[Row]:
    """Questions about boxed regions.

    * ``presence``: "Is there a lesion in <ref>region</ref><box>..</box>?" -> Yes/No (a lesion
      whose ``region`` is that name); target ``{kind, region, boxes, answer}``.
    * ``abnormality``: "What abnormality is in this region <box>..</box>?" (a lesion box) ->
      type, severity, size and region; target ``{kind, label, severity, size_mm, region, box}``.
    """
    out = []
    with_lesion = {les.region for les in rec.lesions}
    for k, (name, boxes) in enumerate(_grouped(rec, rec.regions, "name")):
        rid = f"{rec.image_id}:region_vqa:presence:{k}"
        tid, prompt = picker.render(
            "region_vqa.presence", rid, region_ref=format_ref_boxes(name, boxes), **_fields(rec)
        )
        yes = name in with_lesion
        target = {"kind": "presence", "region": name, "boxes": boxes, "answer": "yes" if yes else "no"}
        out.append(_make(rec, "region_vqa", rid, tid, prompt, "Yes" if yes else "No", target))
    for i, les in enumerate(rec.lesions):
        box = _norm(rec, les)
        rid = f"{rec.image_id}:region_vqa:abnormality:{i}"
        tid, prompt = picker.render("region_vqa.abnormality", rid, box=format_boxes([box]), **_fields(rec))
        size = f"{les.size_mm:.0f}" if les.size_mm >= 1 else f"{les.size_mm:.1f}"
        _, answer = picker.render(
            "region_vqa.abnormality_answer",
            rid,
            lesion=les.lesion_type,
            severity=les.severity,
            size_mm=size,
            region=les.region,
        )
        target = {
            "kind": "abnormality",
            "label": les.lesion_type,
            "severity": les.severity,
            "size_mm": round(les.size_mm, 1),
            "region": les.region,
            "box": box,
        }
        out.append(_make(rec, "region_vqa", rid, tid, prompt, answer, target))
    return out


#: Modalities whose catalogue names are specific organs (a brain lobe, a kidney). Asking for one
#: in an image of unrelated anatomy has a certain "not there" answer; the names of the other
#: modalities (image fields, walls, tissue types) are generic and could describe any image.
ORGAN_MODALITIES: tuple[str, ...] = ("ct", "mri", "xray", "ultrasound")


def guardrail_fallbacks(region_names_by_modality: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Per modality, absent-region names from unrelated anatomy (the guardrail's second pool).

    Modalities sharing a region name image overlapping anatomy (``heart`` in CT and X-ray,
    ``liver`` in CT and ultrasound). For modality ``m``, the pool holds the names of the
    :data:`ORGAN_MODALITIES` that overlap neither ``m`` nor share a name with it, minus every name
    of ``m`` and of the modalities overlapping ``m``. Example: a chest CT may be asked for the
    ``left frontal lobe`` (MRI brain) but never for the ``trachea`` (X-ray chest).
    """
    own = {m: set(v) for m, v in region_names_by_modality.items()}
    out = {}
    for m in MODALITIES:
        related = {m} | {o for o, names in own.items() if names & own.get(m, set())}
        taken = set().union(*(own.get(r, set()) for r in related))
        pool = [
            n
            for o in ORGAN_MODALITIES
            if o not in related
            for n in region_names_by_modality.get(o, ())
            if n not in taken
        ]
        out[m] = tuple(dict.fromkeys(pool))
    return out


def build_guardrail(
    rec: ImageRecord,
    picker: TemplatePicker,
    *,
    region_names: Sequence[str],
    per_image: int,
    fallback_names: Sequence[str] = (),
) -> list[Row]:
    """Ask to locate regions that are NOT in the image; the answer is :data:`REFUSAL`.

    Candidates: catalogue regions of the image's modality missing from its annotated regions
    (the hard negatives), then ``fallback_names`` (regions of unrelated anatomy, see
    :func:`guardrail_fallbacks`), each pool ordered by a hash of ``(seed, image_id, name)``; the
    first ``per_image`` are asked. The prompt is a ``region_detection`` paraphrase. Images without
    annotated regions get none (absence is only trusted where regions were annotated).

    Args:
        rec: the image.
        picker: template choice.
        region_names: catalogue region names of ``rec.modality``.
        per_image: how many refusals to draw for this image.
        fallback_names: names to draw from when the image has every region of its modality.
    """
    if not rec.regions or per_image <= 0:
        return []
    present = {r.name.casefold() for r in rec.regions}

    def absent(names: Sequence[str]) -> list[str]:
        found = [n for n in dict.fromkeys(names) if n.casefold() not in present]
        return sorted(found, key=lambda n: zlib.crc32(f"{picker.seed}|{rec.image_id}|{n}".encode()))

    out = []
    for j, name in enumerate(dict.fromkeys(absent(region_names) + absent(fallback_names))):
        if j == per_image:
            break
        rid = f"{rec.image_id}:guardrail:{j}"
        tid, prompt = picker.render("guardrail", rid, region=name, **_fields(rec))
        target = {"label": "absent", "region": name, "boxes": []}
        out.append(_make(rec, "guardrail", rid, tid, prompt, REFUSAL.format(region=name), target))
    return out


_IMAGE_BUILDERS = (
    build_single_label,
    build_multi_label,
    build_vqa,
    build_mcq,
    build_report,
    build_region_recognition,
    build_region_detection,
    build_lesion_detection,
    build_region_vqa,
)


def build_image_instructions(
    rec: ImageRecord,
    picker: TemplatePicker,
    *,
    region_names: Sequence[str],
    guardrail_per_image: int,
    fallback_names: Sequence[str] = (),
) -> list[Row]:
    """Every non-prognosis instruction of one image, in task order (then guardrail)."""
    out = []
    for build in _IMAGE_BUILDERS:
        out.extend(build(rec, picker))
    out.extend(
        build_guardrail(
            rec,
            picker,
            region_names=region_names,
            per_image=guardrail_per_image,
            fallback_names=fallback_names,
        )
    )
    return out


# ---------------------------------------------------------------------------------------------
# prognosis
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landmark:
    """A cohort's landmark question.

    Attributes:
        endpoint: ``pfs`` (progression-free survival) or ``os`` (overall survival).
        months: the landmark; the label is "event-free beyond ``months``".
        per: ``patient`` (one prompt with every visit image) or ``image`` (one prompt per image).
    """

    endpoint: str
    months: float
    per: str

    def __post_init__(self) -> None:
        if self.endpoint not in ("pfs", "os") or self.per not in ("patient", "image") or not self.months > 0:
            raise ValueError(f"bad landmark {self}: endpoint must be pfs/os, per patient/image, months > 0")


DEFAULT_LANDMARKS: dict[str, Landmark] = {
    "lung_tki": Landmark("pfs", 14.0, "patient"),
    "nsclc": Landmark("os", 24.0, "image"),
    "gbm": Landmark("os", 12.0, "patient"),
}


class PrognosisPatient(NamedTuple):
    """The compact per-patient lookup kept in memory during curation (cohort patients only)."""

    cohort: str
    split: str
    clinical: str
    months: float
    event: int


def survival_label(months: float, event: int, landmark_months: float) -> str | None:
    """The landmark label: event-free beyond it (``yes``), event at or before it (``no``), or None.

    None means censored at or before the landmark: the outcome is unknown and the patient excluded.

    Example:
        >>> survival_label(20.0, 1, 14.0), survival_label(10.0, 1, 14.0), survival_label(10.0, 0, 14.0)
        ('yes', 'no', None)
    """
    if months > landmark_months:
        return "yes"
    return "no" if event == 1 else None


def clinical_text(p: PatientRecord) -> str:
    """Age, sex, smoking, stage, mutation, treatment, complaint and history as one sentence."""
    parts = [
        f"{round(p.age)}-year-old {'female' if p.sex == 'F' else 'male'}",
        f"smoking: {p.smoking}",
        f"TNM stage: {p.tnm_stage}",
        f"mutation: {p.mutation}",
        f"treatment: {p.treatment}",
    ]
    if p.chief_complaint:
        parts.append(f"chief complaint: {p.chief_complaint.rstrip('.')}")
    if p.history:
        parts.append(f"history: {p.history.rstrip('.')}")
    return "; ".join(parts) + "."


def load_prognosis_patients(
    path: str | os.PathLike, landmarks: Mapping[str, Landmark]
) -> dict[str, PrognosisPatient]:
    """Stream ``patients.parquet`` and keep only the cohort patients' prompt fields.

    Raises:
        SchemaError: a row is malformed, or a patient of a PFS cohort has no PFS.
    """
    out = {}
    for i, row in enumerate(iter_parquet_rows(path)):
        if row.get("cohort") not in landmarks:
            continue
        p = PatientRecord.from_dict(row, f"{path}: row {i} (patient {row.get('patient_id')})")
        lm = landmarks[p.cohort]
        months, event = (p.pfs_months, p.pfs_event) if lm.endpoint == "pfs" else (p.os_months, p.os_event)
        if months is None:
            raise SchemaError(f"{path}: patient {p.patient_id}: cohort {p.cohort} needs {lm.endpoint}_months")
        out[p.patient_id] = PrognosisPatient(p.cohort, p.split, clinical_text(p), months, event)
    return out


def _visits_text(visit_months: Sequence[float]) -> str:
    months = [f"{m:g}" for m in visit_months]
    if len(months) == 1:
        return f"The image was acquired at month {months[0]} of follow-up."
    listed = ", ".join(months[:-1]) + f" and {months[-1]}"
    return f"Image-1 to Image-{len(months)} were acquired at months {listed} of follow-up."


def prognosis_prompt(
    visit_months: Sequence[float], clinical: str, landmark: Landmark, picker: TemplatePicker, record_id: str
) -> tuple[int, str]:
    """The template id and text of a landmark prompt, without the image placeholders.

    The human turn is ``image_head(len(visit_months)) + text``. The text is the same whether or
    not the patient's outcome is known, so a model can be asked about any patient (the prognosis
    study scores censored patients too).
    """
    tid, prompt = picker.render(
        f"prognosis.{landmark.endpoint}",
        record_id,
        visits=_visits_text(visit_months),
        clinical=clinical,
        months=f"{landmark.months:g}",
    )
    return tid, prompt


def build_prognosis(
    images: Sequence[ImageRecord], patient: PrognosisPatient, landmark: Landmark, picker: TemplatePicker
) -> Row | None:
    """One landmark prompt from visit images + clinical text; None if censored before the landmark.

    The human turn starts with ``<image>\\n`` (one image) or ``Image-1: <image>\\nImage-2: <image>\\n``
    (several, InternVL's multi-image form). Target: ``{cohort, endpoint, landmark_months, label,
    time_months, event}``. The caller passes only images acquired before the landmark.
    """
    label = survival_label(patient.months, patient.event, landmark.months)
    if label is None:
        return None
    first = images[0]
    rid = f"{first.patient_id}:prognosis" if landmark.per == "patient" else f"{first.image_id}:prognosis"
    tid, prompt = prognosis_prompt([im.visit_month for im in images], patient.clinical, landmark, picker, rid)
    target = {
        "cohort": patient.cohort,
        "endpoint": landmark.endpoint,
        "landmark_months": landmark.months,
        "label": label,
        "time_months": round(patient.months, 3),
        "event": patient.event,
    }
    return _make(first, "prognosis", rid, tid, prompt, label.capitalize(), target, images)


class _PrognosisStream:
    """Groups consecutive manifest rows by patient and emits landmark prompts.

    Memory: the cohort lookup, the ids of cohort patients already closed (both bounded by the
    cohort size) and the current patient's visits before the landmark.
    """

    def __init__(
        self,
        patients: Mapping[str, PrognosisPatient],
        landmarks: Mapping[str, Landmark],
        picker: TemplatePicker,
    ):
        self.patients, self.landmarks, self.picker = patients, landmarks, picker
        self.done: set[str] = set()
        self.excluded = {c: Counter() for c in landmarks}
        self.emitted: Counter = Counter()
        self._reset(None)

    def _reset(self, patient_id: str | None) -> None:
        self.current, self.active, self.last_visit, self.used, self.buffer = patient_id, None, -1, 0, []

    def feed(self, rec: ImageRecord, where: str) -> list[Row]:
        """Take the next manifest row; returns the prompts completed by it."""
        out = []
        if rec.patient_id != self.current:
            out = self.finish()
            self._start(rec, where)
        p = self.active
        if p is None:
            return out
        if rec.visit_index < self.last_visit:  # equal: several images (slices) of one visit
            raise SchemaError(
                f"{where}: patient {rec.patient_id} visit_index {rec.visit_index} follows visit "
                f"{self.last_visit}; the manifest must list a patient's visits in order"
            )
        if rec.split != p.split:
            raise SchemaError(
                f"{where}: image {rec.image_id} has split {rec.split!r} but patient "
                f"{rec.patient_id} has split {p.split!r} in patients.parquet"
            )
        self.last_visit = rec.visit_index
        lm = self.landmarks[p.cohort]
        if rec.visit_month >= lm.months:  # an image after the landmark would leak the outcome
            return out
        self.used += 1
        self.buffer.append(rec)
        if lm.per == "image":
            out.append(self._emit())
        return out

    def _start(self, rec: ImageRecord, where: str) -> None:
        self._reset(rec.patient_id)
        p = self.patients.get(rec.patient_id)
        if p is None:
            return
        if rec.patient_id in self.done:
            raise SchemaError(
                f"{where}: rows of patient {rec.patient_id} are not consecutive in the manifest; "
                "ingest must keep a patient's images together, visits in order"
            )
        self.done.add(rec.patient_id)
        if survival_label(p.months, p.event, self.landmarks[p.cohort].months) is None:
            self.excluded[p.cohort]["censored_before_landmark"] += 1
            return
        self.active = p

    def _emit(self) -> Row:
        p = self.active
        inst = build_prognosis(self.buffer, p, self.landmarks[p.cohort], self.picker)
        self.buffer = []
        self.emitted[p.cohort] += 1
        return inst

    def finish(self) -> list[Row]:
        """Close the current patient: its per-patient prompt, or the count of why it has none."""
        out = []
        p = self.active
        if p is not None:
            if self.buffer:
                out.append(self._emit())
            if self.used == 0:
                self.excluded[p.cohort]["no_image_before_landmark"] += 1
        self._reset(None)
        return out

    def summary(self) -> dict[str, Any]:
        """Prompts and excluded patients per cohort (``no_images``: in patients.parquet, not in the manifest)."""
        excluded = {c: Counter(n) for c, n in self.excluded.items()}
        for pid, p in self.patients.items():
            if pid not in self.done:
                excluded[p.cohort]["no_images"] += 1
        return {
            "landmarks": {c: asdict(lm) for c, lm in self.landmarks.items()},
            "instructions_by_cohort": {c: self.emitted[c] for c in self.landmarks},
            "excluded_patients": {c: dict(sorted(n.items())) for c, n in excluded.items()},
        }


# ---------------------------------------------------------------------------------------------
# the streaming stage
# ---------------------------------------------------------------------------------------------


def _iter_manifest(images_dir: Path) -> Iterator[tuple[ImageRecord, str]]:
    """Validated image records with their location ``<file>: row <i>``, one batch in memory."""
    for f in parquet_files(images_dir):
        for i, row in enumerate(iter_parquet_rows(f)):
            where = f"{f}: row {i} (image {row.get('image_id')})"
            rec = ImageRecord.from_dict(row, where)
            if (rec.site_role == "external") != (rec.split == "external"):
                raise SchemaError(
                    f"{where}: site_role {rec.site_role!r} with split {rec.split!r}; external-site images must have "
                    "split 'external' and internal ones never; fix the split assignment at ingest"
                )
            yield rec, where


def curate(
    manifest_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    seed: int,
    rows_per_shard: int,
    guardrail_per_image: int,
    region_names_by_modality: Mapping[str, Sequence[str]],
    landmarks: Mapping[str, Landmark] = DEFAULT_LANDMARKS,
    data_root: str | os.PathLike | None = None,
    templates_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Stream the manifest into instruction shards, the InternVL export and ``manifest.json``.

    Writes ``out_dir/shards/part-*.parquet`` (:data:`INSTRUCTION_SCHEMA`), ``out_dir/internvl/``
    (:func:`~model.data.export.export_internvl`) and ``out_dir/manifest.json`` inside one
    :func:`~model.data.io.atomic_dir`: on any error nothing is left at ``out_dir``.

    Args:
        manifest_dir: ``data/<profile>/manifest`` (``images/part-*.parquet``, ``patients.parquet``).
        out_dir: the curated folder, replaced atomically.
        seed: template-choice seed.
        rows_per_shard: instruction rows per Parquet shard.
        guardrail_per_image: refusals drawn per image with annotated regions.
        region_names_by_modality: catalogue region names per modality (for the guardrail).
        landmarks: cohort -> :class:`Landmark`; empty disables prognosis (and patients.parquet).
        data_root: root the records' paths are relative to (default: ``manifest_dir``'s parent).
        templates_path: templates YAML (default: the packaged ``templates.yaml``).

    Returns:
        The stage manifest: counts per task / split / task x split, images per split, prognosis
        exclusions, shards (path, rows, sha256), templates version and the InternVL export.

    Raises:
        SchemaError: a manifest or patient row is malformed (names the file, row and field), an
            external-site row has a non-external split, or a patient's rows are not consecutive.
        ValueError: the manifest yields no instruction.
    """
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    data_root = Path(data_root) if data_root is not None else manifest_dir.parent
    picker = TemplatePicker(load_templates(templates_path), seed)
    patients = load_prognosis_patients(manifest_dir / "patients.parquet", landmarks) if landmarks else {}
    prognosis = _PrognosisStream(patients, landmarks, picker)
    names = {m: tuple(v) for m, v in region_names_by_modality.items()}
    fallbacks = guardrail_fallbacks(names)
    counts: Counter = Counter()
    images: Counter = Counter()

    def write(rows: list[Row]) -> None:
        for row in rows:
            writer.write(row)
            counts[row["task"], row["split"]] += 1

    with atomic_dir(out_dir) as tmp:
        with ShardedParquetWriter(
            tmp / "shards", INSTRUCTION_SCHEMA, rows_per_shard=rows_per_shard
        ) as writer:
            for rec, where in _iter_manifest(manifest_dir / "images"):
                images[rec.split] += 1
                try:
                    rows = build_image_instructions(
                        rec,
                        picker,
                        region_names=names.get(rec.modality, ()),
                        guardrail_per_image=guardrail_per_image,
                        fallback_names=fallbacks[rec.modality],
                    )
                except SchemaError as e:
                    raise SchemaError(f"{where}: {e}") from e
                write(rows + prognosis.feed(rec, where))
            write(prognosis.finish())
        if writer.num_rows == 0:
            raise ValueError(f"{manifest_dir}: the manifest produced no instruction (no images?)")
        export = export_internvl(
            tmp / "shards", tmp / "internvl", data_root=data_root, meta_dir=out_dir / "internvl"
        )
        summary = {
            "stage": "curate",
            "manifest_dir": str(manifest_dir),
            "seed": seed,
            "rows_per_shard": rows_per_shard,
            "guardrail_per_image": guardrail_per_image,
            "templates": templates_version(templates_path),
            "num_images": sum(images.values()),
            "images_by_split": {s: images[s] for s in SPLITS},
            "num_instructions": writer.num_rows,
            **_count_tables(counts),
            "prognosis": prognosis.summary(),
            "shards": [
                {"path": f"shards/{p.name}", "rows": n, "sha256": sha256_file(p)}
                for p, n in zip(writer.shards, writer.shard_rows, strict=True)
            ],
            "internvl": export,
        }
        with atomic_file(tmp / "manifest.json") as fh:
            json.dump(summary, fh, indent=2, sort_keys=False)
    return summary


def _count_tables(counts: Counter) -> dict[str, Any]:
    return {
        "by_task": {t: sum(counts[t, s] for s in SPLITS) for t in TASKS},
        "by_split": {s: sum(counts[t, s] for t in TASKS) for s in SPLITS},
        "by_task_split": {t: {s: counts[t, s] for s in SPLITS} for t in TASKS},
    }


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

_PARAM_KEYS = {"seed", "rows_per_shard", "guardrail_per_image"}


def _read_params(path: str, profile: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    try:
        cfg = dict(doc["data"][profile]["curate"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: no data.{profile}.curate block") from e
    unknown, missing = set(cfg) - _PARAM_KEYS - {"landmarks"}, _PARAM_KEYS - set(cfg)
    if unknown or missing:
        raise ValueError(
            f"{path}: data.{profile}.curate: unknown keys {sorted(unknown)}, missing {sorted(missing)}"
        )
    raw = cfg.pop("landmarks", None)
    cfg["landmarks"] = DEFAULT_LANDMARKS if raw is None else {c: Landmark(**v) for c, v in raw.items()}
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model.data.curation --params params.yaml --profile ci --root data/ci``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, help="params.yaml; reads data.<profile>.curate")
    ap.add_argument("--profile", required=True, help="ci, demo or prod")
    ap.add_argument(
        "--root", required=True, help="the profile's data root (reads manifest/, writes curated/)"
    )
    args = ap.parse_args(argv)
    cfg = _read_params(args.params, args.profile)
    catalogue = load_region_catalogue()
    names = {m: [e.name for e in catalogue.for_modality(m)] for m in catalogue.modalities}
    root = Path(args.root)
    summary = curate(
        root / "manifest", out_dir=root / "curated", data_root=root, region_names_by_modality=names, **cfg
    )
    print(
        json.dumps(
            {k: summary[k] for k in ("num_images", "num_instructions", "by_task", "by_split")}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
