"""Importer for VQA-RAD (radiology VQA, Lau et al. 2018).

Layout (OSF release): ``VQA_RAD Dataset Public.json``, a JSON list of question entries
``{qid, image_name, image_organ, question, answer, answer_type, question_type, phrase_type, ...}``,
and the images in ``VQA_RAD Image Folder/<image_name>`` (``synpic54610.jpg``).

Questions of one image become one record's ``vqa`` list; ``answer_type`` CLOSED/OPEN (stray spaces
and case tolerated) maps to closed/open; numeric answers become text; ``image_organ``
HEAD/CHEST/ABD maps to ``body_part`` head/chest/abdomen. The public JSON has no modality field
(the images are a mix of CT, MRI and X-ray): records get ``modality_by_image[image_name]`` when
that mapping is given, else ``other``. VQA-RAD has no patient ids: each image is its own synthetic
patient.

Memory: the JSON list is loaded and grouped by image (about 2.2k questions).

Reference: Lau et al., "A dataset of clinically generated visual questions and answers about
radiology images", Scientific Data 5, 180251 (2018); https://osf.io/89kps/
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from model.data.importers._common import ImportFormatError, image_size, manifest_record, relative_path
from model.data.schema import MODALITIES

__all__ = ["VQARAD_IMAGES", "VQARAD_JSON", "iter_vqarad"]

VQARAD_JSON = "VQA_RAD Dataset Public.json"
VQARAD_IMAGES = "VQA_RAD Image Folder"
_ORGANS = {"head": "head", "chest": "chest", "abd": "abdomen", "abdomen": "abdomen"}


def _text(value: Any, field: str, ctx: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ImportFormatError(f"{ctx}: field {field!r} must be non-empty text, got {value!r}")
    return value.strip()


def _parse_entry(e: Any, ctx: str) -> tuple[str, str, dict[str, str]]:
    """(image name, body part, vqa item) of one entry."""
    if not isinstance(e, dict):
        raise ImportFormatError(f"{ctx}: expected an object, got {type(e).__name__}")
    name = _text(e.get("image_name"), "image_name", ctx)
    organ = _ORGANS.get(str(e.get("image_organ", "")).strip().lower())
    if organ is None:
        raise ImportFormatError(
            f"{ctx}: field 'image_organ' is {e.get('image_organ')!r}; expected HEAD, CHEST or ABD"
        )
    answer_type = str(e.get("answer_type", "")).strip().lower()
    if answer_type not in ("closed", "open"):
        raise ImportFormatError(
            f"{ctx}: field 'answer_type' is {e.get('answer_type')!r}; expected CLOSED or OPEN"
        )
    qa = {
        "question": _text(e.get("question"), "question", ctx),
        "answer": _text(e.get("answer"), "answer", ctx),
        "answer_type": answer_type,
    }
    return name, organ, qa


def iter_vqarad(
    root: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    modality_by_image: Mapping[str, str] | None = None,
    site: str = "vqa_rad",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream one manifest record per VQA-RAD image with its questions.

    Args:
        root: the VQA-RAD folder (holding the JSON and the image folder); inside ``data_root``.
        data_root: the profile's data root; stored image paths are relative to it.
        modality_by_image: optional image name -> modality (one of the platform's modalities);
            images not in it get ``other``.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        Manifest records in order of each image's first question.

    Raises:
        ImportFormatError: the JSON is missing or malformed, an entry lacks a field or has an unknown
            organ/answer type, an image has two organs, a mapped modality is unknown, or an image
            file is missing; the message names the file and the entry index.
    """
    root = Path(root)
    path = root / VQARAD_JSON
    if not path.is_file():
        raise ImportFormatError(f"{path}: VQA-RAD question file not found")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(entries, list):
        raise ImportFormatError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    organs: dict[str, str] = {}
    qas: dict[str, list[dict[str, str]]] = {}
    for i, e in enumerate(entries):
        name, organ, qa = _parse_entry(e, f"{path}: entry {i}")
        if organs.setdefault(name, organ) != organ:
            raise ImportFormatError(
                f"{path}: entry {i}: image {name} has organ {organ}, earlier {organs[name]}"
            )
        qas.setdefault(name, []).append(qa)
    for name, organ in organs.items():
        modality = (modality_by_image or {}).get(name, "other")
        if modality not in MODALITIES:
            raise ImportFormatError(f"modality_by_image[{name!r}] is {modality!r}; allowed: {MODALITIES}")
        image = root / VQARAD_IMAGES / name
        width, height = image_size(image, f"{path}: image {name}")
        image_id = f"vqarad_{Path(name).stem}"
        yield manifest_record(
            image_id=image_id,
            source="vqa_rad",
            patient_id=image_id,
            site=site,
            site_role=site_role,
            modality=modality,
            body_part=organ,
            image_path=relative_path(image, data_root),
            width=width,
            height=height,
            vqa=qas[name],
        )
