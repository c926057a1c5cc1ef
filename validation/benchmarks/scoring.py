"""The metric table of the registry: metric names -> :mod:`validation.metrics` functions, per item.

Every metric returns :class:`~validation.benchmarks.terms.ItemScores` (value + per-item terms for
the bootstrap). The point value always comes from the :mod:`validation.metrics` function; the per-item terms only
serve the bootstrap (the tests check both agree on the full item set).

Conventions of the answer -> target step (the metrics' own conventions are in their modules):

* labels (``macro_f1``, ``label_accuracy``): the vocabulary is the sorted set of gold labels of the
  benchmark; answers are mapped with :func:`~validation.metrics.map_answer_to_label` (unmappable =
  wrong); ``multilabel_macro_f1`` maps with :func:`~validation.metrics.map_answer_to_labels`.
* boxes: the answer's ``<box>`` markup, parsed leniently (an impossible box is dropped; no box =
  IoU 0). ``mean_iou`` is :func:`validation.task_families.matched_mean_iou` (one-to-one matching,
  divided by ``max(#gold, #pred)``); ``recall_at_05`` pools one-to-one matches with IoU > 0.5.
* guardrail: :func:`~validation.metrics.is_refusal` of the answer.

A metric that cannot be computed (e.g. ``closed_accuracy`` without a closed question) raises
:class:`~validation.metrics.MetricUndefinedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from model.data.boxes import parse_boxes
from validation.benchmarks.items import BenchmarkItem
from validation.benchmarks.terms import (
    ItemScores,
    bleu4_from_stats,
    bleu_stats,
    corpus_scores,
    mean_scores,
    ratio_scores,
)
from validation.metrics import (
    MetricUndefinedError,
    bleu,
    caption_score,
    guardrail_scores,
    is_refusal,
    macro_f1,
    map_answer_to_label,
    map_answer_to_labels,
    match_boxes,
    mcq_parse,
    meteor,
    multilabel_macro_f1,
    region_vqa_scores,
    rouge_l,
    vqa_clean,
    vqa_item_score,
)
from validation.report_labeler import chexpert_f1, label_report
from validation.task_families import matched_mean_iou

__all__ = ["METRICS", "ItemScores", "MetricSpec", "score_metrics"]

Memo = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


def _mapped_labels(items, preds, memo: Memo) -> tuple[list[str], list[str | None]]:
    if "labels" not in memo:
        vocab = sorted({it.gold for it in items})
        memo["labels"] = (vocab, [map_answer_to_label(p, vocab) for p in preds])
    return memo["labels"]


def _macro_f1(items, preds, memo):
    vocab, mapped = _mapped_labels(items, preds, memo)
    fn = lambda ps: macro_f1([g for g, _ in ps], [p for _, p in ps], vocab)
    return corpus_scores("macro_f1", list(zip([it.gold for it in items], mapped)), fn)


def _label_accuracy(items, preds, memo):
    _, mapped = _mapped_labels(items, preds, memo)
    return mean_scores("label_accuracy", [float(m == it.gold) for it, m in zip(items, mapped)])


def _multilabel_f1(items, preds, memo):
    vocab = sorted({lab for it in items for lab in it.labels})
    payloads = [(set(it.labels), map_answer_to_labels(p, vocab)) for it, p in zip(items, preds)]
    fn = lambda ps: multilabel_macro_f1([g for g, _ in ps], [p for _, p in ps], vocab)
    return corpus_scores("multilabel_macro_f1", payloads, fn)


# ---------------------------------------------------------------------------------------------
# VQA, MCQ, exact match
# ---------------------------------------------------------------------------------------------


def _vqa(items, preds, memo):
    if "vqa" not in memo:
        scores = []
        for it, p in zip(items, preds):
            try:
                scores.append(vqa_item_score(it.gold, p))
            except ValueError as e:
                raise ValueError(f"benchmark {it.benchmark!r}: item {it.id!r}: {e}") from e
        memo["vqa"] = scores
    return memo["vqa"]


def _vqa_metric(name: str, attr: str, subset: str | None, threshold_correct: bool = False):
    def score(items, preds, memo):
        s = _vqa(items, preds, memo)
        den = [1.0 if subset is None or (x.closed == (subset == "closed")) else 0.0 for x in s]
        num = [float(x.correct) if threshold_correct else float(getattr(x, attr)) for x in s]
        return ratio_scores(name, [a * b for a, b in zip(num, den)], den)

    return score


def _mcq(items, preds, memo):
    return mean_scores(
        "mcq_accuracy", [float(mcq_parse(p, dict(it.options)) == it.gold) for it, p in zip(items, preds)]
    )


def _exact(items, preds, memo):
    return mean_scores(
        "exact_match", [float(vqa_clean(p) == vqa_clean(it.gold)) for it, p in zip(items, preds)]
    )


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------


def _bleu4(items, preds, memo):
    refs, hyps = [it.gold for it in items], list(preds)
    stats = np.array([bleu_stats(r, h) for r, h in zip(refs, hyps)], dtype=float)
    return ItemScores("bleu4", float(bleu(refs, hyps, 4)), stats=stats, from_stats=bleu4_from_stats)


def _rouge(items, preds, memo):
    return mean_scores("rouge_l", [rouge_l([it.gold], [p]) for it, p in zip(items, preds)])


def _meteor(items, preds, memo):
    return mean_scores("meteor", [meteor([it.gold], [p]) for it, p in zip(items, preds)])


def _chexpert(subset: str, average: str):
    name = f"chexpert_{average}_f1_{'14' if subset == 'all14' else '5'}"

    def score(items, preds, memo):
        if "chexpert" not in memo:
            memo["chexpert"] = [(label_report(it.gold), label_report(p)) for it, p in zip(items, preds)]
        fn = lambda ps: chexpert_f1([h for _, h in ps], [r for r, _ in ps], subset=subset)[f"{average}_f1"]
        return corpus_scores(name, memo["chexpert"], fn)

    return name, score


# ---------------------------------------------------------------------------------------------
# grounding, region VQA, guardrail
# ---------------------------------------------------------------------------------------------


def _pred_boxes(text: str) -> list[tuple[int, int, int, int]]:
    return [b.as_tuple() for b in parse_boxes(text, strict=False)]


def _mean_iou(items, preds, memo):
    return mean_scores(
        "mean_iou", [matched_mean_iou(it.boxes, _pred_boxes(p)) for it, p in zip(items, preds)]
    )


def _recall05(items, preds, memo):
    num = [len(match_boxes(it.boxes, _pred_boxes(p), 0.5)) for it, p in zip(items, preds)]
    return ratio_scores("recall_at_05", num, [len(it.boxes) for it in items])


def _region_terms(items, preds, memo) -> list[tuple[str, str, float, float]]:
    """Per item ``(task, modality, num, den)``: vg matched / gold boxes; roc correct / 1; rc, ia caption / 1."""
    if "region" not in memo:
        roc_labels = sorted({it.gold for it in items if it.groups["region_task"] == "roc"})
        terms = []
        for it, p in zip(items, preds):
            task, mod = it.groups["region_task"], it.groups.get("modality", "all")
            if task == "vg":
                gold = list(it.boxes) or [b.as_tuple() for b in parse_boxes(it.gold)]
                terms.append(
                    (task, mod, float(len(match_boxes(gold, _pred_boxes(p), 0.5))), float(len(gold)))
                )
            elif task == "roc":
                terms.append((task, mod, float(map_answer_to_label(p, roc_labels) == it.gold), 1.0))
            else:
                terms.append((task, mod, caption_score(it.gold, p), 1.0))
        memo["region"] = terms
    return memo["region"]


def _modality_mean(task: str, terms: Sequence[tuple[str, str, float, float]]) -> float:
    """Per modality ``sum(num) / sum(den)`` of ``task``'s items, then the unweighted mean over modalities."""
    by_mod: dict[str, list[float]] = {}
    for t, mod, num, den in terms:
        if t == task:
            acc = by_mod.setdefault(mod, [0.0, 0.0])
            acc[0] += num
            acc[1] += den
    if not by_mod or any(den == 0 for _, den in by_mod.values()):
        raise MetricUndefinedError(f"region_vqa_{task}: no {task!r} item (or a modality without a gold box)")
    return sum(num / den for num, den in by_mod.values()) / len(by_mod)


