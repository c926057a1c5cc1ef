"""Benchmark importers on small files in the real layouts (TSV with base64 PNGs, SLAKE, VQA-RAD, PathVQA, MedMNIST)."""

from __future__ import annotations

import base64
import csv
import io
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data.importers import ImportFormatError
from validation.benchmarks.importers import load_items, read_medmnist, read_vlmevalkit_tsv, read_vqa
from validation.benchmarks.registry import load_registry

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "modality", "image"]


def _png_b64(value: int, size=(8, 6)) -> str:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _tsv(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)
    return path


def _good_rows() -> list[list[str]]:
    return [
        [
            "10",
            "Which organ is shown?",
            "",
            "liver",
            "heart",
            "lung",
            "kidney",
            "B",
            "organ",
            "CT",
            _png_b64(40),
        ],
        [
            "11",
            "Which modality?",
            "Look at the texture.",
            "CT",
            "MRI",
            "X-ray",
            "",
            "C",
            "modality",
            "X-ray",
            "10",
        ],
        ["12", "Abnormal?", "", "yes", "no", "", "", "no", "abnormality", "MRI", _png_b64(200, (5, 5))],
    ]


def test_tsv_items_options_prompt_images_and_groups(tmp_path):
    items = read_vlmevalkit_tsv(_tsv(tmp_path / "b.tsv", _good_rows()), benchmark="gmai")
    assert [it.id for it in items] == ["10", "11", "12"]
    first, second, third = items
    assert first.options == {"A": "liver", "B": "heart", "C": "lung", "D": "kidney"}
    assert first.gold == "B"
    assert first.prompt == (
        "Question: Which organ is shown?\nOptions:\nA. liver\nB. heart\nC. lung\nD. kidney\n"
        "Please select the correct answer from the options above."
    )
    assert second.prompt.startswith("Hint: Look at the texture.\nQuestion: Which modality?")
    assert second.options == {"A": "CT", "B": "MRI", "C": "X-ray"}  # empty D is no option
    # index 11 refers to index 10's image (VLMEvalKit de-duplication)
    assert second.images[0].size == (8, 6) and second.images[0].getpixel((0, 0)) == 40
    assert third.gold == "B"  # answer given as the option text "no"
    assert third.images[0].size == (5, 5)
    assert first.groups == {"category": "organ", "modality": "CT"}
    assert first.family == "mcq"


def test_tsv_multi_image_list_and_group_column_choice(tmp_path):
    rows = [
        ["1", "Compare", "", "same", "different", "", "", "A", "c", "CT", str([_png_b64(1), _png_b64(2)])]
    ]
    (item,) = read_vlmevalkit_tsv(_tsv(tmp_path / "m.tsv", rows), benchmark="m", group_columns=["modality"])
    assert [im.getpixel((0, 0)) for im in item.images] == [1, 2]
    assert item.groups == {"modality": "CT"}
    with pytest.raises(ImportFormatError, match=r"group columns \['department'\] absent"):
        read_vlmevalkit_tsv(tmp_path / "m.tsv", benchmark="m", group_columns=["department"])


@pytest.mark.parametrize(
    ("row_index", "column", "value", "message"),
    [
        (
            1,
            "image",
            "not-an-image-but-long-enough-to-be-base64-data-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            r"line 3 \(index 11\): field 'image'",
        ),
        (1, "image", "99", r"line 3 \(index 11\): field 'image' refers to index '99'"),
        (0, "answer", "E", r"line 2 \(index 10\): field 'answer' 'E'"),
        (2, "A", "", r"line 4 \(index 12\): field 'answer' 'no'"),
    ],
)
def test_tsv_malformed_rows_name_file_line_and_field(tmp_path, row_index, column, value, message):
    rows = _good_rows()
    rows[row_index][HEADER.index(column)] = value
    if column == "A":  # drop both options: no option left that reads "no"
        rows[row_index][HEADER.index("B")] = ""
        rows[row_index][HEADER.index("C")] = "maybe"
    path = _tsv(tmp_path / "bad.tsv", rows)
    with pytest.raises(ImportFormatError, match=r"bad\.tsv: " + message):
        read_vlmevalkit_tsv(path, benchmark="b")


def test_tsv_header_and_duplicate_index_errors(tmp_path):
    no_answer = [h for h in HEADER if h != "answer"]
    path = _tsv(tmp_path / "h.tsv", [r[:7] + r[8:] for r in _good_rows()], header=no_answer)
    with pytest.raises(ImportFormatError, match=r"h\.tsv: line 1: header lacks \['answer'\]"):
        read_vlmevalkit_tsv(path, benchmark="b")
    rows = _good_rows()
    rows[1][0] = "10"
    with pytest.raises(ImportFormatError, match=r"column 'index' has duplicate values"):
        read_vlmevalkit_tsv(_tsv(tmp_path / "d.tsv", rows), benchmark="b")


