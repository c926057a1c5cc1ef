"""Importer for the platform generator's ``raw/`` layout (``model.data.synth``).

Layout::

    raw/records.jsonl    one JSON object per image: every ImageRecord field except split/image_sha256
    raw/patients.jsonl   one JSON object per patient: every PatientRecord field except split
    raw/images/..., raw/dicom/<site>/<patient>/<image_id>.dcm, raw/masks/..., raw/audio/...

Records pass through unchanged (paths are already relative to the data root), except those whose
``image_path`` ends in ``.dcm`` (external sites): the slice is windowed at its stored window and
written with :func:`model.data.dicom_io.dicom_to_png` (resized to ``dicom_png_size``) to
``<png_dir>/<site>/<patient_id>/<image_id>.png``; ``image_path``, ``width`` and ``height`` are
rewritten, every region and lesion box is multiplied by the resize factors (and clipped to the new
size against rounding), and ``pixel_spacing_mm`` is divided by the (geometric mean) factor. Lesion
masks are resized (nearest neighbour) next to the PNG (``<png_dir>/<site>/<patient_id>/<mask name>``)
and ``mask_path`` rewritten; lesion ``size_mm`` is physical and unchanged.
The record's ``width``/``height`` must equal the DICOM's Columns/Rows, so boxes are known to be in
the DICOM's pixel frame.

Streaming: one line at a time; malformed lines raise with ``file:line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from model.data.dicom_io import dicom_to_png
from model.data.importers._common import ImportFormatError, safe_name
from model.data.importers.dicom_series import rescaled_spacing
from model.data.io import atomic_file

__all__ = ["iter_jsonl", "iter_xmed_patients", "iter_xmed_raw"]

_BOX = ("x1", "y1", "x2", "y2")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line number, object)`` from a JSON-lines file, skipping blank lines.

    Raises:
        ImportFormatError: the file is missing, or a line is not JSON or not an object (``file:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImportFormatError(f"{path}:{n}: invalid JSON: {e.msg} (column {e.colno})") from e
            if not isinstance(obj, dict):
                raise ImportFormatError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def _scale_boxes(boxes: Any, sx: float, sy: float, width: int, height: int, ctx: str) -> list[dict[str, Any]]:
    """Copies of the box dicts with coordinates scaled and clipped to the new image size."""
    if not isinstance(boxes, list):
        raise ImportFormatError(f"{ctx} must be a list, got {type(boxes).__name__}")
    out = []
    for i, b in enumerate(boxes):
        if not isinstance(b, dict) or not all(
            isinstance(b.get(k), (int, float)) and not isinstance(b.get(k), bool) for k in _BOX
        ):
            raise ImportFormatError(f"{ctx}[{i}] needs numeric x1, y1, x2, y2, got {b!r}")
        limits = {"x1": width, "x2": width, "y1": height, "y2": height}
        scale = {"x1": sx, "x2": sx, "y1": sy, "y2": sy}
        out.append({**b, **{k: min(max(b[k] * scale[k], 0.0), limits[k]) for k in _BOX}})
    return out


def _resize_mask(src: Path, dst: Path, size: tuple[int, int], ctx: str) -> None:
    """Write the lesion mask ``src`` resized (nearest neighbour) to the PNG's ``size``."""
    try:
        with Image.open(src) as im:
            mask = im.resize(size, Image.Resampling.NEAREST) if im.size != size else im.copy()
    except FileNotFoundError:
        raise ImportFormatError(f"{ctx}: mask file {src} does not exist") from None
    except OSError as e:
        raise ImportFormatError(f"{ctx}: cannot read mask {src}: {e}") from e
    with atomic_file(dst, "wb") as fh:
        mask.save(fh, format="PNG")


