"""Importer for DICOM series: folders of single-frame ``.dcm`` slices, one series per folder.

``root`` itself and every folder below it that holds ``.dcm`` files is one series. Its slices are
ordered by InstanceNumber, windowed at the window stored in their tags and written as PNG with
:func:`model.data.dicom_io.dicom_to_png` under ``<png_dir>/<site>/<PatientID>/<image_id>.png``
(``image_id = <PatientID>_<series folder name>_<InstanceNumber:04d>``), optionally resized to
``dicom_png_size``. Patient id: PatientID (required, identical for every slice of a series);
modality: the Modality tag mapped by :data:`DICOM_MODALITIES` (or the ``modality`` argument);
body part: the ``body_part`` argument, else BodyPartExamined, else ``unknown``; pixel spacing: the
geometric mean of PixelSpacing, divided by the resize factor. All slices are visit 0.

Streaming: one series' headers (not pixels) are in memory at a time; one slice is decoded at a time.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from model.data.dicom_io import dicom_to_png
from model.data.importers._common import ImportFormatError, manifest_record, safe_name

__all__ = ["DICOM_MODALITIES", "iter_dicom_series", "rescaled_spacing"]

#: DICOM Modality tag -> platform modality; unlisted values map to ``other``.
DICOM_MODALITIES: dict[str, str] = {
    "CT": "ct",
    "MR": "mri",
    "CR": "xray",
    "DX": "xray",
    "DR": "xray",
    "RG": "xray",
    "MG": "xray",
    "US": "ultrasound",
    "OP": "fundus",
    "SM": "pathology",
    "ES": "endoscopy",
}


def rescaled_spacing(spacing_mm: float | None, scale_x: float, scale_y: float) -> float | None:
    """Pixel spacing after resizing by ``(scale_x, scale_y)`` (geometric mean when anisotropic)."""
    if spacing_mm is None:
        return None
    return spacing_mm / math.sqrt(scale_x * scale_y)


def _header(path: Path) -> dict[str, Any]:
    """InstanceNumber, PatientID, Modality, BodyPartExamined and PixelSpacing of one slice."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError) as e:
        raise ImportFormatError(f"{path}: not a readable DICOM file: {e}") from e
    for tag in ("InstanceNumber", "PatientID"):
        if ds.get(tag) in (None, ""):
            raise ImportFormatError(f"{path}: tag {tag} is missing")
    spacing = ds.get("PixelSpacing")
    return {
        "path": path,
        "instance": int(ds.InstanceNumber),
        "patient": str(ds.PatientID).strip(),
        "modality": str(ds.get("Modality", "")).strip().upper(),
        "body_part": str(ds.get("BodyPartExamined", "") or "").strip().lower(),
        "spacing": math.sqrt(float(spacing[0]) * float(spacing[1])) if spacing else None,
    }


def _series_headers(folder: Path, files: list[str]) -> list[dict[str, Any]]:
    """Slice headers of one series, ordered by InstanceNumber; one patient, no repeated instance."""
    heads = sorted((_header(folder / f) for f in files), key=lambda h: h["instance"])
    for prev, cur in itertools.pairwise(heads):
        if cur["instance"] == prev["instance"]:
            raise ImportFormatError(f"{cur['path']}: InstanceNumber {cur['instance']} repeats {prev['path']}")
        if cur["patient"] != prev["patient"]:
            raise ImportFormatError(
                f"{cur['path']}: PatientID {cur['patient']!r} differs from {prev['path']}"
            )
    return heads


def iter_dicom_series(
    root: str | os.PathLike,
    *,
    png_dir: str | os.PathLike,
    png_rel: str,
    dicom_png_size: int | None = None,
    default_window: tuple[float, float] | None = None,
    modality: str | None = None,
    body_part: str | None = None,
    source: str = "dicom",
    site: str = "dicom",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream one manifest record per DICOM slice, writing each as a windowed PNG.

    Args:
        root: a series folder, or a folder whose sub-folders are series.
        png_dir: folder the PNGs are written under (filesystem path).
        png_rel: the same folder relative to the data root (prefix of the stored ``image_path``).
        dicom_png_size: PNG size (``n x n``); None keeps each slice's size.
        default_window: ``(center, width)`` for slices without WindowCenter/WindowWidth.
        modality: platform modality for every slice; None maps the Modality tag.
        body_part: body part for every slice; None uses BodyPartExamined.
        source: dataset name stored in the records.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        Manifest records, series by series (sorted folder order), slices by InstanceNumber.

    Raises:
        ImportFormatError: no ``.dcm`` file under ``root``, a file is not DICOM, lacks
            InstanceNumber/PatientID, or a series repeats an instance or mixes patients.
        model.data.dicom_io.DicomFormatError: a slice cannot be decoded or has no window.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImportFormatError(f"{root}: DICOM series folder not found")
    n = 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        dcm = sorted(f for f in files if f.lower().endswith(".dcm"))
        if not dcm:
            continue
        folder = Path(folder)
        series = safe_name(folder.name, "series folder name", str(folder))
        for h in _series_headers(folder, dcm):
            patient = safe_name(h["patient"], "PatientID", str(h["path"]))
            image_id = f"{patient}_{series}_{h['instance']:04d}"
            out = Path(png_dir) / site / patient / f"{image_id}.png"
            width, height, sx, sy = dicom_to_png(
                h["path"], out, size=dicom_png_size, default_window=default_window
            )
            n += 1
            yield manifest_record(
                image_id=image_id,
                source=source,
                patient_id=patient,
                site=site,
                site_role=site_role,
                modality=modality or DICOM_MODALITIES.get(h["modality"], "other"),
                body_part=body_part or h["body_part"] or "unknown",
                image_path=f"{png_rel}/{site}/{patient}/{image_id}.png",
                width=width,
                height=height,
                pixel_spacing_mm=rescaled_spacing(h["spacing"], sx, sy),
            )
    if n == 0:
        raise ImportFormatError(f"{root}: no .dcm files found")
