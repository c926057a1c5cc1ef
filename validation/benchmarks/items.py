"""One benchmark question: :class:`BenchmarkItem`, the unit every importer yields and every metric scores.

An item carries what the model is shown (``images`` + ``prompt``) and what it is judged against
(``gold`` and, per family, ``options`` / ``boxes`` / ``labels`` / ``should_refuse``), plus
``groups`` (e.g. ``task``, ``modality``, ``department``) for per-group breakdowns.

Field conventions by family (checked in ``__post_init__``; a violation names the item):

=====================  ===============================================================
family                 gold and extra fields
=====================  ===============================================================
single_label           gold = the label text (modality or diagnosis)
multi_label            ``labels`` = the gold label set (may be empty); gold = its text
vqa                    gold = the reference answer (MultiMedEval cleaning at scoring)
mcq                    ``options`` = letter -> text; gold = the correct letter
report                 gold = the reference report
region_recognition     gold = the region name
region_detection       ``boxes`` = gold boxes (0-1000 frame); gold = their InternVL text
lesion_localisation    ``boxes`` = gold boxes (0-1000 frame); gold = their InternVL text
region_vqa             ``groups["region_task"]`` in vg / roc / rc / ia (Med-GRIT); gold text
guardrail              ``should_refuse`` = the asked region/finding is absent
=====================  ===============================================================
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

__all__ = ["FAMILIES", "BenchmarkItem", "items_digest"]

#: The paper's benchmark families (registry ``family`` values).
FAMILIES: tuple[str, ...] = (
    "single_label",
    "multi_label",
    "vqa",
    "mcq",
    "report",
    "region_recognition",
    "region_detection",
    "lesion_localisation",
    "region_vqa",
    "guardrail",
)
_BOX_FAMILIES = frozenset({"region_detection", "lesion_localisation"})
_REGION_TASKS = ("vg", "roc", "rc", "ia")

ImageRef = Image.Image | str | os.PathLike


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark question (see the module docstring for the per-family fields).

    Attributes:
        id: unique within its benchmark (stable across runs: the prediction cache keys on it).
        benchmark: registry name of the benchmark.
        family: one of :data:`FAMILIES`.
        images: image paths (absolute or relative to the working directory) or PIL images.
        prompt: the user turn; ``<image>`` placeholders optional (one per image is prepended).
        gold: the reference answer text.
        options: MCQ options, letter -> text.
        boxes: gold boxes ``(x1, y1, x2, y2)`` on InternVL's 0-1000 scale.
        labels: multi-label gold set.
        should_refuse: guardrail: True when the asked target is absent.
        groups: grouping fields, e.g. ``{"modality": "ct", "department": "radiology"}``.
        max_new_tokens: generation budget of the answer.
    """

    id: str
    benchmark: str
    family: str
    images: tuple[ImageRef, ...]
    prompt: str
    gold: str
    options: Mapping[str, str] | None = None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[str, ...] = ()
    should_refuse: bool | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    max_new_tokens: int = 24

    def __post_init__(self) -> None:
        where = f"benchmark {self.benchmark!r}: item {self.id!r}"
        if self.family not in FAMILIES:
            raise ValueError(f"{where}: unknown family {self.family!r}; known: {FAMILIES}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"{where}: field 'prompt' is empty")
        if not isinstance(self.gold, str) or not self.gold.strip():
            raise ValueError(f"{where}: field 'gold' is empty")
        if self.max_new_tokens <= 0:
            raise ValueError(f"{where}: field 'max_new_tokens' must be positive")
        self._check_family(where)

    def _check_family(self, where: str) -> None:
        fam = self.family
        if fam == "mcq":
            if not self.options or self.gold not in self.options:
                raise ValueError(
                    f"{where}: field 'gold' {self.gold!r} is not an option letter of {self.options}"
                )
        elif fam in _BOX_FAMILIES and not self.boxes:
            raise ValueError(f"{where}: field 'boxes' (the gold boxes) is empty")
        elif fam == "guardrail" and self.should_refuse is None:
            raise ValueError(f"{where}: field 'should_refuse' is required for guardrail items")
        elif fam == "region_vqa" and self.groups.get("region_task") not in _REGION_TASKS:
            raise ValueError(
                f"{where}: groups['region_task'] is {self.groups.get('region_task')!r}; expected one of {_REGION_TASKS}"
            )

    def key(self) -> dict[str, Any]:
        """What identifies this question for the prediction cache (id, prompt, budget, image refs)."""
        refs = [os.fspath(im) if isinstance(im, (str, os.PathLike)) else "<pil>" for im in self.images]
        return {"id": self.id, "prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "images": refs}


def items_digest(items: Sequence[BenchmarkItem]) -> str:
    """sha256 over the items' :meth:`~BenchmarkItem.key` in order (the cache key of a prediction list).

    Raises:
        ValueError: two items share an id.
    """
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"item ids are not unique: {dup}")
    payload = json.dumps([it.key() for it in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()
