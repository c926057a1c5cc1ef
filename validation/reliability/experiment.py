"""The reliability-index experiments on held-out curated data, and the entry point of ``uncertainty_calibration``.

**VQA** (:func:`run_vqa_experiment`): for each held-out ``vqa_closed`` / ``vqa_open`` question the
greedy answer is scored with :func:`validation.metrics.vqa_item_score` (MultiMedEval: closed recall
>= 0.4, open recall >= 0.75); ONE draw of ``max(ms)`` (20) samples (temperature 1.0, top-p 0.9) is
clustered once (yes/no rule for closed questions, the open back-end otherwise) and M = 5, 10, 15, 20
are its **prefixes** (the first M samples; see :mod:`validation.reliability.vqa`). Per estimator
and M: AUROC of the uncertainty for a wrong answer (wrong = positive) and the prediction-rejection
ratio (:mod:`validation.uncertainty.calibration`).

**Report sentences** (:func:`run_sentence_experiment`): the model writes a report (greedy) for each
held-out ``report`` item; its sentences are probed (:func:`validation.reliability.report.assess_report`,
M answers per question) and judged against the reference report. Per number of questions
k = 1..5 and per score: AUROC of ``U_k`` for an *incorrect* sentence (incorrect = positive), on the
``test`` split (the paper's Fig. 4b). Reliability levels: thresholds calibrated on the ``val``
split's sentences (``U_kmax``, semantic entropy), error rate per level on the ``test`` split.

A number that cannot be computed (every answer right, no probed sentence, ...) raises
:class:`validation.report_labeler.MetricUndefinedError`; nothing is replaced by a placeholder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from validation.metrics.vqa import vqa_item_score
from validation.reliability.report import (
    SENTENCE_SCORES,
    SentenceReliability,
    assess_report,
    calibrate_sentence_levels,
    sentence_level_errors,
)
from validation.reliability.sentences import QuestionWriter, RuleQuestionWriter
from validation.reliability.tables import write_outputs
from validation.reliability.vqa import (
    ESTIMATORS,
    AnswerSampler,
    ModelSampler,
    answer_reliability,
    equivalence_for,
    item_prompt,
)
from validation.report_labeler import MetricUndefinedError
from validation.task_families import FamilyItem, collect_items
from validation.uncertainty import (
    EmbeddingEquivalence,
    Equivalence,
    ReliabilityThresholds,
    auroc,
    prediction_rejection_ratio,
)

__all__ = [
    "run_experiments",
    "run_sentence_experiment",
    "run_uncertainty_calibration",
    "run_vqa_experiment",
    "select_items",
]


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled)


def select_items(
    shards: str | os.PathLike, *, split: str, n_vqa: int, n_reports: int, seed: int = 0
) -> tuple[list[FamilyItem], list[FamilyItem]]:
    """``(vqa items, report items)`` of one split: ``ceil(n_vqa/2)`` closed + the rest open (topped up
    from the other family when one runs short), and ``n_reports`` reports; seeded samples.

    Raises:
        ValueError: the split has no curated row (from :func:`validation.task_families.collect_items`).
    """
    items = collect_items(shards, split=split, per_family=max(n_vqa, n_reports, 1), seed=seed)
    closed = [it for it in items if it.family == "vqa_closed"]
    opened = [it for it in items if it.family == "vqa_open"]
    n_closed = min(len(closed), max(math.ceil(n_vqa / 2), n_vqa - len(opened)))
    vqa = closed[:n_closed] + opened[: n_vqa - n_closed]
    reports = [it for it in items if it.family == "report"][:n_reports]
    return vqa, reports


def run_vqa_experiment(
    sampler: AnswerSampler,
    items: Sequence[FamilyItem],
    *,
    data_root: str | os.PathLike,
    ms: Sequence[int] = (5, 10, 15, 20),
    open_equivalence: Equivalence,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """AUROC (wrong = positive) and PRR per estimator per M (module docstring).

    Args:
        sampler: who answers.
        items: ``vqa_closed`` / ``vqa_open`` items.
        data_root: the profile's data root (image paths are relative to it).
        ms: the sample counts scored (prefixes of one draw of ``max(ms)`` samples).
        open_equivalence: clustering back-end of open questions.
        seed: sampling seed of the first question (+1 per question).
        progress: show a progress bar.

    Returns:
        ``(summary, per-question records)``; summary keys ``n``, ``n_closed``, ``n_wrong``,
        ``accuracy``, ``ms``, ``samples_drawn``, ``auroc`` / ``prr`` (``{estimator: {M: value}}``).

    Raises:
        ValueError: no item, a non-VQA item, or a bad ``ms``.
        MetricUndefinedError: every greedy answer right, or every one wrong.
    """
    if not items:
        raise ValueError("run_vqa_experiment: no VQA item")
    if not ms or min(ms) < 1:
        raise ValueError(f"ms must be positive sample counts, got {ms}")
    records = []
    with _bar(len(items), "vqa reliability", progress) as bar:
        for i, it in enumerate(items):
            records.append(
                _vqa_record(
                    sampler, it, data_root=data_root, ms=ms, open_equivalence=open_equivalence, seed=seed + i
                )
            )
            bar.update()
    return _vqa_summary(records, ms), records


def _vqa_record(sampler, it: FamilyItem, *, data_root, ms, open_equivalence, seed) -> dict[str, Any]:
    """Greedy answer and its correctness, ONE draw of ``max(ms)`` samples, the scores of each prefix."""
    if it.family not in ("vqa_closed", "vqa_open"):
        raise ValueError(f"item {it.row.get('id')}: family {it.family!r} is not a VQA family")
    images, prompt = item_prompt(it.row, data_root)
    greedy = sampler.greedy(images, prompt, max_new_tokens=it.max_new_tokens)
    rel = answer_reliability(
        sampler, images=images, prompt=prompt, num_samples=max(ms), max_new_tokens=it.max_new_tokens,
        equivalence=equivalence_for(it.gold, open_equivalence), seed=seed,
    )  # fmt: skip
    return {
        "id": it.row.get("id"), "family": it.family, "gold": it.gold, "answer": greedy.text,
        "correct": vqa_item_score(it.gold, greedy.text).correct, "samples": list(rel.texts),
        "clusters": list(rel.cluster_ids), "scores": {str(m): rel.scores(m) for m in ms},
    }  # fmt: skip


def _vqa_summary(records: list[dict[str, Any]], ms: Sequence[int]) -> dict[str, Any]:
    wrong = [not r["correct"] for r in records]
    n_wrong = sum(wrong)
    if n_wrong in (0, len(records)):
        raise MetricUndefinedError(
            f"VQA uncertainty: {n_wrong} of {len(records)} greedy answers are wrong; AUROC and PRR need "
            "both right and wrong answers (ask more questions)"
        )
    out: dict[str, Any] = {
        "n": len(records), "n_closed": sum(r["family"] == "vqa_closed" for r in records), "n_wrong": n_wrong,
        "accuracy": 1 - n_wrong / len(records), "ms": list(ms), "samples_drawn": max(ms),
        "auroc": {e: {} for e in ESTIMATORS}, "prr": {e: {} for e in ESTIMATORS},
    }  # fmt: skip
    for m in ms:
        for e in ESTIMATORS:
            values = [r["scores"][str(m)][e] for r in records]
            out["auroc"][e][str(m)] = auroc(wrong, values)
            out["prr"][e][str(m)] = prediction_rejection_ratio(wrong, values)
    return out


def _probe(sampler, items, *, data_root, writer, num_samples, max_questions, seed, progress, desc):
    out: list[SentenceReliability] = []
    with _bar(len(items), desc, progress) as bar:
        for i, it in enumerate(items):
            if it.family != "report":
                raise ValueError(f"item {it.row.get('id')}: family {it.family!r} is not 'report'")
            images, prompt = item_prompt(it.row, data_root)
            report = sampler.greedy(images, prompt, max_new_tokens=it.max_new_tokens).text
            out += assess_report(
                sampler, images=images, report=report, writer=writer, num_samples=num_samples,
                max_questions=max_questions, reference=it.gold, seed=seed + 1000 * i,
            )  # fmt: skip
            bar.update()
    return out


def _sentence_record(s: SentenceReliability, k_max: int) -> dict[str, Any]:
    return {
        "sentence": s.sentence, "labels": dict(s.labels), "correct": s.correct,
        "questions": [{"text": q.question.text, "expected": q.question.expected, "answers": list(q.texts),
                       "agree": [c == 0 for c in q.cluster_ids]} for q in s.questions],
        "uncertainty": {sc: s.uncertainty(min(k_max, len(s.questions)), sc) for sc in SENTENCE_SCORES},
    }  # fmt: skip


def run_sentence_experiment(
    sampler: AnswerSampler,
    *,
    val_items: Sequence[FamilyItem],
    test_items: Sequence[FamilyItem],
    data_root: str | os.PathLike,
    questions: Sequence[int] = (1, 2, 3, 4, 5),
    num_samples: int = 10,
    writer: QuestionWriter | None = None,
    target_high: float = 0.1,
    target_medium: float = 0.3,
    level_score: str = "semantic_entropy",
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """AUROC of ``U_k`` for an incorrect sentence per k and score, and the calibrated levels.

    Args:
        sampler: who writes the reports and answers the questions.
        val_items: ``report`` items of the calibration split.
        test_items: ``report`` items of the held-out split.
        data_root: the profile's data root.
        questions: the k values (questions per sentence) scored.
        num_samples: M answers per question.
        writer: question writer (default :class:`RuleQuestionWriter`).
        target_high: error-rate target of the high level.
        target_medium: error-rate target of the medium level.
        level_score: the score the levels are calibrated on (``U_kmax``).
        seed: sampling seed.
        progress: show progress bars.

    Returns:
        ``(summary, per-sentence records)``; summary keys ``n_reports``, ``n_sentences``,
        ``n_incorrect`` (per split), ``questions``, ``samples_per_question``, ``auroc``
        (``{score: {k: value}}``), ``levels`` (``score``, ``k``, ``thresholds`` (cut points, None for
        an empty level, listed in ``empty_levels``), ``validation``, ``held_out``).

    Raises:
        MetricUndefinedError: no probed sentence in a split, or all held-out sentences correct
            (or all incorrect).
    """
    if not questions or min(questions) < 1:
        raise ValueError(f"questions must be positive counts, got {questions}")
    writer = writer or RuleQuestionWriter()
    k_max = max(questions)
    common = {"data_root": data_root, "writer": writer, "num_samples": num_samples, "max_questions": k_max}
    val = _probe(sampler, val_items, **common, seed=seed, progress=progress, desc="sentences (val)")
    test = _probe(
        sampler, test_items, **common, seed=seed + 10**6, progress=progress, desc="sentences (test)"
    )
    for name, split, items in (("val", val, val_items), ("test", test, test_items)):
        if not split:
            raise MetricUndefinedError(
                f"sentence reliability: none of the {len(items)} generated {name} reports has a sentence "
                "with a labelled finding, so no sentence could be probed or judged"
            )
    summary: dict[str, Any] = {
        "n_reports": {"val": len(val_items), "test": len(test_items)},
        "n_sentences": {"val": len(val), "test": len(test)},
        "n_incorrect": {"val": sum(not s.correct for s in val), "test": sum(not s.correct for s in test)},
        "questions": list(questions), "samples_per_question": num_samples,
        "auroc": _sentence_aurocs(test, questions),
    }  # fmt: skip
    thresholds = calibrate_sentence_levels(
        val, k=k_max, score=level_score, target_high=target_high, target_medium=target_medium
    )
    summary["levels"] = {
        "score": level_score, "k": k_max, "thresholds": _threshold_record(thresholds),
        "validation": sentence_level_errors(val, thresholds, k=k_max, score=level_score),
        "held_out": sentence_level_errors(test, thresholds, k=k_max, score=level_score),
    }  # fmt: skip
    records = [
        {"split": n, **_sentence_record(s, k_max)} for n, ss in (("val", val), ("test", test)) for s in ss
    ]
    return summary, records


def _threshold_record(th: ReliabilityThresholds) -> dict[str, Any]:
    """JSON form of the cut points: an empty level's cut (``-inf``, or ``medium == high``) is None."""
    empty = [
        lvl
        for lvl, is_empty in (("high", th.high == -math.inf), ("medium", th.medium == th.high))
        if is_empty
    ]
    return {
        "high": None if "high" in empty else th.high,
        "medium": None if "medium" in empty else th.medium,
        "target_high": th.target_high,
        "target_medium": th.target_medium,
        "empty_levels": empty,
    }


