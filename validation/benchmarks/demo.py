"""The demo mirror: held-out curated rows of the demo corpus as benchmark items (no file to ship).

For a ``demo_family`` registry entry, the items are the patient-level held-out rows
(:func:`validation.task_families.collect_items`, split ``test`` by default, seeded order) of the
entry's task families, at most ``limit`` per task family (guardrail: per absent / present side, the
present prompts being ``region_detection`` prompts whose answer is a box; region VQA: per Med-GRIT
task). Prompt = the curated
human turn; gold = the curated answer (MCQ: the option letter). Groups: ``task_family``,
``modality``, ``site`` (+ ``kind`` for single-label, ``answer_type`` for VQA).

Region VQA (Med-GRIT tasks, our mapping of the demo families): ``region_detection`` -> ``vg``
(name -> box), ``region_recognition`` -> ``roc`` (box -> name), ``region_vqa`` abnormality ->
``rc`` (box -> caption), ``region_vqa`` presence -> ``roc`` (the referred region classified as
normal / abnormal, yes / no).
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from validation.benchmarks.items import BenchmarkItem
from validation.benchmarks.registry import BenchmarkSpec, DemoFamilySource
from validation.task_families import MAX_NEW_TOKENS, FamilyItem, collect_items

__all__ = ["demo_items"]

_DEFAULT_NEW_TOKENS = 24


@functools.lru_cache(maxsize=4)
def _demo_pool(shards: str, split: str, seed: int) -> tuple[FamilyItem, ...]:
    """Every held-out item of ``split`` (seeded order), read once per process."""
    return tuple(collect_items(shards, split=split, per_family=10**9, seed=seed))


def _budget(family: str) -> int:
    """Generation budget of a demo task family (the learning table's, longer for region captions)."""
    return 40 if family == "region_vqa" else MAX_NEW_TOKENS.get(family, _DEFAULT_NEW_TOKENS)


def _region_task(fi: FamilyItem) -> str:
    if fi.family == "region_detection":
        return "vg"
    if fi.family == "region_vqa" and fi.target.get("kind") == "abnormality":
        return "rc"
    return "roc"  # region_recognition, and region_vqa presence (the referred region: normal/abnormal)


def _demo_item(fi: FamilyItem, spec: BenchmarkSpec, data_root: Path) -> BenchmarkItem:
    row, target = fi.row, fi.target
    turns = row["conversations"]
    if len(turns) != 2 or turns[0]["from"] != "human":
        raise ValueError(
            f"curated row {row['id']}: expected one human turn and one answer, got {len(turns)} turns"
        )
    groups = {"task_family": fi.family, "modality": row["modality"], "site": row["site"]}
    extra: dict[str, Any] = {}
    if spec.family == "single_label":
        groups["kind"] = target.get("kind", "")
    elif spec.family == "multi_label":
        extra["labels"] = tuple(target["labels"])
    elif spec.family == "vqa":
        groups["answer_type"] = target["answer_type"]
    elif spec.family == "mcq":
        extra["options"] = dict(zip("ABCDEFGH", target["options"]))
    elif spec.family == "guardrail":
        extra["should_refuse"] = fi.should_refuse
    elif spec.family == "region_vqa":
        groups["region_task"] = _region_task(fi)
    if target.get("boxes"):
        extra["boxes"] = tuple(tuple(b) for b in target["boxes"])
    gold = target["answer"] if spec.family == "mcq" else fi.gold
    suffix = ":present" if spec.family == "guardrail" and not fi.should_refuse else ""
    return BenchmarkItem(
        id=row["id"] + suffix,
        benchmark=spec.name,
        family=spec.family,
        images=tuple(str(data_root / p) for p in row["images"]),
        prompt=turns[0]["value"],
        gold=gold,
        groups=groups,
        max_new_tokens=spec.max_new_tokens or _budget(fi.family),
        **extra,
    )


def demo_items(spec: BenchmarkSpec, data_root: str | os.PathLike) -> list[BenchmarkItem]:
    """The demo mirror of one registry entry: ``limit`` held-out items per task family (and side).

    Raises:
        ValueError: the curated shards hold no row of the split, or none of the entry's families.
    """
    src = spec.source
    if not isinstance(src, DemoFamilySource):
        raise TypeError(f"benchmark {spec.name!r} is not a demo_family entry")
    root = Path(data_root)
    pool = _demo_pool(str(root / "curated" / "shards"), src.split, src.seed)
    taken: dict[tuple[str, bool, str], int] = defaultdict(int)
    out = []
    for fi in pool:
        if fi.family not in src.families or (src.modalities and fi.row["modality"] not in src.modalities):
            continue
        key = (fi.family, fi.should_refuse, _region_task(fi) if spec.family == "region_vqa" else "")
        if spec.limit is None or taken[key] < spec.limit:
            taken[key] += 1
            out.append(_demo_item(fi, spec, root))
    if not out:
        raise ValueError(f"benchmark {spec.name!r}: no {src.split} row of families {src.families} in {root}")
    return out
