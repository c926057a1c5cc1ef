"""Importer for MedMNIST ``.npz`` files (2D flavours).

Layout (MedMNIST v2/v3, e.g. ``pathmnist.npz`` or ``pathmnist_224.npz``): arrays
``train_images``/``train_labels``, ``val_images``/``val_labels``, ``test_images``/``test_labels``;
images are uint8 ``(N, H, W)`` (grayscale) or ``(N, H, W, 3)`` (RGB); labels are ``(N, 1)`` class
indices or ``(N, C)`` binary indicators for multi-label flavours (ChestMNIST, C = 14).

Each image is written as a PNG under ``<png_dir>/<site>/<flavour>/<split>/<image_id>.png``.
Label names come from a mapping in the style of MedMNIST's ``INFO[flavour]["label"]``
(``{"0": "adipose", ...}``). Multi-label flavours fill ``findings`` (names of the positive labels;
an image with none has no findings), single-label ones fill ``diagnosis``.

Patients: MedMNIST publishes no patient ids, so every image is its own synthetic patient
(``patient_id == image_id``). MedMNIST's own train/val/test split is not kept: the manifest has no
field for it and ingest re-splits by patient (here: by image) with ``assign_split``.

Memory: one split's arrays are in memory at a time (``np.load`` of a compressed ``.npz`` cannot be
memory-mapped); records are yielded one by one.

Reference: Yang et al., "MedMNIST v2", Scientific Data 10, 41 (2023); https://medmnist.com
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.data.importers._common import ImportFormatError, manifest_record, safe_name
from model.data.io import atomic_file

__all__ = ["MEDMNIST_FLAVOURS", "iter_medmnist"]

#: flavour -> (modality, body part, multi-label). OCT has no modality of its own in the schema: "other".
MEDMNIST_FLAVOURS: dict[str, tuple[str, str, bool]] = {
    "pathmnist": ("pathology", "colon", False),
    "chestmnist": ("xray", "chest", True),
    "dermamnist": ("dermoscopy", "skin", False),
    "octmnist": ("other", "retina", False),
    "pneumoniamnist": ("xray", "chest", False),
    "retinamnist": ("fundus", "retina", False),
    "breastmnist": ("ultrasound", "breast", False),
    "bloodmnist": ("pathology", "blood", False),
    "tissuemnist": ("pathology", "kidney", False),
    "organamnist": ("ct", "abdomen", False),
    "organcmnist": ("ct", "abdomen", False),
    "organsmnist": ("ct", "abdomen", False),
}
_SPLITS = ("train", "val", "test")


def _names(label_names: Mapping[Any, str], npz: Path) -> dict[int, str]:
    try:
        names = {int(k): str(v) for k, v in label_names.items()}
    except (TypeError, ValueError):
        raise ImportFormatError(
            f"{npz}: label_names keys must be label indices, got {list(label_names)}"
        ) from None
    if not names or sorted(names) != list(range(len(names))) or not all(names.values()):
        raise ImportFormatError(
            f"{npz}: label_names must name labels 0..n-1 with non-empty names, got {names}"
        )
    return names


def _split_arrays(data: Any, split: str, npz: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images, labels)`` of one split, None if the file has neither array."""
    ik, lk = f"{split}_images", f"{split}_labels"
    if ik not in data.files and lk not in data.files:
        return None
    for k in (ik, lk):
        if k not in data.files:
            raise ImportFormatError(f"{npz}: array {k!r} is missing (found {sorted(data.files)})")
    images, labels = data[ik], data[lk]
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] == 3)):
        raise ImportFormatError(
            f"{npz}: {ik} must be uint8 (N, H, W) or (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != len(images):
        raise ImportFormatError(f"{npz}: {lk} has shape {labels.shape}; expected ({len(images)}, C)")
    return images, labels


def _targets(row: np.ndarray, names: dict[int, str], multi: bool, ctx: str) -> dict[str, Any]:
    """``findings`` (multi-label) or ``diagnosis`` (single-label) of one label row."""
    if multi:
        if len(row) != len(names) or not np.isin(row, (0, 1)).all():
            raise ImportFormatError(f"{ctx}: expected {len(names)} binary labels, got {row.tolist()}")
        return {"findings": [names[i] for i in np.flatnonzero(row)]}
    if len(row) != 1 or int(row[0]) not in names:
        raise ImportFormatError(f"{ctx}: label {row.tolist()} is not one of {sorted(names)}")
    return {"diagnosis": names[int(row[0])]}


def iter_medmnist(
    npz_path: str | os.PathLike,
    *,
    png_dir: str | os.PathLike,
    png_rel: str,
    flavour: str,
    label_names: Mapping[Any, str],
    site: str = "medmnist",
    site_role: str = "internal",
) -> Iterator[dict[str, Any]]:
    """Stream manifest records of a MedMNIST ``.npz``, writing each image as a PNG.

    Args:
        npz_path: the ``.npz`` file.
        png_dir: folder the PNGs are written under (filesystem path).
        png_rel: the same folder relative to the data root (prefix of the stored ``image_path``).
        flavour: MedMNIST dataset name, a key of :data:`MEDMNIST_FLAVOURS` (sets modality, body
            part and whether labels are multi-label); also the record's ``source``.
        label_names: label index -> name, MedMNIST ``INFO[flavour]["label"]`` style.
        site: site name stored in the records.
        site_role: ``internal`` or ``external``.

    Yields:
        One manifest record per image, train then val then test, in array order.

    Raises:
        ImportFormatError: unknown flavour, missing or malformed arrays, or a label outside
            ``label_names``; the message names the file, array and index.
    """
    npz = Path(npz_path)
    if flavour not in MEDMNIST_FLAVOURS:
        raise ImportFormatError(
            f"{npz}: unknown MedMNIST flavour {flavour!r}; known: {sorted(MEDMNIST_FLAVOURS)}"
        )
    modality, body_part, multi = MEDMNIST_FLAVOURS[flavour]
    names = _names(label_names, npz)
    safe_name(site, "site", str(npz))
    try:
        data = np.load(npz, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImportFormatError(f"{npz}: not a readable .npz file: {e}") from e
    with data:
        n_splits = 0
        for split in _SPLITS:
            arrays = _split_arrays(data, split, npz)
            if arrays is None:
                continue
            n_splits += 1
            images, labels = arrays
            for i in range(len(images)):
                image_id = f"{flavour}_{split}_{i:06d}"
                ctx = f"{npz}: {split}_labels[{i}]"
                targets = _targets(labels[i], names, multi, ctx)
                rel = f"{png_rel}/{site}/{flavour}/{split}/{image_id}.png"
                with atomic_file(Path(png_dir) / site / flavour / split / f"{image_id}.png", "wb") as fh:
                    Image.fromarray(images[i]).save(fh, format="PNG")
                yield manifest_record(
                    image_id=image_id,
                    source=flavour,
                    patient_id=image_id,
                    site=site,
                    site_role=site_role,
                    modality=modality,
                    body_part=body_part,
                    image_path=rel,
                    width=images.shape[2],
                    height=images.shape[1],
                    **targets,
                )
        if n_splits == 0:
            raise ImportFormatError(f"{npz}: no train/val/test image arrays (found {sorted(data.files)})")