def _image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (value, value, value)).save(path, format="PNG")


def test_slake_english_questions_of_the_split(tmp_path):
    root = tmp_path / "Slake1.0"
    _image(root / "imgs" / "xmlab1" / "source.jpg")
    base = {"img_id": 1, "img_name": "xmlab1/source.jpg", "location": "Lung", "modality": "X-Ray", "qid": 0}
    entries = [
        {**base, "question": "Is the lung healthy?", "answer": "No", "q_lang": "en", "answer_type": "CLOSED"},
        {**base, "question": "肺是否健康?", "answer": "否", "q_lang": "zh", "answer_type": "CLOSED"},
        {**base, "question": "Which organ?", "answer": "Lung", "q_lang": "en", "answer_type": "OPEN"},
    ]
    (root / "test.json").write_text(json.dumps(entries))
    items = read_vqa("slake", root, benchmark="slake", prompt="Q: {question}")
    assert [(it.id, it.prompt, it.gold) for it in items] == [
        ("slake_1:0", "Q: Is the lung healthy?", "No"),
        ("slake_1:1", "Q: Which organ?", "Lung"),
    ]
    assert items[0].groups == {"answer_type": "closed", "modality": "xray", "body_part": "lung"}
    assert Path(items[0].images[0]).is_file()
    entries[2]["modality"] = "PET"
    (root / "test.json").write_text(json.dumps(entries))
    with pytest.raises(ImportFormatError, match=r"test\.json: entry 2: field 'modality'"):
        read_vqa("slake", root, benchmark="slake")


def test_vqarad_test_split_by_phrase_type(tmp_path):
    root = tmp_path / "VQA_RAD"
    _image(root / "VQA_RAD Image Folder" / "synpic1.jpg")
    e = {"image_name": "synpic1.jpg", "image_organ": "CHEST", "question_type": "PRES"}
    entries = [
        {
            **e,
            "qid": 1,
            "question": "Is there an effusion?",
            "answer": "yes",
            "answer_type": "CLOSED",
            "phrase_type": "freeform",
        },
        {
            **e,
            "qid": 2,
            "question": "Is there a mass?",
            "answer": "no",
            "answer_type": "CLOSED ",
            "phrase_type": "test_freeform",
        },
        {
            **e,
            "qid": 3,
            "question": "How many ribs?",
            "answer": 12,
            "answer_type": "OPEN",
            "phrase_type": "test_para",
        },
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries))
    test = read_vqa("vqarad", root, benchmark="vqarad")
    assert [(it.id, it.gold, it.groups["answer_type"]) for it in test] == [
        ("vqarad_1", "no", "closed"),
        ("vqarad_2", "12", "open"),
    ]
    assert [it.id for it in read_vqa("vqarad", root, benchmark="v", split="train")] == ["vqarad_0"]
    assert len(read_vqa("vqarad", root, benchmark="v", split="all", limit=2)) == 2
    entries[1]["answer_type"] = "MAYBE"
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries))
    with pytest.raises(ImportFormatError, match=r"Public\.json: entry 1: field 'answer_type'"):
        read_vqa("vqarad", root, benchmark="vqarad")


def test_pathvqa_pkl_style_and_plain_records(tmp_path):
    root = tmp_path / "pvqa"
    _image(root / "images" / "test" / "test_0000.jpg")
    _image(root / "images" / "test" / "test_0001.png")
    records = [
        {
            "answer_type": "yes/no",
            "img_id": "test_0000",
            "label": {"yes": 1},
            "question_id": 1,
            "sent": "Is it?",
        },
        {"image": "test_0001", "question": "Where are the cells?", "answer": "in the canals of hering"},
    ]
    (root / "qas").mkdir(parents=True)
    (root / "qas" / "test_vqa.json").write_text(json.dumps(records))
    items = read_vqa("pathvqa", root, benchmark="pathvqa")
    assert [(it.prompt, it.gold, it.groups["answer_type"]) for it in items] == [
        ("Is it?", "yes", "closed"),
        ("Where are the cells?", "in the canals of hering", "open"),
    ]
    assert items[1].images[0].endswith("test_0001.png")
    records.append({"img_id": "test_0002", "sent": "Q?", "label": {"no": 1}})
    (root / "qas" / "test_vqa.json").write_text(json.dumps(records))
    with pytest.raises(ImportFormatError, match=r"test_vqa\.json: entry 2: field 'img_id': no image"):
        read_vqa("pathvqa", root, benchmark="pathvqa")
    records[2] = {"img_id": "test_0000", "label": {"no": 1}}
    (root / "qas" / "test_vqa.json").write_text(json.dumps(records))
    with pytest.raises(ImportFormatError, match=r"entry 2: field 'sent'"):
        read_vqa("pathvqa", root, benchmark="pathvqa")


