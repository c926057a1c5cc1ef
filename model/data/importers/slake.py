"""Importer for SLAKE (bilingual medical VQA).

Layout (``Slake1.0/``): ``train.json``, ``validate.json``, ``test.json``, each a JSON list of
question entries ``{img_id, img_name, question, answer, q_lang, answer_type, location, modality,
content_type, base_type, qid, ...}``; images at ``imgs/<img_name>`` (``imgs/xmlab102/source.jpg``).

Only English questions (``q_lang == "en"``) are kept. The questions of one image (across all three
files) become one record's ``vqa`` list; ``answer_type`` CLOSED/OPEN maps to closed/open, modality
CT/MRI/X-Ray to ct/mri/xray, ``location`` (lower-cased) to ``body_part``. SLAKE has no patient ids:
each image is its own synthetic patient. SLAKE's split is not kept; ingest re-splits.

Memory: the question lists are JSON arrays and are grouped by image, so memory is proportional to
the number of English questions (about 7k for SLAKE); records are then yielded one by one.

Reference: Liu et al., "SLAKE: A Semantically-Labeled Knowledge-Enhanced Dataset for Medical Visual
Question Answering", ISBI 2021; https://www.med-vqa.com/slake/
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from model.data.importers._common import ImportFormatError, image_size, manifest_record, relative_path

__all__ = ["SLAKE_MODALITIES", "iter_slake"]

#: SLAKE modality (lower-cased, '-' removed) -> platform modality.
SLAKE_MODALITIES: dict[str, str] = {"ct": "ct", "mri": "mri", "xray": "xray"}
_REQUIRED = ("img_id", "img_name", "question", "answer", "q_lang", "answer_type", "location", "modality")


def _load_entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ImportFormatError(f"{path}: SLAKE question file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(entries, list):
        raise ImportFormatError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    return entries


def _text(value: Any, field: str, ctx: str) -> str:
    """Non-empty text of a question/answer (numbers are accepted and converted)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ImportFormatError(f"{ctx}: field {field!r} must be non-empty text, got {value!r}")
    return value.strip()


def _parse_entry(e: Any, ctx: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(image id, image facts, vqa item) of one English entry."""
    if not isinstance(e, dict):
        raise ImportFormatError(f"{ctx}: expected an object, got {type(e).__name__}")
    for f in _REQUIRED:
        if e.get(f) in (None, ""):
            raise ImportFormatError(f"{ctx}: field {f!r} is missing")
    if isinstance(e["img_id"], bool) or not isinstance(e["img_id"], int):
        raise ImportFormatError(f"{ctx}: field 'img_id' must be an integer, got {e['img_id']!r}")
    answer_type = str(e["answer_type"]).strip().lower()
    if answer_type not in ("closed", "open"):
        raise ImportFormatError(
            f"{ctx}: field 'answer_type' is {e['answer_type']!r}; expected CLOSED or OPEN"
        )
    modality = SLAKE_MODALITIES.get(str(e["modality"]).lower().replace("-", "").replace(" ", ""))
    if modality is None:
        raise ImportFormatError(f"{ctx}: field 'modality' is {e['modality']!r}; expected CT, MRI or X-Ray")
    facts = {
        "img_name": str(e["img_name"]),
        "modality": modality,
        "body_part": str(e["location"]).strip().lower(),
    }
    qa = {
        "question": _text(e["question"], "question", ctx),
        "answer": _text(e["answer"], "answer", ctx),
        "answer_type": answer_type,
    }
    return e["img_id"], facts, qa


def iter_slake(
    root: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    files: Sequence[str] = ("train.json", "validate.json", "test.json"),
    site: str = "slake",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream one manifest record per SLAKE image with its English questions.

    Args:
        root: the SLAKE folder (holding the question files and ``imgs/``); inside ``data_root``.
        data_root: the profile's data root; stored image paths are relative to it.
        files: question files to read, relative to ``root``.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        Manifest records ordered by ``img_id``; images without an English question are skipped.

    Raises:
        ImportFormatError: a file is missing or malformed, an entry lacks a field or has an unknown
            modality/answer type, one image is described with two modalities or locations, or an
            image file is missing. The message names the file and the entry index.
    """
    root = Path(root)
    facts: dict[int, dict[str, str]] = {}
    qas: dict[int, list[dict[str, Any]]] = {}
    for name in files:
        path = root / name
        for i, e in enumerate(_load_entries(path)):
            ctx = f"{path}: entry {i}"
            if isinstance(e, dict) and e.get("q_lang") != "en":
                continue
            img_id, f, qa = _parse_entry(e, ctx)
            if facts.setdefault(img_id, f) != f:
                raise ImportFormatError(f"{ctx}: image {img_id} described as {f}, earlier as {facts[img_id]}")
            qas.setdefault(img_id, []).append(qa)
    for img_id in sorted(facts):
        f = facts[img_id]
        image = root / "imgs" / f["img_name"]
        width, height = image_size(image, f"{root}: image {img_id}")
        image_id = f"slake_{img_id}"
        yield manifest_record(
            image_id=image_id,
            source="slake",
            patient_id=image_id,
            site=site,
            site_role=site_role,
            modality=f["modality"],
            body_part=f["body_part"],
            image_path=relative_path(image, data_root),
            width=width,
            height=height,
            vqa=qas[img_id],
        )
