"""Grounding metrics: IoU, lesion-localisation mean IoU, recall@0.5 and region-recognition macro-F1.

Conventions:

* Boxes are ``(x1, y1, x2, y2)`` with ``x1 < x2`` and ``y1 < y2`` in any one coordinate frame (pixels
  or InternVL's 0-1000 scale, :mod:`model.data.boxes`); both boxes of a pair must share the frame.
  A box with the wrong length, a non-finite coordinate, or ``x2 <= x1`` / ``y2 <= y1`` (impossible
  or zero-area, which :func:`model.data.boxes.parse_boxes` also rejects) raises ``ValueError``
  naming the box. Unparseable model output is passed as ``None`` (no box), never as a fake box.
* **Hit** iff ``IoU > 0.5``: an IoU of exactly 0.5 is a miss.
* **recall@0.5** for several boxes per item: gold and predicted boxes of one item are matched
  one-to-one, greedily by decreasing IoU among the pairs with IoU > 0.5 (ties: lower gold index,
  then lower prediction index); recall = matched gold boxes / all gold boxes, pooled over items
  (a predicted box can cover one gold box only, so one large box cannot hit several lesions).
* **Region recognition**: the free-text answer is mapped to a region name with
  :func:`validation.metrics.classification.map_answer_to_label` and scored with single-label
  macro-F1 over the region names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from validation.metrics._common import check_pairs, mean
from validation.metrics.classification import macro_f1, map_answer_to_label
from validation.report_labeler import MetricUndefinedError

__all__ = [
    "HIT_IOU",
    "check_box",
    "hit_rate",
    "iou",
    "match_boxes",
    "mean_iou",
    "recall_at_05",
    "recall_at_iou",
    "region_recognition_f1",
]

Box = Sequence[float]
#: IoU threshold of a hit (strictly greater than).
HIT_IOU = 0.5


def check_box(box: Box, name: str = "box") -> tuple[float, float, float, float]:
    """``box`` as a float 4-tuple after checking it is a possible, non-empty box.

    Args:
        box: ``(x1, y1, x2, y2)``.
        name: how the error message names the box (e.g. ``"gold box 3 of item 7"``).

    Raises:
        ValueError: wrong length, a non-number or non-finite coordinate, ``x2 <= x1`` or ``y2 <= y1``.
    """
    try:
        coords = tuple(float(v) for v in box)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} {box!r} is not a sequence of 4 numbers") from e
    if len(coords) != 4:
        raise ValueError(f"{name} {box!r} has {len(coords)} coordinates; expected (x1, y1, x2, y2)")
    if not all(math.isfinite(v) for v in coords):
        raise ValueError(f"{name} {box!r} has a non-finite coordinate")
    x1, y1, x2, y2 = coords
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{name} {box!r} is impossible or empty: needs x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


def iou(box_a: Box, box_b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (continuous coordinates).

    Args:
        box_a: first box.
        box_b: second box, in the same frame.

    Returns:
        ``area(a & b) / area(a | b)`` in [0, 1].

    Raises:
        ValueError: a box is malformed, impossible or empty (the message names ``box_a``/``box_b``).

    Example:
        ``iou((0, 0, 10, 10), (0, 0, 10, 5)) = 50 / 100 = 0.5`` (a miss: a hit needs > 0.5).
    """
    ax1, ay1, ax2, ay2 = check_box(box_a, "box_a")
    bx1, by1, bx2, by2 = check_box(box_b, "box_b")
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union


def _item_ious(golds: Sequence[Box], preds: Sequence[Box | None], metric: str) -> list[float]:
    check_pairs(golds, preds, metric)
    out = []
    for i, (g, p) in enumerate(zip(golds, preds)):
        gold = check_box(g, f"{metric}: gold box of item {i}")
        out.append(0.0 if p is None else iou(gold, check_box(p, f"{metric}: predicted box of item {i}")))
    return out


def mean_iou(golds: Sequence[Box], preds: Sequence[Box | None]) -> float:
    """Lesion localisation: mean IoU of one predicted box per item against its gold box.

    Args:
        golds: one gold box per item.
        preds: one predicted box per item, or None where the answer held no parseable box (IoU 0).

    Returns:
        The mean IoU over items.

    Raises:
        ValueError: lengths differ, or a box is malformed (named by item).
        MetricUndefinedError: empty input.
    """
    return mean(_item_ious(golds, preds, "mean_iou"), "mean_iou")


