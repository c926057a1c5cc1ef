"""Benchmark files -> :class:`~validation.benchmarks.items.BenchmarkItem` lists (one reader per source kind).

* ``demo_family``: the demo mirror, :func:`validation.benchmarks.demo.demo_items`.
* ``vlmevalkit_tsv`` (GMAI-MMBench, OmniMedVQA): :func:`validation.benchmarks.tsv.read_vlmevalkit_tsv`.
* ``slake``: :func:`model.data.importers.iter_slake` on ``<split>.json`` (English questions).
* ``vqarad``: ``VQA_RAD Dataset Public.json``, entries checked by the training importer's parser;
  ``test`` = ``phrase_type`` ``test_freeform`` / ``test_para``.
* ``pathvqa``: ``qas/<split>_vqa.json``: the release's ``<split>_vqa.pkl`` records dumped to JSON
  (``img_id``, ``sent``, ``label: {answer: score}``, ``answer_type``) or ``{image, question,
  answer}`` records; images ``images/<split>/<img_id>.jpg`` (or ``.png``). Pickles are not read
  (unpickling runs code): convert once with ``json.dump(pickle.load(f), out)``.
* ``medmnist``: the ``<split>_images`` / ``<split>_labels`` arrays, checked by the training
  importer's helpers; images kept in memory; the registry's ``prompt`` (``{labels}`` = the names).

VQA prompts default to the question itself (placeholder ``{question}``). File sources take the
first ``limit`` items in file order. Malformed input raises
:class:`~model.data.importers.ImportFormatError` naming the file, the line/entry and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from model.data.importers import ImportFormatError, iter_slake
from model.data.importers import medmnist as _medmnist
from model.data.importers import vqarad as _vqarad_mod
from validation.benchmarks.demo import demo_items
from validation.benchmarks.items import BenchmarkItem
from validation.benchmarks.registry import BenchmarkSpec, DemoFamilySource
from validation.benchmarks.tsv import fill_prompt, read_vlmevalkit_tsv

__all__ = [
    "load_items",
    "read_medmnist",
    "read_vlmevalkit_tsv",
    "read_vqa",
]

DEFAULT_VQA_PROMPT = "{question}"
#: Generation budget per family when the entry does not set ``max_new_tokens``.
NEW_TOKENS: dict[str, int] = {"report": 160, "multi_label": 32, "region_vqa": 40}
_DEFAULT_NEW_TOKENS = 24


def _budget(spec: BenchmarkSpec) -> int:
    return spec.max_new_tokens or NEW_TOKENS.get(spec.family, _DEFAULT_NEW_TOKENS)


# ---------------------------------------------------------------------------------------------
# VQA folders
# ---------------------------------------------------------------------------------------------


VqaRecord = tuple[str, str, str, str, dict[str, str], str]  # id, image, question, answer, groups, ctx


def _slake(root: Path, split: str) -> Iterator[VqaRecord]:
    for rec in iter_slake(root, data_root=root, files=(f"{split}.json",)):
        for k, qa in enumerate(rec["vqa"]):
            groups = {
                "answer_type": qa["answer_type"],
                "modality": rec["modality"],
                "body_part": rec["body_part"],
            }
            ctx = f"{root / (split + '.json')}: image {rec['image_id']}"
            yield (
                f"{rec['image_id']}:{k}",
                str(root / rec["image_path"]),
                qa["question"],
                qa["answer"],
                groups,
                ctx,
            )


def _load_json_list(path: Path, what: str) -> list:
    if not path.is_file():
        raise ImportFormatError(f"{path}: {what} file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(doc, list):
        raise ImportFormatError(f"{path}: expected a JSON list, got {type(doc).__name__}")
    return doc


def _vqarad(root: Path, split: str) -> Iterator[VqaRecord]:
    path = root / _vqarad_mod.VQARAD_JSON
    for i, e in enumerate(_load_json_list(path, "VQA-RAD question")):
        ctx = f"{path}: entry {i}"
        name, organ, qa = _vqarad_mod._parse_entry(e, ctx)
        is_test = str(e.get("phrase_type", "")).startswith("test")
        if split != "all" and is_test != (split == "test"):
            continue
        image = root / _vqarad_mod.VQARAD_IMAGES / name
        if not image.is_file():
            raise ImportFormatError(f"{ctx}: field 'image_name': no image file at {image}")
        groups = {"answer_type": qa["answer_type"], "body_part": organ}
        yield f"vqarad_{i}", str(image), qa["question"], qa["answer"], groups, ctx


def _pathvqa_fields(e: Any, ctx: str) -> tuple[str, str, str]:
    """(image id, question, answer) of a pkl-style (img_id, sent, label) or plain record."""
    if not isinstance(e, dict):
        raise ImportFormatError(f"{ctx}: expected an object, got {type(e).__name__}")
    image, question = e.get("img_id", e.get("image")), e.get("sent", e.get("question"))
    answer = e.get("answer")
    if answer is None and isinstance(e.get("label"), dict) and e["label"]:
        answer = max(e["label"].items(), key=lambda kv: kv[1])[0]
    for name, value in (("img_id", image), ("sent", question), ("label", answer)):
        if not isinstance(value, (str, int)) or not str(value).strip():
            raise ImportFormatError(f"{ctx}: field {name!r} (or its plain-record name) is missing or empty")
    return str(image), str(question).strip(), str(answer).strip()


def _pathvqa(root: Path, split: str) -> Iterator[VqaRecord]:
    path = root / "qas" / f"{split}_vqa.json"
    for i, e in enumerate(_load_json_list(path, "PathVQA question")):
        ctx = f"{path}: entry {i}"
        image_id, question, answer = _pathvqa_fields(e, ctx)
        stem = root / "images" / split / image_id
        image = next(
            (p for p in (stem.with_suffix(".jpg"), stem.with_suffix(".png"), stem) if p.is_file()), None
        )
        if image is None:
            raise ImportFormatError(f"{ctx}: field 'img_id': no image {stem}.jpg or .png")
        closed = answer.lower() in ("yes", "no")
        yield (
            f"pathvqa_{split}_{i}",
            str(image),
            question,
            answer,
            {"answer_type": "closed" if closed else "open"},
            ctx,
        )


_VQA_READERS: dict[str, Callable[[Path, str], Iterator[VqaRecord]]] = {
    "slake": _slake,
    "vqarad": _vqarad,
    "pathvqa": _pathvqa,
}


def read_vqa(
    kind: str,
    root: str | os.PathLike,
    *,
    benchmark: str,
    split: str = "test",
    prompt: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = _DEFAULT_NEW_TOKENS,
) -> list[BenchmarkItem]:
    """VQA items of a SLAKE / VQA-RAD / PathVQA folder (layouts in the module docstring).

    Args:
        kind: ``slake``, ``vqarad`` or ``pathvqa``.
        root: the dataset folder.
        benchmark: registry name stored in the items.
        split: SLAKE train/validate/test; VQA-RAD test/train/all; PathVQA train/val/test.
        prompt: template with ``{question}`` (default: the question).
        limit: the first ``limit`` questions in file order.
        max_new_tokens: generation budget.

    Raises:
        ImportFormatError: malformed file or entry, or a missing image (names file, entry, field).
    """
    items = []
    for id_, image, question, answer, groups, ctx in _VQA_READERS[kind](Path(root), split):
        if limit is not None and len(items) >= limit:
            break
        text = fill_prompt(prompt or DEFAULT_VQA_PROMPT, ctx, question=question)
        items.append(
            BenchmarkItem(
                id=id_,
                benchmark=benchmark,
                family="vqa",
                images=(image,),
                prompt=text,
                gold=answer,
                groups=groups,
                max_new_tokens=max_new_tokens,
            )
        )
    return items


# ---------------------------------------------------------------------------------------------
# MedMNIST
# ---------------------------------------------------------------------------------------------


def read_medmnist(
    npz_path: str | os.PathLike,
    *,
    benchmark: str,
    flavour: str,
    labels: dict[int, str],
    prompt: str,
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int = _DEFAULT_NEW_TOKENS,
) -> list[BenchmarkItem]:
    """Classification items of one MedMNIST split (arrays checked by the training importer's helpers).

    Single-label flavours: gold = the label name. Multi-label (ChestMNIST): ``labels`` = the
    positive names, gold = their comma-joined text ("no finding" when none).
    """
    import numpy as np

    npz = Path(npz_path)
    modality, body_part, multi = _medmnist.MEDMNIST_FLAVOURS[flavour]
    names = _medmnist._names(labels, npz)
    try:
        data = np.load(npz, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImportFormatError(f"{npz}: not a readable .npz file: {e}") from e
    with data:
        arrays = _medmnist._split_arrays(data, split, npz)
        if arrays is None:
            raise ImportFormatError(
                f"{npz}: no {split}_images / {split}_labels arrays (found {sorted(data.files)})"
            )
        images, label_rows = arrays
        n = len(images) if limit is None else min(limit, len(images))
        text = fill_prompt(prompt, str(npz), labels=", ".join(names[k] for k in sorted(names)))
        items = []
        for i in range(n):
            target = _medmnist._targets(label_rows[i], names, multi, f"{npz}: {split}_labels[{i}]")
            found = tuple(target.get("findings", ()))
            items.append(
                BenchmarkItem(
                    id=f"{flavour}_{split}_{i:06d}",
                    benchmark=benchmark,
                    family="multi_label" if multi else "single_label",
                    images=(Image.fromarray(np.ascontiguousarray(images[i])),),
                    prompt=text,
                    gold=(", ".join(found) or "no finding") if multi else target["diagnosis"],
                    labels=found,
                    groups={"modality": modality, "body_part": body_part},
                    max_new_tokens=max_new_tokens,
                )
            )
    return items


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------


def load_items(
    spec: BenchmarkSpec,
    *,
    data_root: str | os.PathLike | None = None,
    benchmarks_root: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> list[BenchmarkItem]:
    """The items of one registry entry.

    Args:
        spec: the entry.
        data_root: the profile's data root (demo entries read ``<data_root>/curated/shards``).
        benchmarks_root: root of relative ``source.path`` values.
        image_dir: where TSV base64 images are written as files (None: kept in memory).

    Raises:
        ValueError: a demo entry without ``data_root``.
        BenchmarkFileNotFoundError: the entry's file is missing (names the path).
        ImportFormatError: malformed input (names file, line/entry and field).
    """
    src = spec.source
    if isinstance(src, DemoFamilySource):
        if data_root is None:
            raise ValueError(f"benchmark {spec.name!r} reads the demo corpus: pass data_root")
        return demo_items(spec, data_root)
    path = spec.source_path(benchmarks_root)
    common = {"benchmark": spec.name, "limit": spec.limit, "max_new_tokens": _budget(spec)}
    if src.kind == "vlmevalkit_tsv":
        return read_vlmevalkit_tsv(
            path, prompt=spec.prompt, group_columns=src.group_columns, image_dir=image_dir, **common
        )
    if src.kind == "medmnist":
        return read_medmnist(
            path, flavour=src.flavour, labels=src.labels, prompt=spec.prompt, split=src.split, **common
        )
    return read_vqa(src.kind, path, split=src.split, prompt=spec.prompt, **common)