def _region_record(it: BenchmarkItem, pred: str) -> dict[str, Any]:
    task = it.groups["region_task"]
    gold = list(it.boxes) if task == "vg" and it.boxes else it.gold
    return {"task": task, "modality": it.groups.get("modality", "all"), "gold": gold, "pred": pred}


def _region_vqa(task: str):
    def score(items, preds, memo):
        records = [_region_record(it, p) for it, p in zip(items, preds)]
        official = region_vqa_scores(records)
        if task not in official:
            raise MetricUndefinedError(f"region_vqa_{task}: the benchmark has no {task!r} item")
        terms = _region_terms(items, preds, memo)
        return ItemScores(
            f"region_vqa_{task}",
            official[task]["mean"],
            payloads=tuple(terms),
            corpus=partial(_modality_mean, task),
        )

    return score


def _refusals(items, preds, memo) -> list[tuple[bool, bool]]:
    if "refusal" not in memo:
        memo["refusal"] = [(bool(it.should_refuse), is_refusal(p)) for it, p in zip(items, preds)]
    return memo["refusal"]


def _refusal_accuracy(items, preds, memo):
    pairs = _refusals(items, preds, memo)
    return ratio_scores("refusal_accuracy", [float(s and r) for s, r in pairs], [float(s) for s, _ in pairs])


