"""DICOM reading and windowing: hand-computed window values, pydicom as reference, PNG output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from model.data.dicom_io import DicomFormatError, apply_window, dicom_to_png, read_dicom, write_dicom

# Soft-tissue CT window c=40, w=400. LINEAR (PS3.3 C.11.2.1.2.1):
#   lo = c - 0.5 - (w-1)/2 = -160, hi = c - 0.5 + (w-1)/2 = 239
#   x <= -160 -> 0 ; x > 239 -> 255 ; else ((x - 39.5)/399 + 0.5) * 255
#   x = -100: (-139.5/399 + 0.5) * 255 = 38.35  -> 38
#   x =    0: ( -39.5/399 + 0.5) * 255 = 102.26 -> 102
#   x =   40: (   0.5/399 + 0.5) * 255 = 127.82 -> 128
#   x =  239: ( 199.5/399 + 0.5) * 255 = 255 (upper edge), x = 238: (198.5/399 + 0.5) * 255 = 254.36 -> 254
# (values are even so that they are stored exactly with RescaleSlope 2, RescaleIntercept -1024)
HU = np.array([[-1024.0, -200.0, -160.0, -100.0], [0.0, 40.0, 240.0, 1000.0]])
EXPECTED = np.array([[0, 0, 0, 38], [102, 128, 255, 255]], dtype=np.uint8)


def test_apply_window_linear_matches_hand_computed_values():
    out = apply_window(HU, 40, 400)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, EXPECTED)
    np.testing.assert_array_equal(apply_window(np.array([238.0, 239.0, 239.5]), 40, 400), [254, 255, 255])


def test_apply_window_linear_exact():
    # LINEAR_EXACT (C.11.2.1.3.2): x <= c - w/2 -> 0, x > c + w/2 -> 255, else ((x - c)/w + 0.5) * 255
    # x = 0: (-40/400 + 0.5) * 255 = 102 exactly; x = 140: (100/400 + 0.5) * 255 = 191.25 -> 191
    out = apply_window(np.array([-160.0, 0.0, 140.0, 240.0, 241.0]), 40, 400, function="LINEAR_EXACT")
    np.testing.assert_array_equal(out, [0, 102, 191, 255, 255])


def test_apply_window_width_one_is_a_threshold():
    # w = 1: lo = hi = c - 0.5, so x <= 99.5 -> 0 and x > 99.5 -> 255
    np.testing.assert_array_equal(apply_window(np.array([99.0, 99.5, 99.6, 150.0]), 100, 1), [0, 0, 255, 255])


def test_apply_window_rejects_bad_width_and_function():
    with pytest.raises(ValueError, match="width must be >= 1"):
        apply_window(HU, 40, 0.5)
    with pytest.raises(ValueError, match="SIGMOID"):
        apply_window(HU, 40, 400, function="SIGMOID")


def test_apply_window_agrees_with_pydicom_on_a_real_mr_file():
    """Reference: pydicom.pixels.apply_windowing on pydicom's MR_small.dcm (signed 16-bit, c=600 w=1600),
    rescaled from its output range [-32768, 32767] to 0..255."""
    import pydicom
    from pydicom.pixels import apply_windowing

    path = get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    ref = (apply_windowing(ds.pixel_array.astype(float), ds) + 32768) / 65535 * 255
    img = read_dicom(path)
    assert (img.window_center, img.window_width) == (600.0, 1600.0)
    ours = apply_window(img.pixels, img.window_center, img.window_width)
    assert np.abs(ours - ref).max() <= 0.5 + 1e-9


def test_read_dicom_applies_rescale_and_takes_first_window_value(tmp_path):
    path = tmp_path / "s.dcm"
    write_dicom(
        path,
        HU,
        patient_id="P7",
        window=(40, 400),
        rescale_slope=2.0,
        rescale_intercept=-1024.0,
        pixel_spacing_mm=(0.5, 0.75),
        instance_number=3,
        body_part="CHEST",
    )
    import pydicom

    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(ds.pixel_array, (HU + 1024) / 2)  # stored values really are rescaled
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 2000]  # multi-valued: first pair is used
    ds.save_as(path, enforce_file_format=True)
    img = read_dicom(path)
    np.testing.assert_array_equal(img.pixels, HU)
    assert (img.window_center, img.window_width) == (40.0, 400.0)
    assert img.pixel_spacing_mm == (0.5, 0.75)
    assert (img.patient_id, img.instance_number, img.modality, img.body_part) == ("P7", 3, "CT", "CHEST")
    assert (img.width, img.height) == (4, 2)


def test_dicom_to_png_windows_at_tag_window(tmp_path):
    src, out = tmp_path / "s.dcm", tmp_path / "png" / "s.png"
    write_dicom(src, HU, patient_id="P1", window=(40, 400), rescale_slope=2.0, rescale_intercept=-1024.0)
    assert dicom_to_png(src, out) == (4, 2, 1.0, 1.0)
    with Image.open(out) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), EXPECTED)
    assert not list(out.parent.glob(".*tmp*"))  # atomic write leaves no temp file


def test_dicom_to_png_resizes_and_reports_scale(tmp_path):
    src, out = tmp_path / "s.dcm", tmp_path / "s.png"
    write_dicom(src, np.zeros((40, 80)), patient_id="P1", window=(0, 100))
    assert dicom_to_png(src, out, size=20) == (20, 20, 0.25, 0.5)
    assert dicom_to_png(src, out, size=(40, 10)) == (40, 10, 0.5, 0.25)
    with Image.open(out) as im:
        assert im.size == (40, 10)


def test_monochrome1_is_inverted(tmp_path):
    import pydicom

    src = tmp_path / "m1.dcm"
    write_dicom(src, HU, patient_id="P1", window=(40, 400), rescale_slope=2.0, rescale_intercept=-1024.0)
    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(src, enforce_file_format=True)
    dicom_to_png(src, tmp_path / "m1.png")
    with Image.open(tmp_path / "m1.png") as im:
        np.testing.assert_array_equal(np.asarray(im), 255 - EXPECTED)


def test_missing_window_names_file_and_tag_and_default_window_fallback(tmp_path):
    real_ct = get_testdata_file("CT_small.dcm")  # a real CT slice without WindowCenter/WindowWidth
    with pytest.raises(DicomFormatError, match=r"CT_small\.dcm: no WindowCenter tag; pass default_window"):
        dicom_to_png(real_ct, tmp_path / "ct.png")
    img = read_dicom(real_ct)
    assert img.pixels.min() == -896.0 and img.pixel_spacing_mm == (0.661468, 0.661468)
    assert dicom_to_png(real_ct, tmp_path / "ct.png", default_window=(40, 400)) == (128, 128, 1.0, 1.0)
    with Image.open(tmp_path / "ct.png") as im:
        np.testing.assert_array_equal(np.asarray(im), apply_window(img.pixels, 40, 400))


def test_not_dicom_raises_with_path(tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"this is not dicom")
    with pytest.raises(DicomFormatError, match="bad.dcm: not a readable DICOM file"):
        read_dicom(bad)


def test_write_dicom_rejects_values_outside_uint16(tmp_path):
    with pytest.raises(ValueError, match="do not fit uint16"):
        write_dicom(tmp_path / "x.dcm", HU, patient_id="P1")  # -1024 with intercept 0 is negative


def test_rgb_dicom_is_written_without_windowing(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        SecondaryCaptureImageStorage,
        generate_uid(),
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality, ds.Rows, ds.Columns = "P1", "OP", 2, 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(tmp_path / "rgb.dcm", enforce_file_format=True)
    assert dicom_to_png(tmp_path / "rgb.dcm", tmp_path / "rgb.png") == (3, 2, 1.0, 1.0)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