def _sentence_aurocs(
    test: list[SentenceReliability], questions: Sequence[int]
) -> dict[str, dict[str, float]]:
    """``{score: {k: AUROC of U_k for an incorrect sentence}}`` (a sentence with < k questions uses all)."""
    incorrect = [not s.correct for s in test]
    if sum(incorrect) in (0, len(test)):
        raise MetricUndefinedError(
            f"sentence AUROC: {sum(incorrect)} of {len(test)} held-out sentences are incorrect; "
            "AUROC needs both correct and incorrect sentences"
        )
    return {
        sc: {
            str(k): auroc(incorrect, [s.uncertainty(min(k, len(s.questions)), sc) for s in test])
            for k in questions
        }
        for sc in SENTENCE_SCORES
    }


def run_experiments(
    sampler: AnswerSampler,
    *,
    shards: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_vqa: int,
    n_reports: int,
    ms: Sequence[int] = (5, 10, 15, 20),
    questions: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    open_equivalence: Equivalence | None = None,
    sentence_samples: int = 10,
    target_high: float = 0.1,
    target_medium: float = 0.3,
    progress: bool = False,
) -> dict[str, Any]:
    """Both experiments with any sampler; tables and plots written to ``out_dir`` (see
    :func:`run_uncertainty_calibration`, which calls this with the model's sampler)."""
    open_eq = open_equivalence if open_equivalence is not None else EmbeddingEquivalence()
    vqa_test, rep_test = select_items(shards, split="test", n_vqa=n_vqa, n_reports=n_reports, seed=seed)
    _, rep_val = select_items(shards, split="val", n_vqa=0, n_reports=n_reports, seed=seed)
    vqa, vqa_records = run_vqa_experiment(
        sampler, vqa_test, data_root=data_root, ms=ms, open_equivalence=open_eq, seed=seed, progress=progress
    )
    sentences, sentence_records = run_sentence_experiment(
        sampler, val_items=rep_val, test_items=rep_test, data_root=data_root, questions=questions,
        num_samples=sentence_samples, target_high=target_high, target_medium=target_medium, seed=seed,
        progress=progress,
    )  # fmt: skip
    result: dict[str, Any] = {
        "settings": {
            "seed": seed, "temperature": getattr(sampler, "temperature", None), "top_p": getattr(sampler, "top_p", None),
            "open_equivalence": type(open_eq).__name__, "closed_equivalence": "YesNoEquivalence",
            "question_writer": "RuleQuestionWriter", "vqa_split": "test", "calibration_split": "val",
        },
        "vqa": vqa,
        "sentences": sentences,
    }  # fmt: skip
    result["files"] = write_outputs(result, {"vqa": vqa_records, "sentences": sentence_records}, out_dir)
    return result


