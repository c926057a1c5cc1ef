"""The 5-step clinical reasoning dataset for chest X-ray and CT reports (reasoning SFT data).

XMedGPT trains report generation with explicit clinical reasoning: (1) identify the anatomical
structures, (2) detect their regions, (3) describe each region, (4) analyse everything together
with the patient history, the chief complaint and the prior report, (5) summarise the final
report. The paper drafted these chains with GPT-4o and had radiologists review them; here they
are built deterministically from the corpus' structured fields (regions, lesions, prior visit,
patient row, reference report), so every statement is backed by a label. An LLM writer can
replace the deterministic one behind the same :class:`ReasoningWriter` protocol.

Answer format (one header per step at the start of a line; boxes in InternVL's
``<ref>name</ref><box>[[x1, y1, x2, y2]]</box>`` 0..1000 format, :mod:`model.data.boxes`)::

    Step 1: Identify the anatomical structures.
    This is a chest X-ray image. Visible structures: right lung, left lung, heart.
    Step 2: Detect the regions of the structures.
    - <ref>right lung</ref><box>[[136, 204, 455, 792]]</box>
    ...
    Step 3: Describe each region.
    - right lung: mild pneumothorax measuring 30 mm, <ref>pneumothorax</ref><box>[[...]]</box>.
    Step 4: Analyse the findings with the patient history, chief complaint and prior report.
    Patient history: ... Chief complaint: ... Prior study (month 0): ... Assessment: ...
    Step 5: Final report: <findings> Impression: <impression>

The step-5 text after ``Final report:`` is :func:`reference_report` of the record; evaluation
reads it back with :func:`step5_report` (CheXpert-style F1 in ``validation/report_labeler.py``).

Stage: :func:`build_reasoning_dataset` streams ``manifest/images`` (a patient's rows consecutive,
visits in order; the prior is the previous visit of the same patient and modality) into one
Parquet file of :data:`~model.data.schema.INSTRUCTION_SCHEMA` rows (task ``report``), atomically.
CLI: ``python -m model.reasoning --manifest data/ci/manifest --out data/ci/reasoning/train.parquet
--split train``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from model.data.boxes import BoxFormatError, format_ref_boxes, parse_boxes, to_normalised
from model.data.curation import IMAGE_TOKEN, MODALITY_NAMES, TemplatePicker
from model.data.io import atomic_file, iter_parquet_rows, parquet_files, sha256_file
from model.data.schema import (
    INSTRUCTION_SCHEMA,
    MODALITIES,
    SPLITS,
    ImageRecord,
    InstructionRecord,
    Lesion,
    PatientRecord,
    SchemaError,
)

__all__ = [
    "ANSWER_STYLES",
    "DEFAULT_LLM_TEMPLATE",
    "REASONING_REQUESTS",
    "STEP_TITLES",
    "DeterministicReasoningWriter",
    "LLMReasoningWriter",
    "ReasoningFormatError",
    "ReasoningWriter",
    "build_reasoning_answer",
    "build_reasoning_dataset",
    "build_reasoning_row",
    "check_answer_layout",
    "check_report_layout",
    "main",
    "parse_reasoning_steps",
    "prefix_before_step5",
    "reasoning_prompt",
    "reference_report",
    "step5_report",
    "validate_reasoning",
]

log = logging.getLogger(__name__)

#: Step number -> title written after ``Step k:`` (step 5 is followed by the report itself).
STEP_TITLES: dict[int, str] = {
    1: "Identify the anatomical structures",
    2: "Detect the regions of the structures",
    3: "Describe each region",
    4: "Analyse the findings with the patient history, chief complaint and prior report",
    5: "Final report",
}
#: Paraphrases of the human request (chosen per row by ``crc32(seed|id|"reasoning")``).
REASONING_REQUESTS: tuple[str, ...] = (
    (
        "Write the report for this {modality} image step by step: identify the anatomical structures, "
        "locate them with boxes, describe each region, analyse the findings with the clinical context, "
        "then give the final report."
    ),
    "Reason step by step about this {modality} image of the {body_part}, then write the final report.",
    (
        "Think through this {modality} study in five steps (structures, regions, regional findings, "
        "clinical analysis, final report) and write the report."
    ),
    "Please write a report for this {modality} image, showing your clinical reasoning step by step.",
    (
        "Analyse this {body_part} {modality} image step by step, using the clinical information below, "
        "and finish with the final report."
    ),
    "Describe your step-by-step reasoning for this {modality} image, then give findings and impression.",
)
#: Default prompt of :class:`LLMReasoningWriter`: ``{draft}`` (required) and ``{reference_report}``.
DEFAULT_LLM_TEMPLATE = (
    "You are a radiologist preparing training data. Rewrite the structured draft below as clear, "
    "step-by-step clinical reasoning. Keep exactly five steps with the headers 'Step 1:' to "
    "'Step 5:' at the start of a line, keep every <ref>...</ref><box>...</box> tag unchanged, use "
    "only facts stated in the draft, and write step 5 as 'Step 5: Final report: ' followed by the "
    "reference report verbatim.\n\nReference report: {reference_report}\n\nDraft:\n{draft}"
)
_PHRASE = {"effusion": "pleural effusion"}  # lesion type -> report wording (as the generator writes it)
_HEADER = re.compile(
    r"^[ \t>#*_-]*step[ \t]*(\d+)[ \t]*\**[ \t]*[:.)][ \t]*\**", re.IGNORECASE | re.MULTILINE
)
_FINAL_LABEL = re.compile(r"^\**\s*final report\s*\**\s*[:.-]?\s*\**\s*", re.IGNORECASE)


class ReasoningFormatError(ValueError):
    """A reasoning answer lacks a step, repeats one, has them out of order, or an empty step 5."""


# ---------------------------------------------------------------------------------------------
# the answer format
# ---------------------------------------------------------------------------------------------


def parse_reasoning_steps(text: str) -> dict[int, str]:
    """The steps present in ``text``: step number -> body (all text after ``Step k:``, its title
    included, up to the next header), in text order.

    A header is ``Step <k>`` followed by ``:``, ``.`` or ``)`` at the start of a line (Markdown
    ``**``/``#``/``-`` prefixes allowed). Steps may be missing; see :func:`validate_reasoning`.

    Raises:
        ReasoningFormatError: a step number appears twice.
    """
    heads = list(_HEADER.finditer(text))
    out: dict[int, str] = {}
    for i, m in enumerate(heads):
        k = int(m.group(1))
        if k in out:
            raise ReasoningFormatError(f"step {k} appears more than once")
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        out[k] = text[m.end() : end].strip()
    return out


def validate_reasoning(text: str) -> dict[int, str]:
    """Check that ``text`` has exactly steps 1..5, in order, each non-empty, and a step-5 report.

    Returns:
        Step number -> body, as :func:`parse_reasoning_steps`.

    Raises:
        ReasoningFormatError: naming the missing, extra, repeated, out-of-order or empty steps.
    """
    steps = parse_reasoning_steps(text)
    missing = [k for k in STEP_TITLES if k not in steps]
    if missing:
        raise ReasoningFormatError(f"missing step(s) {missing}; found {list(steps)}")
    extra = [k for k in steps if k not in STEP_TITLES]
    if extra:
        raise ReasoningFormatError(f"unexpected step(s) {extra}; only steps 1-5 are allowed")
    if list(steps) != sorted(steps):
        raise ReasoningFormatError(f"steps out of order: {list(steps)}; expected [1, 2, 3, 4, 5]")
    empty = [k for k, body in steps.items() if not body]
    if empty:
        raise ReasoningFormatError(f"empty step(s) {empty}")
    _final(steps[5])
    return steps


#: one grounded reference as the builders write it: ``<ref>name</ref><box>[[x1, y1, x2, y2], ...]</box>``
_GROUNDED = re.compile(
    r"<ref>[^<>\n]+</ref><box>\[\[\d+, \d+, \d+, \d+\](?:, \[\d+, \d+, \d+, \d+\])*\]</box>"
)
_TAG = re.compile(r"</?(?:ref|box)>")
_STEP_WORD = re.compile(r"^[ \t>#*_-]*step\b", re.IGNORECASE | re.MULTILINE)


def check_report_layout(text: str) -> dict[int, str]:
    """:func:`validate_reasoning` plus a clean step 5, for free model output.

    Step 5 starts with "Final report" and has it once, has no ``<ref>``/``<box>`` tag, no line
    starting with "Step" and at most one "Impression:". Alone, for answers whose steps 1-4 are a
    shared, already-judged prefix (step-level preference pairs, where only the report differs);
    :func:`check_answer_layout` adds the rules of the whole answer.

    Raises:
        ReasoningFormatError: naming the first violation.
    """
    steps = validate_reasoning(text)
    body = steps[5]
    if _TAG.search(body):
        raise ReasoningFormatError("step 5 (the report) holds a <ref>/<box> tag")
    if _STEP_WORD.search(body):
        raise ReasoningFormatError("a line of step 5 starts with 'Step' but is no step header")
    if len(re.findall(r"final report", body, re.IGNORECASE)) != 1 or not _FINAL_LABEL.match(body):
        raise ReasoningFormatError("'Final report' must appear once, at the start of step 5")
    if len(re.findall(r"impression:", body, re.IGNORECASE)) > 1:
        raise ReasoningFormatError("'Impression:' appears more than once in step 5")
    return steps


def check_answer_layout(text: str) -> dict[int, str]:
    """:func:`check_report_layout` plus the layout every writer's whole answer has.

    Every ``<ref>``/``<box>`` tag belongs to a complete ``<ref>name</ref><box>[[x1, y1, x2, y2],
    ...]</box>`` with possible boxes (``x1 < x2``, ``y1 < y2``, on 0..1000); no line starts with
    "Step" except the five headers; "Final report" appears nowhere but at the start of step 5. A
    sampled answer that scrambles these can still mention the right findings in its step 5; this
    check tells it apart from an answer a reader could use.

    Raises:
        ReasoningFormatError: naming the first violation.
    """
    steps = check_report_layout(text)
    stray = _TAG.search(_GROUNDED.sub("", text))
    if stray:
        raise ReasoningFormatError(
            f"a {stray.group()} tag outside a complete <ref>...</ref><box>[[...]]</box>"
        )
    try:
        parse_boxes(text, strict=True)
    except BoxFormatError as e:
        raise ReasoningFormatError(str(e)) from e
    step_lines = len(_STEP_WORD.findall(text))
    if step_lines != len(steps):
        raise ReasoningFormatError(
            f"{step_lines - len(steps)} line(s) start with 'Step' but are no step header"
        )
    if len(re.findall(r"final report", text, re.IGNORECASE)) != 1:
        raise ReasoningFormatError("'Final report' must appear once, at the start of step 5")
    return steps


def prefix_before_step5(text: str) -> str | None:
    """``text`` up to and including its ``Step 5:`` header, when steps 1-4 precede it once each, in order.

    The shared start of step-level preference pairs: K continuations of this prefix differ only in
    the final report. None when there is no step-5 header or steps 1-4 before it are incomplete.
    """
    heads = list(_HEADER.finditer(text))
    numbers = [int(m.group(1)) for m in heads]
    if 5 not in numbers:
        return None
    k = numbers.index(5)
    if numbers[:k] != [1, 2, 3, 4]:
        return None
    return text[: heads[k].end()].rstrip(" \t")  # the report's leading space starts its first word token


def _final(body: str) -> str:
    report = _FINAL_LABEL.sub("", body, count=1).strip()
    if not report:
        raise ReasoningFormatError("step 5 has no final report text after 'Final report:'")
    return report


def step5_report(text: str) -> str:
    """The final report of a reasoning answer: step 5's text without its ``Final report:`` label.

    Only step 5 is required (steps 1-4 may be missing or malformed).

    Raises:
        ReasoningFormatError: no step 5, step 5 repeated, or step 5 empty.
    """
    steps = parse_reasoning_steps(text)
    if 5 not in steps:
        raise ReasoningFormatError(
            f"no 'Step 5:' header (final report) in the answer; found steps {list(steps)}"
        )
    return _final(steps[5])


def reference_report(rec: ImageRecord) -> str:
    """``<findings> Impression: <impression>`` (the impression part only when the record has one).

    Raises:
        SchemaError: the record has no ``report_findings``.
    """
    if not rec.report_findings:
        raise SchemaError(
            f"image {rec.image_id}: field 'report_findings' is missing; no report to reason towards"
        )
    if rec.report_impression:
        return f"{rec.report_findings.strip()} Impression: {rec.report_impression.strip()}"
    return rec.report_findings.strip()


# ---------------------------------------------------------------------------------------------
# the deterministic chain
# ---------------------------------------------------------------------------------------------


def _mm(v: float) -> str:
    v = round(v, 3)  # float32 storage noise (29.8999996 -> 29.9)
    return f"{v:.0f} mm" if v >= 10 else f"{v:.1f} mm" if v >= 1 else f"{v:.2f} mm"


def _phrase(lesion_type: str) -> str:
    return _PHRASE.get(lesion_type, lesion_type)


def _box(rec: ImageRecord, b: Any) -> list[int]:
    return list(to_normalised((b.x1, b.y1, b.x2, b.y2), rec.width, rec.height))


def _region_boxes(rec: ImageRecord) -> dict[str, list[list[int]]]:
    groups: dict[str, list[list[int]]] = {}
    for r in rec.regions:
        groups.setdefault(r.name, []).append(_box(rec, r))
    return groups


def _step1(rec: ImageRecord, names: Sequence[str]) -> str:
    head = f"This is a {rec.body_part} {MODALITY_NAMES[rec.modality]} image."
    if not names:
        return f"{head} No anatomical structure is annotated on this image."
    return f"{head} Visible structures: {', '.join(names)}."


def _step2(groups: dict[str, list[list[int]]]) -> str:
    if not groups:
        return "No structure to locate."
    return "\n".join(f"- {format_ref_boxes(name, boxes)}" for name, boxes in groups.items())


def _describe(rec: ImageRecord, les: Lesion) -> str:
    p = _phrase(les.lesion_type)
    return f"{les.severity} {p} measuring {_mm(les.size_mm)}, {format_ref_boxes(p, [_box(rec, les)])}"


def _step3(rec: ImageRecord, names: Sequence[str]) -> str:
    by_region: dict[str, list[Lesion]] = {}
    for les in rec.lesions:
        by_region.setdefault(les.region, []).append(les)
    lines = []
    for name in [*names, *(r for r in by_region if r not in names)]:
        found = by_region.get(name)
        what = "; ".join(_describe(rec, les) for les in found) if found else "no abnormality is seen"
        lines.append(f"- {name}: {what}.")
    return "\n".join(lines) if lines else "No region to describe."


def _step3_concise(rec: ImageRecord, names: Sequence[str]) -> str:
    by_region: dict[str, list[Lesion]] = {}
    for les in rec.lesions:
        by_region.setdefault(les.region, []).append(les)
    lines = [
        f"- {name}: {'; '.join(_describe(rec, les) for les in found)}." for name, found in by_region.items()
    ]
    if any(n not in by_region for n in names):
        lines.append(f"- {'other structures' if by_region else 'all structures'}: no abnormality is seen.")
    return "\n".join(lines) if lines else "No region to describe."


def _prior_report(prior: ImageRecord) -> str:
    return reference_report(prior) if prior.report_findings else "no report is available."


def _comparison(rec: ImageRecord, prior: ImageRecord) -> list[str]:
    before = {(les.lesion_type, les.region): les for les in prior.lesions}
    now = {(les.lesion_type, les.region): les for les in rec.lesions}
    out = []
    for key, les in now.items():
        what = f"the {_phrase(les.lesion_type)} in the {les.region}"
        old = before.get(key)
        if old is None:
            out.append(f"{what[0].upper()}{what[1:]} is new since the prior study.")
            continue
        pct = 100.0 * (les.size_mm - old.size_mm) / old.size_mm
        out.append(
            f"{what[0].upper()}{what[1:]} measured {_mm(old.size_mm)} on the prior study and measures "
            f"{_mm(les.size_mm)} now ({pct:+.0f}%)."
        )
    for key, old in before.items():
        if key not in now:
            out.append(
                f"The {_phrase(old.lesion_type)} in the {old.region} seen on the prior study is not seen now."
            )
    return out


def _assessment(rec: ImageRecord, patient: PatientRecord | None) -> str:
    if not rec.lesions:
        return "Assessment: no abnormality is detected; the examination is normal."
    listed = "; ".join(
        f"{les.severity} {_phrase(les.lesion_type)} in the {les.region}" for les in rec.lesions
    )
    main = max(rec.lesions, key=lambda les: les.size_mm)
    text = (
        f"Assessment: {len(rec.lesions)} abnormal finding(s): {listed}. The largest is the "
        f"{_phrase(main.lesion_type)} in the {main.region} ({_mm(main.size_mm)})."
    )
    if patient is not None and patient.chief_complaint:
        complaint = patient.chief_complaint.rstrip(".")
        text += f" These findings are correlated with the chief complaint of {complaint}."
    return text


def _step4(rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
    lines = []
    history = patient.history if patient is not None else None
    complaint = patient.chief_complaint if patient is not None else None
    lines.append(f"Patient history: {history.strip()}" if history else "No patient history is available.")
    lines.append(
        f"Chief complaint: {complaint.rstrip('.')}." if complaint else "No chief complaint is recorded."
    )
    if prior is None:
        lines.append("No prior study is available for comparison.")
    else:
        months = rec.visit_month - prior.visit_month
        lines.append(
            f"Prior study (month {prior.visit_month:g}, {months:g} months earlier): {_prior_report(prior)}"
        )
        lines.extend(_comparison(rec, prior))
    lines.append(_assessment(rec, patient))
    return "\n".join(lines)


def _step4_concise(rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
    complaint = (
        patient.chief_complaint.rstrip(".") if patient is not None and patient.chief_complaint else None
    )
    known = patient is not None and bool(patient.history or patient.chief_complaint)
    lines = [
        f"Considered: the patient history and the chief complaint ({complaint})."
        if complaint
        else "Considered: the patient history."
        if known
        else "No patient history is recorded."
    ]
    if prior is None:
        lines.append("No prior study.")
    else:
        lines.append(f"Prior study: month {prior.visit_month:g}.")
        lines.extend(_comparison(rec, prior))
    if rec.lesions:
        listed = "; ".join(
            f"{les.severity} {_phrase(les.lesion_type)} in the {les.region}" for les in rec.lesions
        )
        lines.append(f"Assessment: {len(rec.lesions)} abnormal finding(s): {listed}.")
    else:
        lines.append("Assessment: normal examination.")
    return "\n".join(lines)


#: answer styles of :func:`build_reasoning_answer`
ANSWER_STYLES = ("full", "concise")


def build_reasoning_answer(
    rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None, *, style: str = "full"
) -> str:
    """The 5-step reasoning answer for one image, built only from its structured fields.

    The ``concise`` style keeps the five steps, every structure of step 1 with its box in step 2
    and the same step-5 report, but describes only the abnormal regions in step 3 (the others in
    one line) and refers to the history and prior study in step 4 instead of repeating them from
    the prompt: about 60% of the tokens of ``full``, for small models and short training budgets.

    Args:
        rec: the image (its regions, lesions and report).
        patient: its patient row (history, chief complaint), or None when unknown.
        prior: the previous visit of the same patient and modality, or None at the first visit.
        style: ``full`` (the paper's verbose chain) or ``concise``.

    Returns:
        Five ``Step k:`` sections; step 5 is ``Final report: <reference_report(rec)>``.

    Raises:
        SchemaError: the record (or the prior) has no report findings.
        ValueError: an unknown ``style``.
    """
    if style not in ANSWER_STYLES:
        raise ValueError(f"style must be one of {ANSWER_STYLES}, got {style!r}")
    report = reference_report(rec)
    groups = _region_boxes(rec)
    names = list(groups)
    concise = style == "concise"
    bodies = {
        1: _step1(rec, names),
        2: _step2(groups),
        3: _step3_concise(rec, names) if concise else _step3(rec, names),
        4: _step4_concise(rec, patient, prior) if concise else _step4(rec, patient, prior),
    }
    parts = [f"Step {k}: {STEP_TITLES[k]}.\n{body}" for k, body in bodies.items()]
    parts.append(f"Step 5: {STEP_TITLES[5]}: {report}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


class ReasoningWriter(Protocol):
    """Writes the 5-step answer for one image. ``name`` is recorded in each row's target."""

    name: str

    def write(self, rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
        """The answer text; must pass :func:`validate_reasoning`."""
        ...


class DeterministicReasoningWriter:
    """:func:`build_reasoning_answer`: no model, every sentence backed by a structured field.

    Args:
        style: ``full`` or ``concise`` (see :func:`build_reasoning_answer`).
    """

    def __init__(self, style: str = "full") -> None:
        if style not in ANSWER_STYLES:
            raise ValueError(f"style must be one of {ANSWER_STYLES}, got {style!r}")
        self.style = style
        self.name = "deterministic" if style == "full" else f"deterministic-{style}"

    def write(self, rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
        """See :func:`build_reasoning_answer`."""
        return build_reasoning_answer(rec, patient, prior, style=self.style)


class LLMReasoningWriter:
    """Asks a language model to rewrite the deterministic draft; validates the 5-step format.

    The model is any callable ``complete(prompt) -> str`` (an API client, a local pipeline, a
    fake in tests); nothing here opens a network connection. The prompt is ``prompt_template``
    filled with ``{draft}`` (the deterministic answer) and optionally ``{reference_report}``.

    Args:
        complete: the completion function.
        prompt_template: the prompt; must contain ``{draft}``; may contain ``{reference_report}``.
        name: recorded as the writer of each row.

    Raises:
        ValueError: the template lacks ``{draft}`` or has another placeholder.

    Example:
        >>> writer = LLMReasoningWriter(lambda prompt: my_client.generate(prompt))  # doctest: +SKIP
    """

    def __init__(
        self,
        complete: Callable[[str], str],
        prompt_template: str = DEFAULT_LLM_TEMPLATE,
        *,
        name: str = "llm",
    ) -> None:
        if not callable(complete):
            raise TypeError(f"complete must be a callable prompt -> str, got {type(complete).__name__}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(prompt_template) if f is not None}
        except ValueError as e:
            raise ValueError(f"prompt_template has bad braces: {e}") from e
        if "draft" not in fields or fields - {"draft", "reference_report"}:
            raise ValueError(
                "prompt_template must contain {draft} and may contain {reference_report}; "
                f"got {sorted(fields)}"
            )
        self.complete, self.prompt_template, self.name = complete, prompt_template, name

    def prompt(self, rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
        """The prompt sent to the model for one image."""
        draft = build_reasoning_answer(rec, patient, prior)
        return self.prompt_template.format(draft=draft, reference_report=reference_report(rec))

    def write(self, rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None) -> str:
        """The model's answer, stripped.

        Raises:
            ReasoningFormatError: the answer is not a string or fails :func:`validate_reasoning`
                (the message names the image).
        """
        out = self.complete(self.prompt(rec, patient, prior))
        if not isinstance(out, str):
            raise ReasoningFormatError(
                f"image {rec.image_id}: the model returned {type(out).__name__}, not text"
            )
        try:
            validate_reasoning(out)
        except ReasoningFormatError as e:
            raise ReasoningFormatError(
                f"image {rec.image_id}: the model's answer is not 5-step reasoning: {e}"
            ) from e
        return out.strip()


# ---------------------------------------------------------------------------------------------
# instruction rows
# ---------------------------------------------------------------------------------------------


def reasoning_prompt(
    rec: ImageRecord, patient: PatientRecord | None, prior: ImageRecord | None, picker: TemplatePicker
) -> tuple[int, str]:
    """The human turn (without ``<image>``): a step-by-step request plus the clinical context.

    The context lists the patient history, the chief complaint and the prior report when known:
    step 4 reasons over them, so the model must see them in the prompt.

    Returns:
        The request paraphrase index and the prompt text.
    """
    tid, request = picker.render(
        "reasoning",
        f"{rec.image_id}:reasoning:0",
        modality=MODALITY_NAMES[rec.modality],
        body_part=rec.body_part,
    )
    lines = [request]
    if patient is not None and patient.history:
        lines.append(f"Patient history: {patient.history.strip()}")
    if patient is not None and patient.chief_complaint:
        lines.append(f"Chief complaint: {patient.chief_complaint.rstrip('.')}.")
    if prior is not None:
        lines.append(f"Prior report (month {prior.visit_month:g}): {_prior_report(prior)}")
    return tid, "\n".join(lines)


def build_reasoning_row(
    rec: ImageRecord,
    patient: PatientRecord | None,
    prior: ImageRecord | None,
    *,
    writer: ReasoningWriter,
    picker: TemplatePicker,
) -> dict[str, Any]:
    """One :data:`INSTRUCTION_SCHEMA` row (task ``report``) with the writer's 5-step answer.

    ``target`` (JSON): ``reference_report``, ``step5`` (the answer's final report), ``findings``,
    ``impression``, ``prior_image_id`` and ``writer``.

    Raises:
        ReasoningFormatError: the writer's answer fails :func:`validate_reasoning`.
    """
    answer = writer.write(rec, patient, prior)
    try:
        validate_reasoning(answer)
    except ReasoningFormatError as e:
        raise ReasoningFormatError(f"image {rec.image_id}: writer {writer.name!r}: {e}") from e
    tid, prompt = reasoning_prompt(rec, patient, prior, picker)
    target = {
        "reference_report": reference_report(rec),
        "step5": step5_report(answer),
        "findings": rec.report_findings,
        "impression": rec.report_impression,
        "prior_image_id": prior.image_id if prior is not None else None,
        "writer": writer.name,
    }
    return {
        "id": f"{rec.image_id}:reasoning:0",
        "task": "report",
        "images": [rec.image_path],
        "image_ids": [rec.image_id],
        "width": rec.width,
        "height": rec.height,
        "conversations": [
            {"from": "human", "value": IMAGE_TOKEN + prompt},
            {"from": "gpt", "value": answer},
        ],
        "patient_id": rec.patient_id,
        "split": rec.split,
        "site": rec.site,
        "site_role": rec.site_role,
        "modality": rec.modality,
        "source": rec.source,
        "template_id": tid,
        "target": json.dumps(target, ensure_ascii=False, separators=(",", ":")),
    }


# ---------------------------------------------------------------------------------------------
# the streaming stage
# ---------------------------------------------------------------------------------------------


def _load_patients(path: Path, split: str) -> dict[str, PatientRecord]:
    """Patients of one split from ``patients.parquet`` (the others are not kept in memory)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: patients.parquet not found; run the ingest stage first")
    out = {}
    for i, row in enumerate(iter_parquet_rows(path)):
        if row.get("split") == split:
            p = PatientRecord.from_dict(row, f"{path}: row {i} (patient {row.get('patient_id')})")
            out[p.patient_id] = p
    return out


class _PriorTracker:
    """Checks that a patient's rows are consecutive with visits in order; finds each prior.

    Memory: the ids of finished patients and the current patient's latest visit per modality.
    """

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.current: str | None = None
        # modality -> (visit index, image of the previous visit or None, last image of this visit)
        self.state: dict[str, tuple[int, ImageRecord | None, ImageRecord]] = {}

    def prior(self, rec: ImageRecord, where: str) -> ImageRecord | None:
        if rec.patient_id != self.current:
            if rec.patient_id in self.done:
                raise SchemaError(
                    f"{where}: rows of patient {rec.patient_id} are not consecutive in the manifest; "
                    "ingest must keep a patient's images together, visits in order"
                )
            if self.current is not None:
                self.done.add(self.current)
            self.current, self.state = rec.patient_id, {}
        seen = self.state.get(rec.modality)
        if seen is None:
            prior = None
        elif rec.visit_index < seen[0]:
            raise SchemaError(
                f"{where}: patient {rec.patient_id} visit_index {rec.visit_index} follows visit {seen[0]}; "
                "the manifest must list a patient's visits in order"
            )
        else:  # a later visit: the last image of the previous one; the same visit (slices): its prior
            prior = seen[2] if rec.visit_index > seen[0] else seen[1]
        self.state[rec.modality] = (rec.visit_index, prior, rec)
        return prior


def _iter_records(
    images_dir: Path, split: str, modalities: frozenset[str], skipped: Counter
) -> Iterator[tuple]:
    """``(record, where)`` for the split's rows of the wanted modalities, validated, in manifest order."""
    for f in parquet_files(images_dir):
        for i, row in enumerate(iter_parquet_rows(f)):
            if row.get("split") != split:
                skipped["other_split"] += 1
                continue
            if row.get("modality") not in modalities:
                skipped["other_modality"] += 1
                continue
            where = f"{f}: row {i} (image {row.get('image_id')})"
            yield ImageRecord.from_dict(row, where), where


def _check_args(split: str, modalities: Sequence[str]) -> frozenset[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise ValueError(
            f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(modalities)}"
        )
    return frozenset(modalities)


def _patient_for(rec: ImageRecord, patients: dict[str, PatientRecord], where: str) -> PatientRecord:
    patient = patients.get(rec.patient_id)
    if patient is None:
        raise SchemaError(
            f"{where}: patient {rec.patient_id} (split {rec.split!r}) has no row of that split "
            "in patients.parquet"
        )
    return patient


def build_reasoning_dataset(
    manifest_dir: str | os.PathLike,
    *,
    out_path: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    split: str,
    modalities: Sequence[str] = ("xray", "ct"),
    seed: int = 0,
    writer: ReasoningWriter | None = None,
    row_group_size: int = 2_048,
) -> dict[str, Any]:
    """Stream the manifest into a Parquet file of 5-step reasoning rows, atomically.

    Memory is bounded by one manifest batch, one row group, the split's patients and the ids of
    finished patients. Images without ``report_findings`` are skipped and counted.

    Args:
        manifest_dir: ``data/<profile>/manifest`` (``images/part-*.parquet``, ``patients.parquet``).
        out_path: the output Parquet file (:data:`INSTRUCTION_SCHEMA`), replaced atomically.
        data_root: the root the records' paths are relative to (default: ``manifest_dir``'s
            parent); every image file must exist under it.
        split: the split to build (``train``, ``val``, ``test`` or ``external``).
        modalities: modalities kept (chest X-ray and CT by default).
        seed: seed of the request paraphrase choice.
        writer: the answer writer; default :class:`DeterministicReasoningWriter`.
        row_group_size: rows buffered per Parquet row group.

    Returns:
        Summary: rows, per modality, with prior / with history, skipped counts, output sha256.

    Raises:
        SchemaError: a malformed row, a patient's rows not consecutive or visits out of order, or
            an image whose patient is missing from ``patients.parquet`` (message names file and row).
        FileNotFoundError: the manifest, ``patients.parquet`` or an image file is missing.
        ReasoningFormatError: the writer produced an answer without the 5 steps.
        ValueError: bad split/modalities, or no row at all for the split and modalities.
    """
    wanted = _check_args(split, modalities)
    manifest_dir, out = Path(manifest_dir), Path(out_path)
    root = Path(data_root) if data_root is not None else manifest_dir.parent
    writer = writer or DeterministicReasoningWriter()
    picker = TemplatePicker({"reasoning": REASONING_REQUESTS}, seed)
    patients = _load_patients(manifest_dir / "patients.parquet", split)
    tracker, counts, skipped = _PriorTracker(), Counter(), Counter()
    buf: list[dict[str, Any]] = []
    with atomic_file(out, "wb") as fh, pq.ParquetWriter(fh, INSTRUCTION_SCHEMA, compression="zstd") as pw:
        for rec, where in _iter_records(manifest_dir / "images", split, wanted, skipped):
            prior = tracker.prior(rec, where)
            if not rec.report_findings:
                skipped["no_report"] += 1
                continue
            if not (root / rec.image_path).is_file():
                raise FileNotFoundError(
                    f"{where}: field 'image_path' {rec.image_path!r} not found under {root}"
                )
            patient = _patient_for(rec, patients, where)
            row = build_reasoning_row(rec, patient, prior, writer=writer, picker=picker)
            InstructionRecord.from_dict(row, f"{where}: reasoning row")
            buf.append(row)
            counts.update(["rows", f"modality:{rec.modality}"])
            counts["with_prior"] += prior is not None
            counts["with_history"] += bool(patient.history or patient.chief_complaint)
            if len(buf) >= row_group_size:
                pw.write_table(pa.Table.from_pylist(buf, schema=INSTRUCTION_SCHEMA))
                buf = []
        if buf:
            pw.write_table(pa.Table.from_pylist(buf, schema=INSTRUCTION_SCHEMA))
        if counts["rows"] == 0:
            raise ValueError(
                f"{manifest_dir}: no image of split {split!r} and modalities {sorted(wanted)} has a report"
            )
    summary = {
        "stage": "reasoning",
        "manifest_dir": str(manifest_dir),
        "out_path": str(out),
        "data_root": str(root),
        "split": split,
        "modalities": sorted(wanted),
        "seed": seed,
        "writer": writer.name,
        "num_rows": counts["rows"],
        "by_modality": {m: counts[f"modality:{m}"] for m in sorted(wanted)},
        "with_prior": counts["with_prior"],
        "with_history": counts["with_history"],
        "skipped": {k: skipped[k] for k in ("other_split", "other_modality", "no_report")},
        "sha256": sha256_file(out),
    }
    log.info("wrote %d reasoning rows (%s) to %s", summary["num_rows"], split, out)
    return summary


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m model.reasoning --manifest M --out F.parquet --split train [--seed S] [--style S]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True, help="the manifest folder (images/, patients.parquet)")
    ap.add_argument("--out", required=True, help="output Parquet file (replaced atomically)")
    ap.add_argument("--split", required=True, choices=SPLITS, help="split to build")
    ap.add_argument(
        "--data-root", default=None, help="root of the records' paths (default: the manifest's parent)"
    )
    ap.add_argument("--modalities", nargs="+", default=["xray", "ct"], help="modalities to keep")
    ap.add_argument("--seed", type=int, default=0, help="seed of the request paraphrase choice")
    ap.add_argument(
        "--style", choices=ANSWER_STYLES, default="full", help="answer style (concise: fewer tokens)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    summary = build_reasoning_dataset(
        args.manifest,
        out_path=args.out,
        data_root=args.data_root,
        split=args.split,
        modalities=tuple(args.modalities),
        seed=args.seed,
        writer=DeterministicReasoningWriter(args.style),
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