def test_medmnist_single_and_multi_label(tmp_path):
    rng = np.random.default_rng(0)
    single = tmp_path / "pathmnist.npz"
    np.savez(
        single,
        test_images=rng.integers(0, 255, (3, 28, 28, 3), dtype=np.uint8),
        test_labels=np.array([[0], [2], [1]]),
    )
    items = read_medmnist(
        single,
        benchmark="p",
        flavour="pathmnist",
        labels={0: "adipose", 1: "debris", 2: "mucus"},
        prompt="Tissue? One of: {labels}.",
        limit=2,
    )
    assert [(it.id, it.gold) for it in items] == [
        ("pathmnist_test_000000", "adipose"),
        ("pathmnist_test_000001", "mucus"),
    ]
    assert items[0].prompt == "Tissue? One of: adipose, debris, mucus."
    assert items[0].images[0].size == (28, 28) and items[0].family == "single_label"
    multi = tmp_path / "chestmnist.npz"
    labels = np.zeros((2, 3), dtype=np.uint8)
    labels[0, [0, 2]] = 1
    np.savez(multi, test_images=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8), test_labels=labels)
    items = read_medmnist(
        multi,
        benchmark="c",
        flavour="chestmnist",
        labels={0: "atelectasis", 1: "mass", 2: "edema"},
        prompt="Findings among {labels}?",
    )
    assert [(it.labels, it.gold) for it in items] == [
        (("atelectasis", "edema"), "atelectasis, edema"),
        ((), "no finding"),
    ]
    labels[1, 0] = 7
    np.savez(multi, test_images=rng.integers(0, 255, (2, 28, 28), dtype=np.uint8), test_labels=labels)
    with pytest.raises(ImportFormatError, match=r"chestmnist\.npz: test_labels\[1\]"):
        read_medmnist(
            multi, benchmark="c", flavour="chestmnist", labels={0: "a", 1: "b", 2: "c"}, prompt="{labels}"
        )
    with pytest.raises(ImportFormatError, match=r"no val_images"):
        read_medmnist(
            single,
            benchmark="p",
            flavour="pathmnist",
            labels={0: "a", 1: "b", 2: "c"},
            prompt="x",
            split="val",
        )


def test_load_items_dispatches_registry_entries_with_limits(tmp_path):
    bench_root = tmp_path / "benchmarks"
    bench_root.mkdir()
    _tsv(bench_root / "gmai.tsv", _good_rows())
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        textwrap.dedent(
            """
        benchmarks:
          gmai:
            family: mcq
            source: {kind: vlmevalkit_tsv, path: gmai.tsv}
            prompt: "{question} {options}"
            metrics: [mcq_accuracy]
            limit: 2
            max_new_tokens: 5
          missing:
            family: vqa
            source: {kind: pathvqa, path: pvqa}
            metrics: [vqa_f1]
        """
        )
    )
    registry = load_registry(reg)
    items = load_items(registry.specs["gmai"], benchmarks_root=bench_root)
    assert [it.id for it in items] == ["10", "11"]
    assert items[0].prompt == "Which organ is shown? A. liver\nB. heart\nC. lung\nD. kidney"
    assert {it.max_new_tokens for it in items} == {5} and {it.benchmark for it in items} == {"gmai"}
    with pytest.raises(FileNotFoundError, match=r"'missing'.*pvqa does not exist"):
        load_items(registry.specs["missing"], benchmarks_root=bench_root)


def test_tsv_images_extracted_to_content_addressed_files(tmp_path):
    from validation.benchmarks import items_digest

    rows = _good_rows()
    items = read_vlmevalkit_tsv(_tsv(tmp_path / "b.tsv", rows), benchmark="g", image_dir=tmp_path / "img")
    paths = [it.images[0] for it in items]
    assert paths[0] == paths[1] and paths[0] != paths[2]  # index 11 shares index 10's image
    assert all(p.startswith(str(tmp_path / "img")) for p in paths)
    with Image.open(paths[0]) as im:
        assert im.size == (8, 6) and im.getpixel((0, 0)) == 40
    rows[0][HEADER.index("image")] = _png_b64(41)  # same ids and prompts, other pixels
    changed = read_vlmevalkit_tsv(_tsv(tmp_path / "c.tsv", rows), benchmark="g", image_dir=tmp_path / "img")
    assert items_digest(changed) != items_digest(items)  # the prediction cache key follows the content
    assert len([f for f in (tmp_path / "img").rglob("*") if f.is_file()]) == 3  # 3 distinct images