def run_uncertainty_calibration(
    model: Any,
    processor: Any,
    *,
    shards: str | os.PathLike,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_vqa: int,
    n_reports: int,
    ms: Sequence[int] = (5, 10, 15, 20),
    questions: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    open_equivalence: Equivalence | None = None,
    sentence_samples: int = 10,
    target_high: float = 0.1,
    target_medium: float = 0.3,
    progress: bool = False,
) -> dict[str, Any]:
    """The reliability-index experiments of a checkpoint: the ``uncertainty_calibration`` asset's body.

    Args:
        model: the VLM (eval mode).
        processor: its processor.
        shards: curated instruction shards (folder or file).
        data_root: the profile's data root (image paths are relative to it).
        out_dir: where ``uncertainty_table.md``/``.json``, ``uncertainty_items.json`` and the plots
            go (each file written atomically, all rendered before the first is written).
        n_vqa: held-out VQA questions (half closed, half open).
        n_reports: reports per split (``val`` for calibration, ``test`` held out).
        ms: VQA sample counts (prefixes of one draw of ``max(ms)``).
        questions: questions per sentence scored (Fig. 4b).
        seed: item sampling and generation seed.
        open_equivalence: back-end for open answers (default: all-MiniLM-L6-v2 embeddings).
        sentence_samples: M answers per sentence question.
        target_high: error-rate target of the high reliability level.
        target_medium: error-rate target of the medium level.
        progress: show progress bars.

    Returns:
        JSON-able ``{"settings", "vqa", "sentences", "files"}`` (summaries; per-item records are in
        ``uncertainty_items.json``).

    Raises:
        MetricUndefinedError: a reported number cannot be computed (the message says which).
    """
    return run_experiments(
        ModelSampler(model, processor), shards=shards, data_root=data_root, out_dir=Path(out_dir),
        n_vqa=n_vqa, n_reports=n_reports, ms=ms, questions=questions, seed=seed,
        open_equivalence=open_equivalence, sentence_samples=sentence_samples, target_high=target_high,
        target_medium=target_medium, progress=progress,
    )  # fmt: skip
