"""DICOM reading and display windowing.

* :func:`read_dicom` reads one single-frame DICOM file into a :class:`DicomImage`: pixel values in
  modality units (``stored * RescaleSlope + RescaleIntercept``, e.g. Hounsfield units for CT), the
  radiologists' window from WindowCenter/WindowWidth (first value when multi-valued), modality,
  pixel spacing, patient id and instance number.
* :func:`apply_window` is the DICOM linear VOI LUT (PS3.3 C.11.2.1.2.1, "LINEAR"; "LINEAR_EXACT"
  of C.11.2.1.3.2 on request) onto ``0..255``.
* :func:`write_dicom` writes a single-frame grayscale slice (16-bit unsigned stored values with a
  rescale to modality units and a window), e.g. for generated external-site data and tests.
* :func:`dicom_to_png` windows a slice at the window stored in its tags (as XMedGPT converted DICOM
  studies to PNG slices at the window), optionally resizes it (PIL bilinear) and writes the PNG
  atomically. It returns the output size and the resize factors so callers can rescale boxes.

Reference: DICOM PS3.3 section C.11.2.1.2 "Window Center and Window Width",
https://dicom.nema.org/medical/dicom/current/output/chtml/part03/sect_C.11.2.html
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from model.data.io import atomic_file

__all__ = ["DicomFormatError", "DicomImage", "apply_window", "dicom_to_png", "read_dicom", "write_dicom"]


class DicomFormatError(ValueError):
    """A DICOM file is unreadable or lacks a tag needed to display it; the message names both."""


@dataclass(frozen=True)
class DicomImage:
    """One DICOM slice in modality units.

    Attributes:
        path: the file it was read from.
        pixels: ``(rows, columns)`` float64 array after RescaleSlope/RescaleIntercept, or
            ``(rows, columns, 3)`` uint8 for colour (RGB) images.
        window_center: WindowCenter (first value), None if the tag is absent.
        window_width: WindowWidth (first value), None if the tag is absent.
        voi_lut_function: VOILUTFunction (``LINEAR`` when absent).
        photometric: PhotometricInterpretation (``MONOCHROME1`` is displayed inverted).
        modality: the DICOM Modality tag (``CT``, ``MR``, ``CR``, ...), None if absent.
        pixel_spacing_mm: PixelSpacing as ``(row spacing, column spacing)`` in mm, None if absent.
        patient_id: PatientID, None if absent or empty.
        instance_number: InstanceNumber, None if absent.
        body_part: BodyPartExamined, None if absent or empty.
    """

    path: Path
    pixels: np.ndarray
    window_center: float | None
    window_width: float | None
    voi_lut_function: str
    photometric: str
    modality: str | None
    pixel_spacing_mm: tuple[float, float] | None
    patient_id: str | None
    instance_number: int | None
    body_part: str | None

    @property
    def width(self) -> int:
        """Columns."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Rows."""
        return int(self.pixels.shape[0])


def _first(value: object) -> object:
    """First item of a multi-valued element, the value itself otherwise."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0] if len(value) else None
    return value


def _opt_float(ds: pydicom.Dataset, keyword: str, path: Path) -> float | None:
    value = _first(ds.get(keyword))
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DicomFormatError(f"{path}: tag {keyword} has a non-numeric value {value!r}") from None


def _opt_str(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """Pixel data in modality units (grayscale) or uint8 RGB."""
    if "PixelData" not in ds:
        raise DicomFormatError(f"{path}: no PixelData element")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomFormatError(f"{path}: multi-frame images are not supported; store one slice per file")
    try:
        arr = ds.pixel_array
    except (ValueError, NotImplementedError, RuntimeError, AttributeError, TypeError) as e:
        raise DicomFormatError(f"{path}: cannot decode PixelData: {e}") from e
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        if arr.dtype != np.uint8:
            raise DicomFormatError(f"{path}: colour images must be 8-bit, got {arr.dtype}")
        return arr
    slope = _opt_float(ds, "RescaleSlope", path)
    intercept = _opt_float(ds, "RescaleIntercept", path)
    return arr.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)


def read_dicom(path: str | os.PathLike) -> DicomImage:
    """Read one single-frame DICOM file.

    Args:
        path: the ``.dcm`` file.

    Returns:
        The slice with its pixel values in modality units and its display/geometry tags.

    Raises:
        DicomFormatError: the file is not DICOM, has no decodable single-frame pixel data, or a
            numeric tag is malformed.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError) as e:
        raise DicomFormatError(f"{path}: not a readable DICOM file: {e}") from e
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) != 2:
        raise DicomFormatError(f"{path}: tag PixelSpacing must have 2 values, got {list(spacing)}")
    number = ds.get("InstanceNumber")
    return DicomImage(
        path=path,
        pixels=_pixels(ds, path),
        window_center=_opt_float(ds, "WindowCenter", path),
        window_width=_opt_float(ds, "WindowWidth", path),
        voi_lut_function=(_opt_str(ds, "VOILUTFunction") or "LINEAR").upper(),
        photometric=_opt_str(ds, "PhotometricInterpretation") or "MONOCHROME2",
        modality=_opt_str(ds, "Modality"),
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
        patient_id=_opt_str(ds, "PatientID"),
        instance_number=int(number) if number not in (None, "") else None,
        body_part=_opt_str(ds, "BodyPartExamined"),
    )