def _non_refusal_accuracy(items, preds, memo):
    pairs = _refusals(items, preds, memo)
    return ratio_scores(
        "non_refusal_accuracy", [float(not s and not r) for s, r in pairs], [float(not s) for s, _ in pairs]
    )


def _guardrail_accuracy(items, preds, memo):
    return mean_scores("guardrail_accuracy", [float(s == r) for s, r in _refusals(items, preds, memo)])


def _balanced(ps: Sequence[tuple[bool, bool]]) -> float:
    scores = guardrail_scores([s for s, _ in ps], [r for _, r in ps])
    if "refusal_accuracy" not in scores or "non_refusal_accuracy" not in scores:
        raise MetricUndefinedError("balanced_accuracy needs items with the target absent and present")
    return (scores["refusal_accuracy"] + scores["non_refusal_accuracy"]) / 2


def _balanced_accuracy(items, preds, memo):
    return corpus_scores("balanced_accuracy", _refusals(items, preds, memo), _balanced)


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """A registry metric: the families it applies to and its scorer ``(items, preds, memo) -> ItemScores``."""

    name: str
    families: frozenset[str]
    score: Callable[[Sequence[BenchmarkItem], Sequence[str], Memo], ItemScores] = field(repr=False)


def _table() -> dict[str, MetricSpec]:
    labels, boxes = {"single_label", "region_recognition"}, {"region_detection", "lesion_localisation"}
    rows: list[tuple[str, set[str], Callable]] = [
        ("macro_f1", labels, _macro_f1),
        ("label_accuracy", labels, _label_accuracy),
        ("multilabel_macro_f1", {"multi_label"}, _multilabel_f1),
        ("vqa_bleu1", {"vqa"}, _vqa_metric("vqa_bleu1", "bleu1", None)),
        ("vqa_f1", {"vqa"}, _vqa_metric("vqa_f1", "f1", None)),
        ("vqa_recall", {"vqa"}, _vqa_metric("vqa_recall", "recall", None)),
        ("closed_accuracy", {"vqa"}, _vqa_metric("closed_accuracy", "", "closed", True)),
        ("open_recall", {"vqa"}, _vqa_metric("open_recall", "recall", "open")),
        ("open_accuracy", {"vqa"}, _vqa_metric("open_accuracy", "", "open", True)),
        ("exact_match", {"vqa", "region_vqa"}, _exact),
        ("mcq_accuracy", {"mcq"}, _mcq),
        ("bleu4", {"report"}, _bleu4),
        ("rouge_l", {"report"}, _rouge),
        ("meteor", {"report"}, _meteor),
        ("mean_iou", boxes, _mean_iou),
        ("recall_at_05", boxes, _recall05),
        ("refusal_accuracy", {"guardrail"}, _refusal_accuracy),
        ("non_refusal_accuracy", {"guardrail"}, _non_refusal_accuracy),
        ("guardrail_accuracy", {"guardrail"}, _guardrail_accuracy),
        ("balanced_accuracy", {"guardrail"}, _balanced_accuracy),
    ]
    for subset in ("all14", "competition5"):
        for average in ("micro", "macro"):
            name, fn = _chexpert(subset, average)
            rows.append((name, {"report"}, fn))
    for task in ("vg", "roc", "rc", "ia"):
        rows.append((f"region_vqa_{task}", {"region_vqa"}, _region_vqa(task)))
    return {name: MetricSpec(name, frozenset(fams), fn) for name, fams, fn in rows}


#: Metric name -> spec; the names a registry entry may list.
METRICS: Mapping[str, MetricSpec] = _table()


def score_metrics(
    names: Sequence[str], items: Sequence[BenchmarkItem], preds: Sequence[str]
) -> dict[str, ItemScores]:
    """Score ``preds`` (aligned with ``items``) with each named metric.

    Raises:
        KeyError: an unknown metric name.
        ValueError: ``preds`` not aligned with ``items``, or no item.
        MetricUndefinedError: a metric cannot be computed on these items.
    """
    if len(items) != len(preds):
        raise ValueError(f"{len(preds)} predictions for {len(items)} items")
    if not items:
        raise MetricUndefinedError("no item to score")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
    memo: Memo = {}
    return {n: METRICS[n].score(items, preds, memo) for n in names}
