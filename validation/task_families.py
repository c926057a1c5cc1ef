"""Per-task-family evaluation of a checkpoint on held-out curated data (the learning table).

One score per task family of the curated mix, from greedy answers to held-out prompts (patient-level
``test`` split by default), with the family's metric from :mod:`validation.metrics`:

======================  ===============================================================  =========
family                  metric (convention)                                              better
======================  ===============================================================  =========
modality                macro-F1 over modality names (``single_label`` kind modality)    higher
single_label            macro-F1 over the gold labels of the other kinds                 higher
multi_label             macro-F1 over findings, answer split on commas                   higher
vqa_closed              MultiMedEval closed accuracy (recall >= 0.4 on cleaned tokens)   higher
vqa_open                MultiMedEval open recall                                         higher
mcq                     accuracy; letter or option text parsed, unparseable = wrong      higher
report                  ROUGE-L F-measure of the whole report                            higher
region_recognition      macro-F1 over region names                                       higher
region_detection        mean IoU of the first predicted box with the gold box            higher
lesion_localisation     mean IoU, one-to-one matching, averaged over max(#gold, #pred)   higher
region_vqa              accuracy: presence = cleaned yes/no match, abnormality = the     higher
                        answer names the boxed lesion's type (gold captions are drawn
                        from several phrasings, so their exact text is not scored)
guardrail               refusal accuracy on absent targets (balanced accuracy reported)  higher
prognosis               balanced accuracy of the yes/no landmark answer (mean recall of  higher
                        "yes" and "no": the labels are imbalanced, ~80% "no" in demo)
======================  ===============================================================  =========

Baselines on the same items: the *majority answer* (the most frequent training answer of the
family; for box families the mean training box, i.e. the best constant box under IoU) and any
number of checkpoints (the untrained base model, each training stage).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.data.boxes import format_ref_boxes, parse_boxes
from model.data.io import iter_parquet_rows
from validation.metrics.classification import macro_f1, multilabel_macro_f1
from validation.metrics.grounding import iou, match_boxes
from validation.metrics.guardrail import is_refusal
from validation.metrics.mcq import mcq_parse
from validation.metrics.report import rouge_l
from validation.metrics.vqa import vqa_clean, vqa_scores

__all__ = [
    "FAMILIES",
    "FamilyItem",
    "collect_items",
    "majority_answers",
    "matched_mean_iou",
    "score_all",
    "score_family",
]

#: Families in table order.
FAMILIES: tuple[str, ...] = (
    "modality",
    "single_label",
    "multi_label",
    "vqa_closed",
    "vqa_open",
    "mcq",
    "report",
    "region_recognition",
    "region_detection",
    "lesion_localisation",
    "region_vqa",
    "guardrail",
    "prognosis",
)
_BOX_FAMILIES = ("region_detection", "lesion_localisation")
#: Generation budget per family (reports are long; everything else is a short answer).
MAX_NEW_TOKENS: dict[str, int] = {"report": 160, "multi_label": 32, "region_vqa": 40}
_DEFAULT_NEW_TOKENS = 24


@dataclass(frozen=True)
class FamilyItem:
    """One held-out prompt of a family: the curated row, its gold answer text and parsed target."""

    family: str
    row: dict[str, Any]
    gold: str
    target: dict[str, Any]
    should_refuse: bool = False

    @property
    def max_new_tokens(self) -> int:
        """Generation budget for this item's family."""
        return MAX_NEW_TOKENS.get(self.family, _DEFAULT_NEW_TOKENS)