def apply_window(values: np.ndarray, center: float, width: float, *, function: str = "LINEAR") -> np.ndarray:
    """Map modality values to display grey levels ``0..255`` with the DICOM VOI window.

    ``LINEAR`` (PS3.3 C.11.2.1.2.1), with ``c`` = center, ``w`` = width (>= 1)::

        x <= c - 0.5 - (w - 1) / 2      -> 0
        x >  c - 0.5 + (w - 1) / 2      -> 255
        else  ((x - (c - 0.5)) / (w - 1) + 0.5) * 255

    ``LINEAR_EXACT`` (C.11.2.1.3.2, w > 0): ``x <= c - w/2 -> 0``, ``x > c + w/2 -> 255``, else
    ``((x - c) / w + 0.5) * 255``. Results are rounded to the nearest integer.

    Example (c=40, w=400, soft-tissue CT window): -200 HU -> 0, 40 HU -> 128, 240 HU -> 255.

    Args:
        values: pixel values in modality units.
        center: window center.
        width: window width.
        function: ``LINEAR`` or ``LINEAR_EXACT``.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: the width is below the standard's minimum or the function is unknown.
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"LINEAR window width must be >= 1, got {width}")
        lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        mid = ((x - (center - 0.5)) / max(width - 1, 1e-12) + 0.5) * 255.0
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        lo, hi = center - width / 2, center + width / 2
        mid = ((x - center) / width + 0.5) * 255.0
    else:
        raise ValueError(f"unsupported VOI LUT function {function!r}; use LINEAR or LINEAR_EXACT")
    y = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, mid))
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _display(img: DicomImage, default_window: tuple[float, float] | None) -> np.ndarray:
    """uint8 display image: windowed grayscale (MONOCHROME1 inverted) or the RGB pixels."""
    if img.pixels.ndim == 3:
        return img.pixels
    if img.window_center is not None and img.window_width is not None:
        center, width = img.window_center, img.window_width
    elif default_window is not None:
        center, width = default_window
    else:
        missing = "WindowCenter" if img.window_center is None else "WindowWidth"
        raise DicomFormatError(
            f"{img.path}: no {missing} tag; pass default_window=(center, width) to window it anyway"
        )
    try:
        out = apply_window(img.pixels, center, width, function=img.voi_lut_function)
    except ValueError as e:
        raise DicomFormatError(f"{img.path}: {e}") from e
    return 255 - out if img.photometric == "MONOCHROME1" else out


def dicom_to_png(
    path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    size: int | tuple[int, int] | None = None,
    default_window: tuple[float, float] | None = None,
) -> tuple[int, int, float, float]:
    """Window a DICOM slice at its stored window and write it as an 8-bit PNG (atomically).

    Args:
        path: the ``.dcm`` file.
        out_png: where to write the PNG; parent folders are created.
        size: output size, ``n`` for ``n x n`` or ``(width, height)``; None keeps the DICOM size.
            Resizing is PIL bilinear on the windowed image.
        default_window: ``(center, width)`` used only when the file has no WindowCenter/WindowWidth;
            without it such a file raises.

    Returns:
        ``(width, height, scale_x, scale_y)``: the PNG size and the factors that map DICOM pixel
        coordinates to PNG coordinates (``x_png = x_dicom * scale_x``).

    Raises:
        DicomFormatError: the file cannot be read or has no window and no default was given.
        ValueError: ``size`` is not positive.
    """
    img = read_dicom(path)
    pil = Image.fromarray(_display(img, default_window))
    if size is not None:
        w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if w <= 0 or h <= 0:
            raise ValueError(f"PNG size must be positive, got {size!r}")
        if (w, h) != pil.size:
            pil = pil.resize((w, h), Image.Resampling.BILINEAR)
    with atomic_file(out_png, "wb") as fh:
        pil.save(fh, format="PNG")
    return pil.width, pil.height, pil.width / img.width, pil.height / img.height


_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def write_dicom(
    path: str | os.PathLike,
    values: np.ndarray,
    *,
    patient_id: str,
    modality: str = "CT",
    window: tuple[float, float] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
    instance_number: int = 1,
    series_uid: str | None = None,
    body_part: str | None = None,
) -> None:
    """Write a single-frame grayscale DICOM file (Explicit VR Little Endian), atomically.

    Values in modality units are stored as ``round((values - intercept) / slope)`` in 16 bits.

    Args:
        path: the ``.dcm`` file to write.
        values: ``(rows, columns)`` pixel values in modality units (e.g. HU).
        patient_id: PatientID.
        modality: Modality tag (``CT``, ``MR``, ``CR``, ...).
        window: ``(center, width)`` stored as WindowCenter/WindowWidth; None omits them.
        rescale_slope: RescaleSlope.
        rescale_intercept: RescaleIntercept.
        pixel_spacing_mm: PixelSpacing ``(row, column)``; None omits it.
        instance_number: InstanceNumber.
        series_uid: SeriesInstanceUID (a new one when None).
        body_part: BodyPartExamined; None omits it.

    Raises:
        ValueError: ``values`` is not 2-D or does not fit 16-bit unsigned storage with this rescale.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or rescale_slope == 0:
        raise ValueError(
            f"values must be 2-D and the slope non-zero, got shape {arr.shape}, slope {rescale_slope}"
        )
    stored = np.rint((arr - rescale_intercept) / rescale_slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"values {arr.min()}..{arr.max()} do not fit uint16 with slope/intercept given")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS.get(modality, SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid or generate_uid()
    ds.PatientID, ds.Modality, ds.InstanceNumber = patient_id, modality, instance_number
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = rescale_slope, rescale_intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = list(pixel_spacing_mm)
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.PixelData = stored.astype(np.uint16).tobytes()
    with atomic_file(path, "wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
