"""DICOM series importer and the generator's raw/ layout importer (with .dcm records)."""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
from PIL import Image

from model.data.dicom_io import write_dicom
from model.data.importers import ImportFormatError, iter_dicom_series, iter_xmed_raw
from model.data.schema import ImageRecord

# ---------------------------------------------------------------------------------------------
# DICOM series
# ---------------------------------------------------------------------------------------------


def _slice(value: float, shape=(8, 8)) -> np.ndarray:
    return np.full(shape, value)


def test_series_ordered_by_instance_number_and_windowed(tmp_path):
    series = tmp_path / "dicoms" / "P1" / "ser1"
    # file names in the opposite order of InstanceNumber; HU values -160, 40, 240 -> grey 0, 128, 255
    for name, instance, hu in (("a.dcm", 3, 240.0), ("b.dcm", 1, -160.0), ("c.dcm", 2, 40.0)):
        write_dicom(
            series / name,
            _slice(hu, (8, 16)),
            patient_id="P1",
            window=(40, 400),
            rescale_slope=1.0,
            rescale_intercept=-1024.0,
            pixel_spacing_mm=(0.5, 0.5),
            instance_number=instance,
        )
    mr = tmp_path / "dicoms" / "P2" / "ser9"
    write_dicom(mr / "x.dcm", _slice(10.0), patient_id="P2", modality="MR", window=(10, 20), body_part="HEAD")
    recs = list(
        iter_dicom_series(
            tmp_path / "dicoms", png_dir=tmp_path / "m/png", png_rel="m/png", dicom_png_size=4, body_part=None
        )
    )
    assert [r["image_id"] for r in recs] == ["P1_ser1_0001", "P1_ser1_0002", "P1_ser1_0003", "P2_ser9_0001"]
    greys = []
    for r in recs[:3]:
        with Image.open(tmp_path / r["image_path"]) as im:
            assert im.size == (4, 4)
            greys.append(int(np.asarray(im)[0, 0]))
    assert greys == [0, 128, 255]
    first = recs[0]
    assert first["image_path"] == "m/png/dicom/P1/P1_ser1_0001.png"
    assert (first["patient_id"], first["modality"], first["width"], first["height"]) == ("P1", "ct", 4, 4)
    # 16x8 -> 4x4: scale_x = 0.25, scale_y = 0.5; spacing 0.5 / sqrt(0.125)
    assert first["pixel_spacing_mm"] == pytest.approx(0.5 / math.sqrt(0.125))
    assert (recs[3]["modality"], recs[3]["body_part"], recs[3]["patient_id"]) == ("mri", "head", "P2")
    for r in recs:
        ImageRecord.from_dict({**r, "split": "train", "image_sha256": "0" * 64})


def test_series_errors(tmp_path):
    s = tmp_path / "s"
    write_dicom(s / "a.dcm", _slice(0.0), patient_id="P1", window=(0, 10), instance_number=1)
    write_dicom(s / "b.dcm", _slice(0.0), patient_id="P1", window=(0, 10), instance_number=1)
    kw = {"png_dir": tmp_path / "png", "png_rel": "png"}
    with pytest.raises(ImportFormatError, match=r"b\.dcm: InstanceNumber 1 repeats"):
        list(iter_dicom_series(s, **kw))
    ds = pydicom.dcmread(s / "b.dcm")
    del ds.PatientID
    ds.save_as(s / "b.dcm", enforce_file_format=True)
    with pytest.raises(ImportFormatError, match=r"b\.dcm: tag PatientID is missing"):
        list(iter_dicom_series(s, **kw))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFormatError, match="no .dcm files"):
        list(iter_dicom_series(tmp_path / "empty", **kw))


# ---------------------------------------------------------------------------------------------
# xmed raw layout
# ---------------------------------------------------------------------------------------------


def _record(image_id, patient, site, site_role, image_path, width, height, **extra):
    rec = {
        "image_id": image_id,
        "source": "xmed_synth",
        "patient_id": patient,
        "visit_index": 0,
        "visit_month": 0.0,
        "site": site,
        "site_role": site_role,
        "modality": "ct",
        "body_part": "chest",
        "image_path": image_path,
        "width": width,
        "height": height,
        "pixel_spacing_mm": 0.8,
        "diagnosis": "nodule",
        "findings": ["nodule"],
        "regions": [],
        "lesions": [],
        "report_findings": "A nodule.",
        "report_impression": "Nodule.",
        "vqa": [],
        "mcq": [],
        "spoken_queries": [],
        "prior_image_id": None,
    }
    rec.update(extra)
    return rec


def _lesion(x1, y1, x2, y2, mask_path=None):
    return {
        "lesion_type": "nodule",
        "region": "right_lung",
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "size_mm": 6.0,
        "severity": "mild",
        "mask_path": mask_path,
    }


