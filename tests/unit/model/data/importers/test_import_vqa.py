"""SLAKE and VQA-RAD importers on small files in the datasets' real layouts."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from model.data.importers import ImportFormatError, iter_slake, iter_vqarad
from model.data.importers.vqarad import VQARAD_IMAGES, VQARAD_JSON
from model.data.schema import ImageRecord


def _q(img_id, question, answer, lang="en", answer_type="CLOSED", modality="CT", location="Abdomen", qid=0):
    return {
        "img_id": img_id,
        "img_name": f"xmlab{img_id}/source.jpg",
        "question": question,
        "answer": answer,
        "q_lang": lang,
        "location": location,
        "modality": modality,
        "answer_type": answer_type,
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


@pytest.fixture()
def slake(tmp_path):
    root = tmp_path / "external" / "Slake1.0"
    for img_id, size in ((1, (20, 10)), (2, (16, 16)), (3, (8, 8))):
        (root / "imgs" / f"xmlab{img_id}").mkdir(parents=True)
        Image.new("RGB", size).save(root / "imgs" / f"xmlab{img_id}" / "source.jpg")
    files = {
        "train.json": [
            _q(1, "Is this a CT image?", "Yes"),
            _q(1, "这是CT图像吗?", "是", lang="zh"),
            _q(2, "Which organ is abnormal?", "Lung", answer_type="OPEN", modality="X-Ray", location="Chest"),
        ],
        "validate.json": [
            _q(3, "该图像是什么模态?", "MRI", lang="zh", modality="MRI")
        ],  # image 3: Chinese only
        "test.json": [_q(1, "How many kidneys are there?", 2, answer_type="OPEN")],  # numeric answer
    }
    for name, entries in files.items():
        (root / name).write_text(json.dumps(entries, ensure_ascii=False))
    return tmp_path, root


def test_slake_keeps_english_and_groups_by_image(slake):
    data_root, root = slake
    recs = list(iter_slake(root, data_root=data_root))
    assert [r["image_id"] for r in recs] == ["slake_1", "slake_2"]  # image 3 has no English question
    one, two = recs
    assert one["vqa"] == [
        {"question": "Is this a CT image?", "answer": "Yes", "answer_type": "closed"},
        {"question": "How many kidneys are there?", "answer": "2", "answer_type": "open"},
    ]
    assert (one["modality"], one["body_part"], one["width"], one["height"]) == ("ct", "abdomen", 20, 10)
    assert one["image_path"] == "external/Slake1.0/imgs/xmlab1/source.jpg"
    assert (two["modality"], two["body_part"]) == ("xray", "chest")
    for r in recs:
        ImageRecord.from_dict({**r, "split": "train", "image_sha256": "0" * 64})


def test_slake_errors_name_file_and_entry(slake):
    data_root, root = slake
    entries = json.loads((root / "test.json").read_text())
    entries.append(_q(2, "What modality?", "PET", modality="PET"))
    (root / "test.json").write_text(json.dumps(entries))
    with pytest.raises(ImportFormatError, match=r"test\.json: entry 1: field 'modality' is 'PET'"):
        list(iter_slake(root, data_root=data_root))
    (root / "test.json").write_text(
        json.dumps([_q(2, "Which organ?", "Lung", modality="CT", location="Chest")])
    )
    with pytest.raises(ImportFormatError, match="test.json: entry 0: image 2 described as"):
        list(iter_slake(root, data_root=data_root))
    (root / "test.json").write_text('[{"img_id": 1,')
    with pytest.raises(ImportFormatError, match=r"test\.json: invalid JSON at line 1"):
        list(iter_slake(root, data_root=data_root))


def test_slake_outside_data_root_is_refused(slake, tmp_path_factory):
    _, root = slake
    with pytest.raises(ImportFormatError, match="not inside the data root"):
        list(iter_slake(root, data_root=tmp_path_factory.mktemp("elsewhere")))


def _rad(name, question, answer, answer_type="CLOSED", organ="HEAD", qid=1):
    return {
        "qid": qid,
        "phrase_type": "freeform",
        "qid_linked_id": "x",
        "image_case_url": "https://medpix/x",
        "image_name": name,
        "image_organ": organ,
        "evaluation": "given",
        "question": question,
        "question_rephrase": "NULL",
        "question_relation": "NULL",
        "question_frame": "NULL",
        "question_type": "PRES",
        "answer": answer,
        "answer_type": answer_type,
    }


def test_vqarad_groups_by_image_and_maps_fields(tmp_path):
    root = tmp_path / "vqa_rad"
    (root / VQARAD_IMAGES).mkdir(parents=True)
    for name in ("synpic100.jpg", "synpic200.jpg"):
        Image.new("L", (12, 9)).save(root / VQARAD_IMAGES / name)
    (root / VQARAD_JSON).write_text(
        json.dumps(
            [
                _rad("synpic100.jpg", "Is there a mass?", "Yes"),
                _rad("synpic200.jpg", "What organ is shown?", "Liver", answer_type="OPEN ", organ="ABD"),
                _rad("synpic100.jpg", "How many lesions?", 3, answer_type="OPEN"),
            ]
        )
    )
    recs = list(iter_vqarad(root, data_root=tmp_path, modality_by_image={"synpic100.jpg": "mri"}))
    assert [r["image_id"] for r in recs] == ["vqarad_synpic100", "vqarad_synpic200"]
    assert [len(r["vqa"]) for r in recs] == [2, 1]
    assert recs[0]["vqa"][1] == {"question": "How many lesions?", "answer": "3", "answer_type": "open"}
    assert (recs[0]["modality"], recs[0]["body_part"]) == ("mri", "head")
    assert (recs[1]["modality"], recs[1]["body_part"]) == ("other", "abdomen")  # no modality in the JSON
    assert recs[1]["vqa"][0]["answer_type"] == "open"
    assert recs[1]["image_path"] == "vqa_rad/VQA_RAD Image Folder/synpic200.jpg"
    assert (recs[1]["width"], recs[1]["height"]) == (12, 9)


def test_vqarad_errors(tmp_path):
    root = tmp_path / "vqa_rad"
    (root / VQARAD_IMAGES).mkdir(parents=True)
    (root / VQARAD_JSON).write_text(json.dumps([_rad("synpic1.jpg", "Q?", "Yes", answer_type="MAYBE")]))
    with pytest.raises(ImportFormatError, match=r"entry 0: field 'answer_type' is 'MAYBE'"):
        list(iter_vqarad(root, data_root=tmp_path))
    (root / VQARAD_JSON).write_text(json.dumps([_rad("synpic1.jpg", "Q?", "Yes")]))
    with pytest.raises(ImportFormatError, match="image synpic1.jpg: image file .* does not exist"):
        list(iter_vqarad(root, data_root=tmp_path))
