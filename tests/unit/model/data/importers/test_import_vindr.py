"""VinDr-style box CSV importer, including 'No finding' rows and malformed rows (line numbers)."""

from __future__ import annotations

import pytest
from PIL import Image

from model.data.importers import ImportFormatError, iter_vindr
from model.data.schema import ImageRecord

HEADER = "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"


@pytest.fixture()
def vindr(tmp_path):
    images = tmp_path / "vindr" / "png"
    images.mkdir(parents=True)
    for image_id, size in (("aaa111", (100, 80)), ("bbb222", (50, 50))):
        Image.new("L", size).save(images / f"{image_id}.png")
    return tmp_path, images


def _write(path, rows):
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_boxes_become_lesions(vindr):
    data_root, _images = vindr
    csv_path = _write(
        data_root / "vindr" / "annotations_train.csv",
        [
            "aaa111,R8,Aortic enlargement,10.0,20.0,40.0,30.0",
            "bbb222,R9,No finding,,,,",
            "aaa111,R10,Nodule/Mass,50,5,56,13",
            "bbb222,R10,No finding,,,,",
        ],
    )
    recs = list(
        iter_vindr(
            csv_path,
            data_root=data_root,
            images_dir="vindr/png",
            pixel_spacing_mm=0.5,
            region_by_class={"Aortic enlargement": "mediastinum"},
        )
    )
    assert [r["image_id"] for r in recs] == ["aaa111", "bbb222"]
    a, b = recs
    assert a["findings"] == ["Aortic enlargement", "Nodule/Mass"]
    assert a["lesions"] == [
        {
            "lesion_type": "Aortic enlargement",
            "region": "mediastinum",
            "x1": 10.0,
            "y1": 20.0,
            "x2": 40.0,
            "y2": 30.0,
            "size_mm": 15.0,
            "severity": "moderate",
            "mask_path": None,
        },  # longest side 30 px x 0.5 mm
        {
            "lesion_type": "Nodule/Mass",
            "region": "chest",
            "x1": 50.0,
            "y1": 5.0,
            "x2": 56.0,
            "y2": 13.0,
            "size_mm": 4.0,
            "severity": "moderate",
            "mask_path": None,
        },  # 8 px x 0.5 mm
    ]
    assert (a["width"], a["height"], a["pixel_spacing_mm"]) == (100, 80, 0.5)
    assert a["image_path"] == "vindr/png/aaa111.png"
    assert (b["lesions"], b["findings"]) == ([], [])
    for r in recs:
        ImageRecord.from_dict({**r, "split": "train", "image_sha256": "0" * 64})


def test_unknown_spacing_uses_pixels(vindr):
    data_root, images = vindr
    csv_path = _write(data_root / "a.csv", ["bbb222,R1,Nodule/Mass,1,1,4,11"])
    (rec,) = iter_vindr(csv_path, data_root=data_root, images_dir=images)
    assert rec["lesions"][0]["size_mm"] == 10.0 and rec["pixel_spacing_mm"] is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("aaa111,R1,Nodule/Mass,40,5,40,13", r"a\.csv:3: impossible box"),  # x_min == x_max
        ("aaa111,R1,Nodule/Mass,50,20,45,30", r"a\.csv:3: impossible box"),  # x_min > x_max
        ("aaa111,R1,Nodule/Mass,,5,40,13", r"a\.csv:3: coordinates .* are not numbers"),
        ("aaa111,R1,Nodule/Mass,nan,5,40,13", r"a\.csv:3: coordinates .* are not finite"),
        ("aaa111,R1,Nodule/Mass,90,5,120,13", r"a\.csv:3: box .* lies outside the 100x80 image"),
        ("ccc333,R1,Nodule/Mass,1,1,4,4", r"image ccc333: image file .* does not exist"),
    ],
)
def test_malformed_rows_raise_with_line_number(vindr, row, message):
    data_root, images = vindr
    csv_path = _write(data_root / "a.csv", ["bbb222,R1,No finding,,,,", row])
    with pytest.raises(ImportFormatError, match=message):
        list(iter_vindr(csv_path, data_root=data_root, images_dir=images))


def test_missing_column_is_named(vindr):
    data_root, images = vindr
    (data_root / "b.csv").write_text("image_id,class_name,x_min,y_min,x_max\n")
    with pytest.raises(ImportFormatError, match=r"missing column\(s\) \['y_max'\]"):
        list(iter_vindr(data_root / "b.csv", data_root=data_root, images_dir=images))
