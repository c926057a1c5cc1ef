"""Shared pieces of the importers: the error type, manifest-record construction and path helpers.

Every importer yields *manifest records*: plain dicts with every :class:`~model.data.schema.ImageRecord`
field except ``split`` and ``image_sha256`` (both are assigned at ingest). Paths inside a record are
relative to the profile's data root; :func:`relative_path` enforces that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from PIL import Image

from model.data.schema import MODALITIES, SITE_ROLES

__all__ = ["ImportFormatError", "image_size", "manifest_record", "relative_path", "safe_name"]


class ImportFormatError(ValueError):
    """A source file does not have the layout or content its importer expects.

    The message names the file and the record (line, key or index) and the field at fault.
    """


def manifest_record(
    *,
    image_id: str,
    source: str,
    patient_id: str,
    site: str,
    site_role: str,
    modality: str,
    body_part: str,
    image_path: str,
    width: int,
    height: int,
    **optional: Any,
) -> dict[str, Any]:
    """A manifest record with the required fields set and every optional field at its empty value.

    Args:
        image_id: unique id of the image across all sources of one ingest.
        source: dataset name (e.g. ``slake``).
        patient_id: patient id; datasets without one use a synthetic one-patient-per-image id.
        site: acquisition site (for public datasets, the dataset name unless told otherwise).
        site_role: ``internal`` or ``external``.
        modality: one of :data:`~model.data.schema.MODALITIES`.
        body_part: body part, lower case.
        image_path: image path relative to the data root.
        width: image width in pixels.
        height: image height in pixels.
        **optional: any other ImageRecord field except ``split`` and ``image_sha256``.

    Returns:
        The record dict.

    Raises:
        ValueError: ``modality``/``site_role`` is not allowed or an unknown field is passed
            (a programming error in the importer, not a data error).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    if site_role not in SITE_ROLES:
        raise ValueError(f"site_role {site_role!r} is not one of {SITE_ROLES}")
    rec: dict[str, Any] = {
        "image_id": image_id,
        "source": source,
        "patient_id": patient_id,
        "visit_index": 0,
        "visit_month": 0.0,
        "site": site,
        "site_role": site_role,
        "modality": modality,
        "body_part": body_part,
        "image_path": image_path,
        "width": int(width),
        "height": int(height),
        "pixel_spacing_mm": None,
        "diagnosis": None,
        "findings": [],
        "regions": [],
        "lesions": [],
        "report_findings": None,
        "report_impression": None,
        "vqa": [],
        "mcq": [],
        "spoken_queries": [],
        "prior_image_id": None,
    }
    unknown = set(optional) - set(rec)
    if unknown:
        raise ValueError(f"unknown manifest field(s) {sorted(unknown)}")
    rec.update(optional)
    return rec


def relative_path(path: str | os.PathLike, data_root: str | os.PathLike) -> str:
    """``path`` relative to ``data_root`` as a POSIX string (symlinks are not resolved).

    Raises:
        ImportFormatError: ``path`` is not inside ``data_root``; place or symlink the dataset
            under the data root so that manifest paths stay relative.
    """
    p, root = Path(os.path.abspath(path)), Path(os.path.abspath(data_root))
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        raise ImportFormatError(
            f"{p} is not inside the data root {root}: manifest paths must be relative to the data "
            "root; place or symlink the dataset under it"
        ) from None


def image_size(path: str | os.PathLike, ctx: str) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header.

    Raises:
        ImportFormatError: the file is missing or is not a readable image; ``ctx`` says which record.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise ImportFormatError(f"{ctx}: image file {path} does not exist") from None
    except OSError as e:
        raise ImportFormatError(f"{ctx}: cannot read image {path}: {e}") from e


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str, what: str, ctx: str) -> str:
    """Return ``value`` if it is usable as one path component (no separators, no ``..``).

    Raises:
        ImportFormatError: ``value`` could escape the output folder or is empty.
    """
    if not isinstance(value, str) or not _SAFE.match(value) or ".." in value:
        raise ImportFormatError(f"{ctx}: {what} {value!r} is not a safe file name component")
    return value