def _window_dicom(
    rec: dict[str, Any],
    ctx: str,
    *,
    data_root: Path,
    png_dir: Path,
    png_rel: str,
    dicom_png_size: int | None,
    default_window: tuple[float, float] | None,
) -> dict[str, Any]:
    """The record with its DICOM windowed to PNG and every geometric field rescaled."""
    for f in ("image_id", "site", "patient_id", "width", "height"):
        if rec.get(f) in (None, ""):
            raise ImportFormatError(f"{ctx}: field {f!r} is missing")
    image_id = safe_name(rec["image_id"], "image_id", ctx)
    site, patient = safe_name(rec["site"], "site", ctx), safe_name(rec["patient_id"], "patient_id", ctx)
    out = png_dir / site / patient / f"{image_id}.png"
    width, height, sx, sy = dicom_to_png(
        data_root / rec["image_path"], out, size=dicom_png_size, default_window=default_window
    )
    src_w, src_h = round(width / sx), round(height / sy)
    if (rec["width"], rec["height"]) != (src_w, src_h):
        raise ImportFormatError(
            f"{ctx}: record size {rec['width']}x{rec['height']} differs from the DICOM's {src_w}x{src_h}"
        )
    spacing = rec.get("pixel_spacing_mm")
    lesions = _scale_boxes(rec.get("lesions") or [], sx, sy, width, height, f"{ctx}: lesions")
    for i, lesion in enumerate(lesions):
        if isinstance(lesion.get("mask_path"), str):
            name = safe_name(
                PurePosixPath(lesion["mask_path"]).name, "mask file name", f"{ctx}: lesions[{i}]"
            )
            _resize_mask(
                data_root / lesion["mask_path"], png_dir / site / patient / name, (width, height), ctx
            )
            lesion["mask_path"] = f"{png_rel}/{site}/{patient}/{name}"
    return {
        **rec,
        "image_path": f"{png_rel}/{site}/{patient}/{image_id}.png",
        "width": width,
        "height": height,
        "regions": _scale_boxes(rec.get("regions") or [], sx, sy, width, height, f"{ctx}: regions"),
        "lesions": lesions,
        "pixel_spacing_mm": rescaled_spacing(spacing, sx, sy)
        if isinstance(spacing, (int, float))
        else spacing,
    }


def iter_xmed_raw(
    raw_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    png_dir: str | os.PathLike,
    png_rel: str,
    dicom_png_size: int | None = None,
    default_window: tuple[float, float] | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream the manifest records of ``raw/records.jsonl``, windowing DICOM images to PNG.

    Args:
        raw_dir: the generator's output folder (holding ``records.jsonl``).
        data_root: the profile's data root (record paths are relative to it).
        png_dir: folder the PNGs of DICOM records are written under (filesystem path).
        png_rel: the same folder relative to the data root (prefix of the rewritten ``image_path``).
        dicom_png_size: PNG size (``n x n``) of windowed DICOM slices; None keeps their size.
        default_window: ``(center, width)`` for DICOM files without WindowCenter/WindowWidth.

    Yields:
        One manifest record per line, in file order.

    Raises:
        ImportFormatError: a line is malformed (``records.jsonl:<line>``), a DICOM record lacks a
            field, has unsafe names or a size that differs from its DICOM.
        model.data.dicom_io.DicomFormatError: a DICOM file is unreadable or has no window.
    """
    path = Path(raw_dir) / "records.jsonl"
    for n, rec in iter_jsonl(path):
        image_path = rec.get("image_path")
        if isinstance(image_path, str) and image_path.lower().endswith(".dcm"):
            rec = _window_dicom(
                rec,
                f"{path}:{n}",
                data_root=Path(data_root),
                png_dir=Path(png_dir),
                png_rel=png_rel,
                dicom_png_size=dicom_png_size,
                default_window=default_window,
            )
        yield rec


def iter_xmed_patients(raw_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Stream the patient dicts of ``raw/patients.jsonl`` (every PatientRecord field except split).

    Raises:
        ImportFormatError: the file is missing or a line is malformed (``patients.jsonl:<line>``).
    """
    for _, rec in iter_jsonl(Path(raw_dir) / "patients.jsonl"):
        yield rec
