"""Who answers benchmark items: the :class:`Predictor` protocol, a checkpoint, the constant baseline, the cache.

* :class:`VLMPredictor`: greedy answers of a checkpoint folder (``load_pretrained_vlm`` +
  :func:`model.generation.batched_greedy`), batched per generation budget, with a progress bar;
  ``fingerprint`` = ``vlm-greedy-<dtype>-<weights_digest>``. It builds an ``XMedProcessor``, so it
  serves ``xmed_vlm`` checkpoints; an InternVL2 checkpoint needs its own predictor (same protocol).
* :class:`MajorityPredictor`: one fixed answer per task family (the majority baseline).
* :func:`cached_predictions`: answers stored per (fingerprint, benchmark, items digest) as JSON, so
  a rerun on the same items never regenerates; a new checkpoint, prompt or item set gets a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from model.data.io import atomic_file
from validation.benchmarks.items import BenchmarkItem, items_digest

__all__ = ["MajorityPredictor", "Predictor", "VLMPredictor", "cached_predictions"]


@runtime_checkable
class Predictor(Protocol):
    """Answers benchmark items; ``fingerprint`` identifies the answers (the cache key)."""

    fingerprint: str

    def predict(self, items: Sequence[BenchmarkItem]) -> list[str]:
        """One answer per item, in order."""
        ...


class VLMPredictor:
    """Greedy answers of a checkpoint folder (:func:`model.pretrained.load_pretrained_vlm`).

    The model loads on the first :meth:`predict` (a fully cached run never loads it). Items are
    answered in batches of ``batch_size`` per generation budget, with a progress bar.

    Args:
        checkpoint: HF model folder (``xmed_vlm`` checkpoints: the processor is ``XMedProcessor``).
        batch_size: prompts per ``generate`` call.
        dtype: weights dtype (part of the fingerprint: answers may differ across dtypes).
        device: move the model there after loading (e.g. ``"cuda"``); None keeps it on the CPU.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        batch_size: int = 16,
        dtype: str = "float32",
        device: str | None = None,
        progress: bool = True,
    ) -> None:
        from model.base import weights_digest

        self.checkpoint = Path(checkpoint)
        self.fingerprint = f"vlm-greedy-{dtype}-{weights_digest(self.checkpoint)}"
        self.batch_size, self.dtype, self.device, self.progress = batch_size, dtype, device, progress
        self._loaded: tuple[Any, Any] | None = None

    def load(self) -> tuple[Any, Any]:
        """The ``(model, processor)`` pair, loaded on first use."""
        if self._loaded is None:
            from model.pretrained import load_pretrained_vlm
            from model.vlm import XMedProcessor

            model, tok = load_pretrained_vlm(self.checkpoint, dtype=self.dtype)
            if self.device is not None:
                model = model.to(self.device)
            self._loaded = (model.eval(), XMedProcessor.for_model(tok, model.config))
        return self._loaded

    def release(self) -> None:
        """Drop the loaded model (the next :meth:`predict` reloads it)."""
        self._loaded = None

    def predict(self, items: Sequence[BenchmarkItem]) -> list[str]:
        """Greedy answers, batched per ``max_new_tokens``."""
        from tqdm.auto import tqdm

        from model.generation import batched_greedy

        model, processor = self.load()
        answers: list[str] = [""] * len(items)
        by_budget: dict[int, list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            by_budget[it.max_new_tokens].append(i)
        name = f"{self.checkpoint.parent.name}/{self.checkpoint.name}"
        with tqdm(total=len(items), desc=name, disable=not self.progress) as bar:
            for budget, idx in sorted(by_budget.items()):
                for start in range(0, len(idx), self.batch_size):
                    chunk = idx[start : start + self.batch_size]
                    enc = [processor.encode_generation(items[i].prompt, list(items[i].images)) for i in chunk]
                    out = batched_greedy(
                        model, processor, enc, max_new_tokens=budget, batch_size=self.batch_size
                    )
                    for i, ans in zip(chunk, out, strict=True):
                        answers[i] = ans.text
                    bar.update(len(chunk))
        return answers


class MajorityPredictor:
    """The constant baseline: one fixed answer per value of a group field (default ``task_family``).

    Args:
        answers: group value -> answer, e.g. :func:`validation.task_families.majority_answers`.
        group: the item group field that picks the answer.
    """

    def __init__(self, answers: Mapping[str, str], *, group: str = "task_family") -> None:
        self.answers, self.group = dict(answers), group
        digest = hashlib.sha256(json.dumps([group, self.answers], sort_keys=True).encode()).hexdigest()
        self.fingerprint = f"majority-{digest[:24]}"

    @classmethod
    def from_curated(cls, shards: str | os.PathLike, *, split: str = "train") -> MajorityPredictor:
        """The most frequent training answer of each demo task family (boxes: the mean box)."""
        from validation.task_families import majority_answers

        return cls(majority_answers(shards, split=split))

    def predict(self, items: Sequence[BenchmarkItem]) -> list[str]:
        """The answer of each item's group value.

        Raises:
            KeyError: an item has no such group value in the table (names it).
        """
        out = []
        for it in items:
            key = it.groups.get(self.group)
            if key not in self.answers:
                raise KeyError(f"majority baseline has no answer for {self.group}={key!r} (item {it.id!r})")
            out.append(self.answers[key])
        return out


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def cached_predictions(
    predictor: Predictor, benchmark: str, items: Sequence[BenchmarkItem], cache_dir: str | os.PathLike | None
) -> tuple[list[str], bool]:
    """``predictor``'s answers to ``items``, from the cache when present (written atomically when not).

    The cache file is ``<cache_dir>/<fingerprint>/<benchmark>-<items digest[:16]>.json`` holding the
    fingerprint, benchmark, items digest, item ids and predictions. ``cache_dir=None`` disables it.

    Returns:
        ``(predictions, from_cache)``.

    Raises:
        ValueError: the predictor returns the wrong number of answers, or a cache file does not
            match its key (corrupted; the message names it: delete it).
    """
    digest = items_digest(items)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / _safe(predictor.fingerprint) / f"{_safe(benchmark)}-{digest[:16]}.json"
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise ValueError(f"prediction cache {path} is not valid JSON; delete it") from e
            key = (doc.get("fingerprint"), doc.get("items_digest"), len(doc.get("predictions", ())))
            if key != (predictor.fingerprint, digest, len(items)):
                raise ValueError(f"prediction cache {path} does not match its key; delete it")
            return list(doc["predictions"]), True
    preds = list(predictor.predict(items))
    if len(preds) != len(items) or not all(isinstance(p, str) for p in preds):
        raise ValueError(
            f"predictor {predictor.fingerprint} gave {len(preds)} answers for {len(items)} items"
        )
    if path is not None:
        doc = {
            "fingerprint": predictor.fingerprint,
            "benchmark": benchmark,
            "items_digest": digest,
            "item_ids": [it.id for it in items],
            "predictions": preds,
        }
        with atomic_file(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
    return preds, False
