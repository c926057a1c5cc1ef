"""Importer for VinDr-style lesion box CSVs (VinDr-CXR, and datasets sharing its format).

Layout: an annotation CSV with columns ``image_id, rad_id, class_name, x_min, y_min, x_max, y_max``
(``rad_id`` may be absent, as in the consensus test annotations; extra columns such as
``class_id`` are ignored) and the images converted to PNG at their original resolution in one
folder, ``<images_dir>/<image_id>.png`` (the boxes are in original DICOM pixel coordinates).
``No finding`` rows (empty coordinates) mark an image without lesions.

Every image becomes one record. Each box row becomes a lesion: ``lesion_type`` = class name,
``region`` = ``region_by_class[class_name]`` or ``default_region``, severity ``default_severity``
(VinDr grades none; documented default ``moderate``), ``size_mm`` = longest box side x
``pixel_spacing_mm`` (when unknown, the side in pixels, i.e. spacing 1.0). Boxes of every
radiologist are kept (VinDr-CXR has three readers per training image, so lesions may overlap).
``findings`` lists the distinct lesion classes. VinDr publishes no patient ids: each image is its
own synthetic patient.

Memory: the CSV is grouped by image (rows are small); records are then yielded in order of first
appearance.

Reference: Nguyen et al., "VinDr-CXR: An open dataset of chest X-rays with radiologist's
annotations", Scientific Data 9, 429 (2022); https://vindr.ai/datasets/cxr
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from model.data.importers._common import (
    ImportFormatError,
    image_size,
    manifest_record,
    relative_path,
    safe_name,
)
from model.data.schema import SEVERITIES

__all__ = ["NO_FINDING", "iter_vindr"]

NO_FINDING = "No finding"
_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
_COORDS = ("x_min", "y_min", "x_max", "y_max")


def _box(row: dict[str, str], ctx: str) -> tuple[float, float, float, float]:
    """The four finite coordinates of a lesion row, x_min < x_max and y_min < y_max."""
    try:
        box = tuple(float(row[c]) for c in _COORDS)
    except (TypeError, ValueError):
        raise ImportFormatError(
            f"{ctx}: coordinates {[row.get(c) for c in _COORDS]} are not numbers"
        ) from None
    if not all(math.isfinite(v) for v in box):
        raise ImportFormatError(f"{ctx}: coordinates {list(box)} are not finite")
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        raise ImportFormatError(f"{ctx}: impossible box {list(box)}: need x_min < x_max and y_min < y_max")
    return box


def _read_boxes(csv_path: Path) -> dict[str, list[tuple[int, str, tuple[float, float, float, float]]]]:
    """image_id -> [(CSV line, class name, box)] (``No finding`` images map to an empty list)."""
    boxes: dict[str, list[tuple[int, str, tuple[float, float, float, float]]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ImportFormatError(f"{csv_path}: missing column(s) {missing} (found {reader.fieldnames})")
        for row in reader:
            ctx = f"{csv_path}:{reader.line_num}"
            image_id, cls = (row["image_id"] or "").strip(), (row["class_name"] or "").strip()
            if not image_id or not cls:
                raise ImportFormatError(f"{ctx}: empty image_id or class_name")
            entries = boxes.setdefault(image_id, [])
            if cls != NO_FINDING:
                entries.append((reader.line_num, cls, _box(row, ctx)))
    return boxes


def iter_vindr(
    csv_path: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    images_dir: str | os.PathLike,
    default_region: str = "chest",
    region_by_class: Mapping[str, str] | None = None,
    default_severity: str = "moderate",
    pixel_spacing_mm: float | None = None,
    modality: str = "xray",
    body_part: str = "chest",
    source: str = "vindr_cxr",
    site: str = "vindr",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream one manifest record per image of a VinDr-style box CSV.

    Args:
        csv_path: the annotation CSV.
        data_root: the profile's data root; stored image paths are relative to it.
        images_dir: folder of ``<image_id>.png`` at original resolution, inside ``data_root``
            (a relative path is taken from ``data_root``).
        default_region: region of a lesion whose class is not in ``region_by_class``.
        region_by_class: optional class name -> anatomical region.
        default_severity: severity given to every lesion (VinDr has no grading).
        pixel_spacing_mm: spacing of the PNGs if known (sets ``size_mm`` and the record's spacing).
        modality: modality of the images.
        body_part: body part of the images.
        source: dataset name stored in the records.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        Manifest records in order of each image's first CSV row.

    Raises:
        ImportFormatError: a column is missing, a box is not numeric, not finite, empty or outside
            its image (message: ``<csv>:<line>``), or an image file is missing.
    """
    csv_path = Path(csv_path)
    if default_severity not in SEVERITIES:
        raise ImportFormatError(f"default_severity {default_severity!r} must be one of {SEVERITIES}")
    if pixel_spacing_mm is not None and not pixel_spacing_mm > 0:
        raise ImportFormatError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
    spacing = pixel_spacing_mm or 1.0
    regions = region_by_class or {}
    folder = Path(images_dir) if Path(images_dir).is_absolute() else Path(data_root) / images_dir
    for image_id, entries in _read_boxes(csv_path).items():
        image = folder / f"{safe_name(image_id, 'image_id', str(csv_path))}.png"
        width, height = image_size(image, f"{csv_path}: image {image_id}")
        lesions = []
        for line, cls, (x1, y1, x2, y2) in entries:
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise ImportFormatError(
                    f"{csv_path}:{line}: box {[x1, y1, x2, y2]} lies outside the {width}x{height} image {image}"
                )
            lesions.append(
                {
                    "lesion_type": cls,
                    "region": regions.get(cls, default_region),
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "size_mm": max(x2 - x1, y2 - y1) * spacing,
                    "severity": default_severity,
                    "mask_path": None,
                }
            )
        yield manifest_record(
            image_id=image_id,
            source=source,
            patient_id=image_id,
            site=site,
            site_role=site_role,
            modality=modality,
            body_part=body_part,
            image_path=relative_path(image, data_root),
            width=width,
            height=height,
            pixel_spacing_mm=pixel_spacing_mm,
            lesions=lesions,
            findings=sorted({cls for _, cls, _ in entries}),
        )