def _family_of(row: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    task = row["task"]
    if task == "single_label":
        return "modality" if target.get("kind") == "modality" else "single_label"
    if task == "lesion_detection":
        return "lesion_localisation"
    return task


def _item(row: dict[str, Any]) -> FamilyItem:
    target = json.loads(row["target"]) if row.get("target") else {}
    gold = row["conversations"][-1]["value"]
    family = _family_of(row, target)
    return FamilyItem(family, row, gold, target, should_refuse=family == "guardrail")


def collect_items(
    shards: str | os.PathLike, *, split: str = "test", per_family: int = 200, seed: int = 0
) -> list[FamilyItem]:
    """Held-out items, at most ``per_family`` per family (a seeded sample), in family order.

    The guardrail family also takes as many *present* region prompts ("mark the position of X")
    from ``region_detection`` rows, so that refusing everything scores a balanced accuracy of 0.5.

    Raises:
        ValueError: the split has no row at all in ``shards``.
    """
    by_family: dict[str, list[FamilyItem]] = defaultdict(list)
    for row in iter_parquet_rows(shards):
        if row["split"] == split:
            item = _item(row)
            by_family[item.family].append(item)
    if not by_family:
        raise ValueError(f"{shards}: no curated row of split {split!r}")
    rng = random.Random(seed)
    out: list[FamilyItem] = []
    for fam in FAMILIES:
        items = by_family.get(fam, [])
        chosen = rng.sample(items, min(per_family, len(items)))
        if fam == "guardrail" and chosen:
            present = by_family.get("region_detection", [])
            chosen += [
                FamilyItem("guardrail", it.row, it.gold, it.target, should_refuse=False)
                for it in rng.sample(present, min(len(chosen), len(present)))
            ]
        out += chosen
    return out


def _mean_box(boxes: Iterable[Sequence[float]]) -> list[int]:
    boxes = list(boxes)
    if not boxes:
        raise ValueError("no training box to average")
    return [round(sum(b[k] for b in boxes) / len(boxes)) for k in range(4)]


def majority_answers(shards: str | os.PathLike, *, split: str = "train") -> dict[str, str]:
    """The constant answer of each family learned from ``split``.

    Text families: the most frequent gold answer. Box families: one box at the mean training box
    (the best constant box under IoU, up to the small difference between mean and IoU-optimum).
    Guardrail: the most frequent answer over its absent and present prompts (i.e. the refusal).
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    boxes: dict[str, list] = defaultdict(list)
    for row in iter_parquet_rows(shards):
        if row["split"] != split:
            continue
        item = _item(row)
        counts[item.family][item.gold] += 1
        if item.family in _BOX_FAMILIES:
            boxes[item.family] += [b.as_tuple() for b in parse_boxes(item.gold, strict=False)]
    out = {fam: c.most_common(1)[0][0] for fam, c in counts.items()}
    for fam, bs in boxes.items():
        label = "region" if fam == "region_detection" else "lesion"
        out[fam] = format_ref_boxes(label, [_mean_box(bs)])
    return out


def matched_mean_iou(gold: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> float:
    """Greedy one-to-one IoU matching, summed and divided by ``max(len(gold), len(pred))``.

    Extra predicted boxes and missed gold boxes both count as IoU 0, so predicting many boxes is
    never rewarded. No prediction at all scores 0.

    Raises:
        ValueError: ``gold`` is empty (nothing to localise).
    """
    if not gold:
        raise ValueError("matched_mean_iou: the item has no gold box")
    total = sum(v for _, _, v in match_boxes(gold, pred, threshold=-1.0))
    return total / max(len(gold), len(pred))


def _boxes(text: str) -> list[tuple]:
    try:
        return [b.as_tuple() for b in parse_boxes(text, strict=False)]
    except ValueError:  # an impossible box in a model answer counts as no box
        return []


def _split_labels(text: str) -> set[str]:
    return {t.strip().lower().rstrip(".") for t in text.split(",") if t.strip()}


def _accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)


def _score_labels(items, answers) -> dict[str, float]:
    golds = [it.gold.strip().lower() for it in items]
    return {"macro_f1": macro_f1(golds, [a.strip().lower() for a in answers])}


def _score_multi(items, answers) -> dict[str, float]:
    golds = [set(map(str.lower, it.target["labels"])) for it in items]
    return {"macro_f1": multilabel_macro_f1(golds, [_split_labels(a) for a in answers])}


def _score_closed(items, answers) -> dict[str, float]:
    return {"closed_accuracy": vqa_scores([it.gold for it in items], list(answers))["closed_accuracy"]}


def _score_open(items, answers) -> dict[str, float]:
    return {"open_recall": vqa_scores([it.gold for it in items], list(answers))["open_recall"]}


def _score_mcq(items, answers) -> dict[str, float]:
    flags = []
    for it, a in zip(items, answers):
        options = dict(zip("ABCDEFGH", it.target["options"]))
        flags.append(mcq_parse(a, options) == it.target["answer"])
    return {"accuracy": _accuracy(flags)}


def _score_report(items, answers) -> dict[str, float]:
    return {"rouge_l": rouge_l([it.gold for it in items], list(answers))}


def _score_box(items, answers) -> dict[str, float]:
    ious = [matched_mean_iou(_boxes(it.gold), _boxes(a)) for it, a in zip(items, answers)]
    return {"mean_iou": sum(ious) / len(ious)}


def _score_region_box(items, answers) -> dict[str, float]:
    ious = []
    for it, a in zip(items, answers):
        pred = _boxes(a)
        ious.append(iou(_boxes(it.gold)[0], pred[0]) if pred else 0.0)
    return {"mean_iou": sum(ious) / len(ious)}


def _names(answer: str, label: str) -> bool:
    """Whether the cleaned ``answer`` holds the cleaned ``label`` as whole words."""
    return f" {vqa_clean(label)} " in f" {vqa_clean(answer)} "


def _score_region_vqa(items, answers) -> dict[str, float]:
    flags: dict[str, list[bool]] = {"presence": [], "abnormality": []}
    for it, a in zip(items, answers):
        if it.target.get("kind") == "abnormality":
            flags["abnormality"].append(_names(a, it.target["label"]))
        else:
            flags["presence"].append(vqa_clean(a) == vqa_clean(it.gold))
    out = {"accuracy": _accuracy(flags["presence"] + flags["abnormality"])}
    out.update({f"{k}_accuracy": _accuracy(v) for k, v in flags.items() if v})
    return out


def _score_prognosis(items, answers) -> dict[str, float]:
    by_label: dict[str, list[bool]] = defaultdict(list)
    for it, a in zip(items, answers):
        gold = vqa_clean(it.gold)
        by_label[gold].append((vqa_clean(a).split() or [""])[0] == gold)
    recalls = [_accuracy(v) for v in by_label.values()]
    every = [f for v in by_label.values() for f in v]
    return {"balanced_accuracy": sum(recalls) / len(recalls), "accuracy": _accuracy(every)}


def _score_guardrail(items, answers) -> dict[str, float]:
    absent = [is_refusal(a) for it, a in zip(items, answers) if it.should_refuse]
    present = [not is_refusal(a) for it, a in zip(items, answers) if not it.should_refuse]
    out = {"refusal_accuracy": _accuracy(absent)}
    if present:
        out["balanced_accuracy"] = (out["refusal_accuracy"] + _accuracy(present)) / 2
    return out


_SCORERS: dict[str, Callable[[Sequence[FamilyItem], Sequence[str]], dict[str, float]]] = {
    "modality": _score_labels,
    "single_label": _score_labels,
    "multi_label": _score_multi,
    "vqa_closed": _score_closed,
    "vqa_open": _score_open,
    "mcq": _score_mcq,
    "report": _score_report,
    "region_recognition": _score_labels,
    "region_detection": _score_region_box,
    "lesion_localisation": _score_box,
    "region_vqa": _score_region_vqa,
    "guardrail": _score_guardrail,
    "prognosis": _score_prognosis,
}


def score_family(family: str, items: Sequence[FamilyItem], answers: Sequence[str]) -> dict[str, float]:
    """The family's metrics (first key = the headline metric) for answers to its items.

    Raises:
        KeyError: unknown family.
        ValueError: no item, or ``answers`` not aligned with ``items``.
    """
    if family not in _SCORERS:
        raise KeyError(f"unknown task family {family!r}; known: {list(_SCORERS)}")
    if not items:
        raise ValueError(f"{family}: no held-out item to score")
    if len(items) != len(answers):
        raise ValueError(f"{family}: {len(answers)} answers for {len(items)} items")
    return _SCORERS[family](items, answers)


def score_all(items: Sequence[FamilyItem], answers: Sequence[str]) -> dict[str, dict[str, float]]:
    """:func:`score_family` for every family present in ``items`` (answers aligned with items)."""
    if len(items) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(items)} items")
    grouped: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for it, a in zip(items, answers):
        grouped[it.family][0].append(it)
        grouped[it.family][1].append(a)
    return {fam: score_family(fam, *grouped[fam]) for fam in FAMILIES if fam in grouped}


def majority_predictions(items: Sequence[FamilyItem], majority: Mapping[str, str]) -> list[str]:
    """The majority answer of each item's family (guardrail items use the guardrail majority)."""
    missing = sorted({it.family for it in items} - set(majority))
    if missing:
        raise ValueError(f"no training answer for families {missing}; cannot form the majority baseline")
    return [majority[it.family] for it in items]


def model_predictions(
    model,
    processor,
    items: Sequence[FamilyItem],
    *,
    data_root: str | os.PathLike,
    batch_size: int = 32,
    progress: bool = True,
) -> list[str]:
    """Greedy answers of ``model`` to every item, batched per family (each family's token budget)."""
    from tqdm.auto import tqdm

    from model.generation import batched_greedy

    answers: list[str | None] = [None] * len(items)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it.max_new_tokens].append(i)
    bar = tqdm(total=len(items), desc="evaluating", disable=not progress)
    for budget, idx in sorted(groups.items()):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            enc = [processor.encode_prompt(items[i].row, data_root) for i in chunk]
            for i, ans in zip(
                chunk, batched_greedy(model, processor, enc, max_new_tokens=budget, batch_size=batch_size)
            ):
                answers[i] = ans.text
            bar.update(len(chunk))
    bar.close()
    return [a if a is not None else "" for a in answers]


