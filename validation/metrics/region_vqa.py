"""Med-GRIT-style region VQA scores (Huang et al., BiRD / Med-GRIT-270k, MICCAI 2024, arXiv:2406.18146).

Four task families, each item a record ``{"task", "modality", "gold", "pred"}``:

* ``vg`` (visual grounding: name -> boxes): gold and pred are boxes, a list of ``(x1, y1, x2, y2)``
  or text with InternVL ``<box>`` markup (parsed with :func:`model.data.boxes.parse_boxes`; the
  prediction non-strictly, so malformed boxes are skipped). Score: recall@0.5
  (:func:`validation.metrics.grounding.recall_at_05`, pooled over the modality's items).
* ``roc`` (referring object classification: box -> name): gold a label, pred free text mapped with
  :func:`validation.metrics.classification.map_answer_to_label` over the set of every ``roc`` gold
  label; score: accuracy (unmappable = wrong).
* ``rc`` (referring captioning) and ``ia`` (image analysis): gold and pred are texts; per item the
  mean of sentence BLEU-2, METEOR and ROUGE-L (:mod:`validation.metrics.report` conventions), then
  the mean over items. The issue fixes this mean for image analysis; referring captioning uses the
  same text score here (our choice, stated).

Aggregation: per task, the score of each modality, then the **unweighted mean over modalities**
(so a modality with many items does not dominate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from model.data.boxes import parse_boxes
from validation.metrics._common import mean
from validation.metrics.classification import map_answer_to_label
from validation.metrics.grounding import recall_at_05
from validation.metrics.report import meteor, rouge_l, sentence_bleu
from validation.report_labeler import MetricUndefinedError

__all__ = ["REGION_VQA_TASKS", "caption_score", "region_vqa_scores"]

#: The Med-GRIT task families scored here.
REGION_VQA_TASKS: tuple[str, ...] = ("vg", "roc", "rc", "ia")
_KEYS = ("task", "modality", "gold", "pred")


def caption_score(ref: str, hyp: str) -> float:
    """Mean of sentence BLEU-2, METEOR and ROUGE-L of one (reference, hypothesis) pair.

    Raises:
        ValueError: the reference has no word token.
    """
    return (sentence_bleu(ref, hyp, 2) + meteor([ref], [hyp]) + rouge_l([ref], [hyp])) / 3


def _boxes(value: Any, strict: bool, what: str) -> list[tuple[int, ...]] | Any:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return [b.as_tuple() for b in parse_boxes(value, strict=strict)]
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from e
    return list(value)


def _check(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[int, Mapping]]]]:
    """task -> modality -> [(index, record)], after checking every record."""
    if not records:
        raise MetricUndefinedError("region_vqa_scores: no record to score")
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, rec in enumerate(records):
        missing = [k for k in _KEYS if k not in rec]
        if missing:
            raise ValueError(f"region_vqa_scores: record {i} lacks {missing}")
        if rec["task"] not in REGION_VQA_TASKS:
            raise ValueError(
                f"region_vqa_scores: record {i} has task {rec['task']!r}; known: {REGION_VQA_TASKS}"
            )
        grouped[rec["task"]][str(rec["modality"])].append((i, rec))
    return grouped


def _score(task: str, items: list[tuple[int, Mapping]], roc_labels: list[str]) -> float:
    if task == "vg":
        golds = [_boxes(r["gold"], True, f"gold of record {i}") for i, r in items]
        preds = [_boxes(r["pred"], False, f"pred of record {i}") for i, r in items]
        return recall_at_05(golds, preds)
    if task == "roc":
        return mean([map_answer_to_label(r["pred"], roc_labels) == r["gold"] for _, r in items], "roc")
    scores = []
    for i, r in items:
        try:
            scores.append(caption_score(r["gold"], r["pred"] or ""))
        except ValueError as e:
            raise ValueError(f"region_vqa_scores: record {i}: {e}") from e
    return mean(scores, task)


def region_vqa_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Med-GRIT-style scores per task: per modality, then the mean over modalities.

    Args:
        records: ``{"task": "vg"|"roc"|"rc"|"ia", "modality": str, "gold": ..., "pred": ...}`` per
            item (see the module docstring for gold/pred of each task; pred None = no answer).

    Returns:
        ``{task: {"per_modality": {modality: score}, "mean": mean over modalities}}`` for each task
        present in ``records``.

    Raises:
        ValueError: a record lacks a key, has an unknown task, or a malformed gold.
        MetricUndefinedError: no record, or a ``vg`` modality without any gold box.

    Example:
        vg ct: recall 1.0, vg mri: recall 0.0 -> vg mean 0.5 whatever the item counts.
    """
    grouped = _check(records)
    roc_labels = sorted({str(r["gold"]) for by_mod in grouped.get("roc", {}).values() for _, r in by_mod})
    out = {}
    for task in REGION_VQA_TASKS:
        if task not in grouped:
            continue
        per_mod = {m: _score(task, items, roc_labels) for m, items in sorted(grouped[task].items())}
        out[task] = {"per_modality": per_mod, "mean": sum(per_mod.values()) / len(per_mod)}
    return out
