"""InternVL chat export of the instruction shards: one jsonl per split plus InternVL's ``meta.json``.

Each line follows InternVL's fine-tuning format (``internvl_chat`` data), e.g.::

    {"id": "img7:region_detection:0", "image": "raw/images/site_a/P1/img7.png", "width": 64,
     "height": 64, "conversations": [{"from": "human", "value": "<image>\\nLocate the liver."},
                                     {"from": "gpt", "value": "<ref>liver</ref><box>[[160, 640, 400, 800]]</box>"}]}

``image`` is a string for one image and a list for multi-image (prognosis) records; paths are
relative to ``data_root``, which the meta file names as each dataset's ``root``::

    {"xmed_train": {"root": "data/ci", "annotation": "data/ci/curated/internvl/train.jsonl",
                    "data_augment": false, "repeat_time": 1, "length": 1234}}

Rows are streamed shard by shard (memory bounded by one batch); the folder is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq

from model.data.io import atomic_dir, parquet_files, sha256_file
from model.data.schema import SPLITS, SchemaError

__all__ = ["IMAGE_PLACEHOLDER", "export_internvl", "to_internvl"]

IMAGE_PLACEHOLDER = "<image>"
_COLUMNS = ["id", "images", "width", "height", "conversations", "split"]
_JSON = json.JSONEncoder(ensure_ascii=False)


def to_internvl(row: dict[str, Any], ctx: str = "instruction") -> dict[str, Any]:
    """One instruction row (:data:`~model.data.schema.INSTRUCTION_SCHEMA`) -> an InternVL chat record.

    Raises:
        SchemaError: no image, the first turn is not human, or the number of ``<image>``
            placeholders in the first human turn differs from the number of images.
    """
    return _record(row["id"], row["images"], row["width"], row["height"], row["conversations"], ctx)


def _record(
    id_: str, images: list[str] | None, width: int, height: int, turns: list[dict] | None, ctx: str
) -> dict:
    where = f"{ctx}: instruction {id_}"
    if not images:
        raise SchemaError(f"{where}: field 'images' is empty; every instruction needs an image")
    if not turns or turns[0]["from"] != "human":
        raise SchemaError(f"{where}: field 'conversations' must start with a human turn")
    n_tags = turns[0]["value"].count(IMAGE_PLACEHOLDER)
    if n_tags != len(images):
        raise SchemaError(
            f"{where}: {n_tags} {IMAGE_PLACEHOLDER} placeholder(s) in the first turn for {len(images)} image(s)"
        )
    return {
        "id": id_,
        "image": images[0] if len(images) == 1 else images,
        "width": width,
        "height": height,
        "conversations": [{"from": t["from"], "value": t["value"]} for t in turns],
    }


def export_internvl(
    shards_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    splits: Iterable[str] | None = None,
    meta_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/<split>.jsonl`` (InternVL chat) and ``out_dir/meta.json``, atomically.

    Args:
        shards_dir: instruction shards (``part-*.parquet``).
        out_dir: the export folder, replaced as a whole.
        data_root: the root image paths are relative to; written as each meta entry's ``root``.
        splits: splits to export (each gets a file, possibly empty); ``None``: every split present.
        meta_dir: the folder the meta's ``annotation`` paths point to (default ``out_dir``); give
            the final location when ``out_dir`` is a temporary folder renamed later.

    Returns:
        ``{"root", "meta", "files": {split: {"path", "rows", "sha256"}}}``.

    Raises:
        ValueError: an unknown split is requested.
        SchemaError: a row cannot be exported (see :func:`to_internvl`).
    """
    wanted = None if splits is None else list(dict.fromkeys(splits))
    bad = sorted(set(wanted or ()) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; allowed: {list(SPLITS)}")
    final = Path(meta_dir) if meta_dir is not None else Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        rows = _write_splits(Path(shards_dir), tmp, wanted)
        files = {
            s: {"path": f"{s}.jsonl", "rows": rows[s], "sha256": sha256_file(tmp / f"{s}.jsonl")}
            for s in SPLITS
            if s in rows
        }
        meta = {
            f"xmed_{s}": {
                "root": str(data_root),
                "annotation": str(final / f"{s}.jsonl"),
                "data_augment": False,
                "repeat_time": 1,
                "length": info["rows"],
            }
            for s, info in files.items()
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {"root": str(data_root), "meta": "meta.json", "files": files}


def _iter_columns(shards_dir: Path) -> Iterator[tuple]:
    """``(id, images, width, height, conversations, split)`` per row, one batch in memory."""
    for f in parquet_files(shards_dir):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4_096, columns=_COLUMNS):
            yield from zip(*(batch.column(c).to_pylist() for c in _COLUMNS))


def _write_splits(shards_dir: Path, tmp: Path, wanted: list[str] | None) -> dict[str, int]:
    """Stream the shards into one jsonl per split; returns rows per split."""
    handles: dict[str, IO[str]] = {}
    rows: dict[str, int] = {}
    ctx = str(shards_dir)
    with contextlib.ExitStack() as stack:

        def open_split(split: str) -> IO[str]:
            handles[split] = stack.enter_context(open(tmp / f"{split}.jsonl", "w", encoding="utf-8"))
            rows[split] = 0
            return handles[split]

        for s in wanted or ():
            open_split(s)
        for id_, images, width, height, turns, split in _iter_columns(shards_dir):
            fh = handles.get(split)
            if fh is None:
                if wanted is not None:
                    continue
                if split not in SPLITS:
                    raise SchemaError(f"{ctx}: instruction {id_}: unknown split {split!r}")
                fh = open_split(split)
            fh.write(_JSON.encode(_record(id_, images, width, height, turns, ctx)))
            fh.write("\n")
            rows[split] += 1
    return rows
