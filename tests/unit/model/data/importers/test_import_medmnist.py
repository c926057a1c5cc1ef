"""MedMNIST importer on tiny .npz files in MedMNIST's real key layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model.data.importers import ImportFormatError, iter_medmnist
from model.data.schema import ImageRecord

PATH_LABELS = {"0": "adipose", "1": "background", "2": "debris"}
CHEST_LABELS = {str(i): n for i, n in enumerate(["atelectasis", "cardiomegaly", "effusion", "infiltration"])}


def _ingestable(rec):
    return ImageRecord.from_dict({**rec, "split": "train", "image_sha256": "0" * 64})


def test_single_label_rgb_flavour(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {
        s: rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        for s, n in (("train", 3), ("val", 1), ("test", 2))
    }
    labels = {"train": [[0], [2], [1]], "val": [[2]], "test": [[1], [0]]}
    npz = tmp_path / "pathmnist.npz"
    np.savez_compressed(
        npz,
        **{f"{s}_images": a for s, a in imgs.items()},
        **{f"{s}_labels": np.array(v, dtype=np.uint8) for s, v in labels.items()},
    )
    recs = list(
        iter_medmnist(
            npz,
            png_dir=tmp_path / "manifest/png",
            png_rel="manifest/png",
            flavour="pathmnist",
            label_names=PATH_LABELS,
        )
    )
    assert [r["image_id"] for r in recs] == [
        "pathmnist_train_000000",
        "pathmnist_train_000001",
        "pathmnist_train_000002",
        "pathmnist_val_000000",
        "pathmnist_test_000000",
        "pathmnist_test_000001",
    ]
    assert [r["diagnosis"] for r in recs] == [
        "adipose",
        "debris",
        "background",
        "debris",
        "background",
        "adipose",
    ]
    r = recs[1]
    assert (r["modality"], r["body_part"], r["source"], r["findings"]) == (
        "pathology",
        "colon",
        "pathmnist",
        [],
    )
    assert r["patient_id"] == r["image_id"]  # one synthetic patient per image
    assert r["image_path"] == "manifest/png/medmnist/pathmnist/train/pathmnist_train_000001.png"
    with Image.open(tmp_path / r["image_path"]) as im:
        assert im.mode == "RGB" and im.size == (8, 8)
        np.testing.assert_array_equal(np.asarray(im), imgs["train"][1])
    for rec in recs:
        _ingestable(rec)


def test_multi_label_grayscale_flavour_gives_findings(tmp_path):
    images = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    npz = tmp_path / "chestmnist.npz"
    np.savez_compressed(
        npz, train_images=images, train_labels=np.array([[1, 0, 1, 0], [0, 0, 0, 0]], np.uint8)
    )
    recs = list(
        iter_medmnist(
            npz, png_dir=tmp_path / "png", png_rel="png", flavour="chestmnist", label_names=CHEST_LABELS
        )
    )
    assert [r["findings"] for r in recs] == [["atelectasis", "effusion"], []]
    assert all(r["diagnosis"] is None and r["modality"] == "xray" for r in recs)
    assert (recs[0]["width"], recs[0]["height"]) == (6, 5)
    with Image.open(tmp_path / recs[0]["image_path"]) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), images[0])


def test_errors_name_file_and_index(tmp_path):
    npz = tmp_path / "pathmnist.npz"
    np.savez_compressed(npz, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.array([[0], [7]]))
    kw = {"png_dir": tmp_path / "png", "png_rel": "png", "label_names": PATH_LABELS}
    with pytest.raises(ImportFormatError, match=r"pathmnist\.npz: train_labels\[1\]: label \[7\]"):
        list(iter_medmnist(npz, flavour="pathmnist", **kw))
    with pytest.raises(ImportFormatError, match="unknown MedMNIST flavour 'organmnist3d'"):
        list(iter_medmnist(npz, flavour="organmnist3d", **kw))
    half = tmp_path / "half.npz"
    np.savez_compressed(half, train_images=np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(ImportFormatError, match="array 'train_labels' is missing"):
        list(iter_medmnist(half, flavour="pathmnist", **kw))
    wrong_chest = tmp_path / "chest.npz"
    np.savez_compressed(
        wrong_chest, train_images=np.zeros((1, 4, 4), np.uint8), train_labels=np.array([[1, 2, 0, 0]])
    )
    with pytest.raises(ImportFormatError, match="expected 4 binary labels"):
        list(
            iter_medmnist(
                wrong_chest,
                flavour="chestmnist",
                png_dir=tmp_path / "png",
                png_rel="png",
                label_names=CHEST_LABELS,
            )
        )
