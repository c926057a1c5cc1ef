"""Tests of model.data.export: InternVL chat jsonl + meta.json from instruction shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.data.export import export_internvl, to_internvl
from model.data.io import ShardedParquetWriter, sha256_file
from model.data.schema import INSTRUCTION_SCHEMA, SchemaError


def row(i: int, split: str, *, images: int = 1, tags: int | None = None) -> dict:
    paths = [f"raw/images/hospital_a/P{i}/img{i}_v{k}.png" for k in range(images)]
    n = images if tags is None else tags
    head = "<image>\n" if n == 1 else "".join(f"Image-{k + 1}: <image>\n" for k in range(n))
    return {
        "id": f"img{i}:region_detection:0",
        "task": "region_detection",
        "images": paths,
        "image_ids": [f"img{i}_v{k}" for k in range(images)],
        "width": 200,
        "height": 100,
        "conversations": [
            {"from": "human", "value": head + "Locate the liver."},
            {"from": "gpt", "value": "<ref>liver</ref><box>[[50, 200, 250, 600]]</box>"},
        ],
        "patient_id": f"P{i}",
        "split": split,
        "site": "hospital_a",
        "site_role": "external" if split == "external" else "internal",
        "modality": "ct",
        "source": "synthetic",
        "template_id": 0,
        "target": "{}",
    }


def write_shards(path: Path, rows: list[dict], rows_per_shard: int = 3) -> Path:
    with ShardedParquetWriter(path, INSTRUCTION_SCHEMA, rows_per_shard=rows_per_shard) as w:
        w.write_many(rows)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_to_internvl_single_and_multi_image():
    assert to_internvl(row(1, "train")) == {
        "id": "img1:region_detection:0",
        "image": "raw/images/hospital_a/P1/img1_v0.png",
        "width": 200,
        "height": 100,
        "conversations": [
            {"from": "human", "value": "<image>\nLocate the liver."},
            {"from": "gpt", "value": "<ref>liver</ref><box>[[50, 200, 250, 600]]</box>"},
        ],
    }
    multi = to_internvl(row(2, "train", images=2))
    assert multi["image"] == ["raw/images/hospital_a/P2/img2_v0.png", "raw/images/hospital_a/P2/img2_v1.png"]
    assert multi["conversations"][0]["value"].startswith("Image-1: <image>\nImage-2: <image>\n")


def test_to_internvl_rejects_placeholder_image_mismatch():
    with pytest.raises(
        SchemaError,
        match=r"instruction img3:region_detection:0: 1 <image> placeholder\(s\) .* for 2 image\(s\)",
    ):
        to_internvl(row(3, "train", images=2, tags=1))


def test_export_writes_one_jsonl_per_split_and_internvl_meta(tmp_path):
    rows = [row(i, s) for i, s in enumerate(["train", "val", "train", "external", "train", "test", "train"])]
    rows.append(row(7, "train", images=3))
    shards = write_shards(tmp_path / "shards", rows)
    out = tmp_path / "curated" / "internvl"
    summary = export_internvl(shards, out, data_root="data/ci")
    assert sorted(p.name for p in out.iterdir()) == [
        "external.jsonl",
        "meta.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    train = read_jsonl(out / "train.jsonl")
    assert [r["id"] for r in train] == [f"img{i}:region_detection:0" for i in (0, 2, 4, 6, 7)]
    assert all(set(r) == {"id", "image", "width", "height", "conversations"} for r in train)
    assert train[0] == to_internvl(rows[0]) and isinstance(train[-1]["image"], list)
    meta = json.loads((out / "meta.json").read_text())
    assert list(meta) == ["xmed_train", "xmed_val", "xmed_test", "xmed_external"]
    assert meta["xmed_train"] == {
        "root": "data/ci",
        "annotation": str(out / "train.jsonl"),
        "data_augment": False,
        "repeat_time": 1,
        "length": 5,
    }
    assert meta["xmed_external"]["length"] == 1
    assert summary["files"]["train"] == {
        "path": "train.jsonl",
        "rows": 5,
        "sha256": sha256_file(out / "train.jsonl"),
    }


def test_export_split_filter_meta_dir_and_unknown_split(tmp_path):
    shards = write_shards(
        tmp_path / "shards", [row(i, s) for i, s in enumerate(["train", "val", "external"])]
    )
    out = tmp_path / "tmp-export"
    export_internvl(
        shards, out, data_root="/data/root", splits=["train", "test"], meta_dir="data/ci/curated/internvl"
    )
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.jsonl", "train.jsonl"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["xmed_train"]["annotation"] == "data/ci/curated/internvl/train.jsonl"
    assert meta["xmed_test"]["length"] == 0 and (out / "test.jsonl").read_text() == ""
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['training'\]"):
        export_internvl(shards, tmp_path / "x", data_root="d", splits=["training"])


def test_export_is_atomic_on_a_bad_row(tmp_path):
    shards = write_shards(tmp_path / "shards", [row(1, "train"), row(2, "train", images=2, tags=1)])
    out = tmp_path / "internvl"
    with pytest.raises(SchemaError, match="img2:region_detection:0"):
        export_internvl(shards, out, data_root="d")
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "shards"]