def hit_rate(golds: Sequence[Box], preds: Sequence[Box | None]) -> float:
    """Share of items whose predicted box hits its gold box (IoU > 0.5; exactly 0.5 is a miss).

    Raises:
        ValueError: lengths differ, or a box is malformed.
        MetricUndefinedError: empty input.
    """
    values = _item_ious(golds, preds, "hit_rate")
    return sum(v > HIT_IOU for v in values) / len(values)


def match_boxes(
    golds: Sequence[Box], preds: Sequence[Box], threshold: float = HIT_IOU
) -> list[tuple[int, int, float]]:
    """One-to-one greedy matching of one item's boxes: pairs with IoU > ``threshold``, best first.

    Returns:
        ``(gold_index, pred_index, iou)`` of each matched pair, in matching order.
    """
    pairs = sorted(
        ((iou(g, p), gi, pi) for gi, g in enumerate(golds) for pi, p in enumerate(preds)),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    used_g: set[int] = set()
    used_p: set[int] = set()
    out = []
    for value, gi, pi in pairs:
        if value > threshold and gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            out.append((gi, pi, value))
    return out


def recall_at_iou(
    gold_boxes_per_item: Sequence[Sequence[Box]],
    pred_boxes_per_item: Sequence[Sequence[Box] | None],
    threshold: float = HIT_IOU,
) -> float:
    """Pooled recall of gold boxes at an IoU threshold (one-to-one greedy matching per item).

    Args:
        gold_boxes_per_item: the gold boxes of each item (an item may have none).
        pred_boxes_per_item: the predicted boxes of each item (None or empty: nothing predicted).
        threshold: IoU must be strictly greater than this.

    Returns:
        Matched gold boxes / all gold boxes.

    Raises:
        ValueError: lengths differ, or a box is malformed (named by item and index).
        MetricUndefinedError: empty input, or no gold box at all.
    """
    check_pairs(gold_boxes_per_item, pred_boxes_per_item, "recall_at_iou")
    matched = total = 0
    for i, (golds, preds) in enumerate(zip(gold_boxes_per_item, pred_boxes_per_item)):
        gs = [check_box(b, f"gold box {k} of item {i}") for k, b in enumerate(golds)]
        ps = [check_box(b, f"predicted box {k} of item {i}") for k, b in enumerate(preds or ())]
        total += len(gs)
        matched += len(match_boxes(gs, ps, threshold))
    if total == 0:
        raise MetricUndefinedError("recall_at_iou: there is no gold box; recall is undefined")
    return matched / total


def recall_at_05(
    gold_boxes_per_item: Sequence[Sequence[Box]], pred_boxes_per_item: Sequence[Sequence[Box] | None]
) -> float:
    """Recall@0.5 (hit iff IoU > 0.5): :func:`recall_at_iou` with ``threshold=0.5``.

    Example:
        item 1: gold ``[(0,0,10,10), (20,20,30,30)]``, pred ``[(0,0,10,10)]`` -> 1 of 2 matched;
        item 2: gold ``[(0,0,10,10)]``, pred ``[(0,0,10,5)]`` (IoU 0.5, a miss) -> 0 of 1;
        recall@0.5 = 1/3.
    """
    return recall_at_iou(gold_boxes_per_item, pred_boxes_per_item, HIT_IOU)


def region_recognition_f1(
    golds: Sequence[str],
    answers: Sequence[str | None],
    labels: Sequence[str] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Region recognition: macro-F1 over region names of free-text answers.

    Args:
        golds: gold region name per item.
        answers: the model's free-text answer per item ("The left lung."), mapped with
            :func:`map_answer_to_label`; an unmappable answer is wrong.
        labels: the region vocabulary; default the sorted set of ``golds``.
        synonyms: region name -> extra phrases.

    Returns:
        Single-label macro-F1 (:func:`validation.metrics.classification.macro_f1`).

    Raises:
        ValueError: lengths differ, or a gold region outside ``labels``.
        MetricUndefinedError: empty input.
    """
    check_pairs(golds, answers, "region_recognition_f1")
    vocab = sorted(set(golds)) if labels is None else list(labels)
    preds = [map_answer_to_label(a, vocab, synonyms) for a in answers]
    return macro_f1(list(golds), preds, vocab)