@pytest.fixture()
def raw(tmp_path):
    root = tmp_path / "data"
    png = root / "raw/images/hospital_a/P000001/P000001_v0_ct.png"
    png.parent.mkdir(parents=True)
    Image.new("L", (32, 32)).save(png)
    write_dicom(
        root / "raw/dicom/site_c/P000002/P000002_v0_ct.dcm",
        _slice(40.0, (40, 40)),
        patient_id="P000002",
        window=(40, 400),
        rescale_intercept=-1024.0,
        pixel_spacing_mm=(0.8, 0.8),
    )
    write_dicom(
        root / "raw/dicom/site_c/P000003/P000003_v0_ct.dcm",
        _slice(40.0, (40, 80)),
        patient_id="P000003",
        window=(40, 400),
        rescale_intercept=-1024.0,
    )
    mask = np.zeros((40, 40), np.uint8)
    mask[8:40, 4:20] = 255  # the lesion box (4, 8, 20, 40)
    (root / "raw/masks/site_c/P000002").mkdir(parents=True)
    Image.fromarray(mask).save(root / "raw/masks/site_c/P000002/P000002_v0_ct_0.png")
    records = [
        _record(
            "P000001_v0_ct",
            "P000001",
            "hospital_a",
            "internal",
            png.relative_to(root).as_posix(),
            32,
            32,
            regions=[{"name": "right_lung", "x1": 1, "y1": 2, "x2": 30, "y2": 31}],
            lesions=[_lesion(4, 4, 9, 9)],
        ),
        _record(
            "P000002_v0_ct",
            "P000002",
            "site_c",
            "external",
            "raw/dicom/site_c/P000002/P000002_v0_ct.dcm",
            40,
            40,
            regions=[{"name": "right_lung", "x1": 0, "y1": 0, "x2": 40, "y2": 40}],
            lesions=[_lesion(4, 8, 20, 40, "raw/masks/site_c/P000002/P000002_v0_ct_0.png")],
        ),
        _record(
            "P000003_v0_ct",
            "P000003",
            "site_c",
            "external",
            "raw/dicom/site_c/P000003/P000003_v0_ct.dcm",
            80,
            40,
            pixel_spacing_mm=1.0,
            lesions=[_lesion(8, 4, 80, 40)],
        ),
    ]
    (root / "raw/records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root, records


def test_xmed_raw_windows_dicom_and_rescales_boxes(raw):
    root, records = raw
    recs = list(
        iter_xmed_raw(
            root / "raw",
            data_root=root,
            png_dir=root / "manifest/png",
            png_rel="manifest/png",
            dicom_png_size=20,
        )
    )
    assert recs[0] == records[0]  # PNG records pass through unchanged
    ext = recs[1]
    assert ext["image_path"] == "manifest/png/site_c/P000002/P000002_v0_ct.png"
    assert (ext["width"], ext["height"]) == (20, 20)
    # 40x40 -> 20x20: every coordinate halves, spacing doubles
    assert ext["regions"] == [{"name": "right_lung", "x1": 0.0, "y1": 0.0, "x2": 20.0, "y2": 20.0}]
    assert [(l["x1"], l["y1"], l["x2"], l["y2"]) for l in ext["lesions"]] == [(2.0, 4.0, 10.0, 20.0)]
    assert ext["lesions"][0]["size_mm"] == 6.0  # physical size unchanged
    assert ext["pixel_spacing_mm"] == pytest.approx(1.6)
    assert ext["lesions"][0]["mask_path"] == "manifest/png/site_c/P000002/P000002_v0_ct_0.png"
    with Image.open(root / ext["lesions"][0]["mask_path"]) as m:  # nearest-neighbour: the box, halved
        expected = np.zeros((20, 20), np.uint8)
        expected[4:20, 2:10] = 255
        np.testing.assert_array_equal(np.asarray(m), expected)
    with Image.open(root / ext["image_path"]) as im:
        assert im.size == (20, 20)
        assert int(np.asarray(im)[5, 5]) == 128  # 40 HU at window (40, 400)
    rect = recs[2]
    # 80x40 -> 20x20: scale_x = 0.25, scale_y = 0.5
    assert [(l["x1"], l["y1"], l["x2"], l["y2"]) for l in rect["lesions"]] == [(2.0, 2.0, 20.0, 20.0)]
    assert rect["pixel_spacing_mm"] == pytest.approx(1.0 / math.sqrt(0.125))
    for r in recs:
        ImageRecord.from_dict({**r, "split": "train", "image_sha256": "0" * 64})


def test_xmed_raw_errors_name_file_and_line(raw):
    root, records = raw
    kw = {
        "data_root": root,
        "png_dir": root / "manifest/png",
        "png_rel": "manifest/png",
        "dicom_png_size": 20,
    }
    lines = (root / "raw/records.jsonl").read_text().splitlines()
    (root / "raw/records.jsonl").write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(ImportFormatError, match=r"records\.jsonl:2: invalid JSON"):
        list(iter_xmed_raw(root / "raw", **kw))
    (root / "raw/records.jsonl").write_text(json.dumps({**records[1], "width": 64}) + "\n")
    with pytest.raises(
        ImportFormatError, match=r"records\.jsonl:1: record size 64x40 differs from the DICOM's 40x40"
    ):
        list(iter_xmed_raw(root / "raw", **kw))
    missing_mask = {**records[1], "lesions": [_lesion(4, 8, 20, 40, "raw/masks/nope_0.png")]}
    (root / "raw/records.jsonl").write_text(json.dumps(missing_mask) + "\n")
    with pytest.raises(ImportFormatError, match=r"records\.jsonl:1: mask file .*nope_0\.png does not exist"):
        list(iter_xmed_raw(root / "raw", **kw))
    (root / "raw/records.jsonl").write_text(json.dumps({**records[1], "patient_id": "../P"}) + "\n")
    with pytest.raises(ImportFormatError, match="patient_id '../P' is not a safe file name"):
        list(iter_xmed_raw(root / "raw", **kw))