def headline(scores: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[str, float]]:
    """``family -> (metric, value)`` of each family's headline (first) metric."""
    return {fam: next(iter(m.items())) for fam, m in scores.items()}


#: metrics shown under a family's headline in :func:`write_table`: refusal accuracy is the target's
#: metric, but refusing everything scores 1.0 on it; balanced accuracy (absent and present regions
#: alike) is what a constant answer cannot win
SECOND_TABLE_METRICS: dict[str, tuple[str, ...]] = {"guardrail": ("balanced_accuracy",)}


def write_table(
    path: str | os.PathLike,
    columns: Mapping[str, Mapping[str, Mapping[str, float]]],
    counts: Mapping[str, int],
) -> Path:
    """A markdown table: one row per family, one column per scored system (headline metrics).

    A family of :data:`SECOND_TABLE_METRICS` gets one more row per listed metric that every system
    has.
    """
    names = list(columns)
    lines = ["| family | n | metric | " + " | ".join(names) + " |", "|---|---:|---|" + "---:|" * len(names)]
    first = columns[names[0]]
    for fam in FAMILIES:
        if fam not in first:
            continue
        metric = next(iter(first[fam]))
        shown = [metric] + [
            m for m in SECOND_TABLE_METRICS.get(fam, ()) if all(m in columns[n][fam] for n in names)
        ]
        for m in shown:
            vals = " | ".join(f"{columns[n][fam][m]:.3f}" for n in names)
            lines.append(f"| {fam} | {counts[fam]} | {m} | {vals} |")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
