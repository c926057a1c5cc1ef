"""Evaluation metrics of the benchmark suite, each stating its convention in its module docstring.

Modules: :mod:`~validation.metrics.classification` (macro-F1, free text -> label),
:mod:`~validation.metrics.vqa` (MultiMedEval VQA scores), :mod:`~validation.metrics.mcq` (multiple
choice), :mod:`~validation.metrics.report` (BLEU, ROUGE-L, METEOR, CheXpert-F1),
:mod:`~validation.metrics.grounding` (IoU, mean IoU, recall@0.5, region recognition),
:mod:`~validation.metrics.region_vqa` (Med-GRIT-style region VQA), :mod:`~validation.metrics.guardrail`
(refusal accuracy).

A metric that cannot be computed raises :class:`MetricUndefinedError` (from
:mod:`validation.report_labeler`); it never returns a placeholder number.
"""

from validation.metrics.classification import (
    accuracy,
    macro_f1,
    map_answer_to_label,
    map_answer_to_labels,
    multilabel_macro_f1,
    per_label_f1,
)
from validation.metrics.grounding import (
    HIT_IOU,
    check_box,
    hit_rate,
    iou,
    match_boxes,
    mean_iou,
    recall_at_05,
    recall_at_iou,
    region_recognition_f1,
)
from validation.metrics.guardrail import guardrail_scores, is_refusal
from validation.metrics.mcq import mcq_accuracy, mcq_parse
from validation.metrics.region_vqa import REGION_VQA_TASKS, caption_score, region_vqa_scores
from validation.metrics.report import (
    bleu,
    lcs_length,
    meteor,
    report_scores,
    report_tokens,
    rouge_l,
    sentence_bleu,
)
from validation.metrics.vqa import VQAItemScore, vqa_bleu1, vqa_clean, vqa_item_score, vqa_scores
from validation.report_labeler import MetricUndefinedError

__all__ = [
    "HIT_IOU",
    "REGION_VQA_TASKS",
    "MetricUndefinedError",
    "VQAItemScore",
    "accuracy",
    "bleu",
    "caption_score",
    "check_box",
    "guardrail_scores",
    "hit_rate",
    "iou",
    "is_refusal",
    "lcs_length",
    "macro_f1",
    "map_answer_to_label",
    "map_answer_to_labels",
    "match_boxes",
    "mcq_accuracy",
    "mcq_parse",
    "mean_iou",
    "meteor",
    "multilabel_macro_f1",
    "per_label_f1",
    "recall_at_05",
    "recall_at_iou",
    "region_recognition_f1",
    "region_vqa_scores",
    "report_scores",
    "report_tokens",
    "rouge_l",
    "sentence_bleu",
    "vqa_bleu1",
    "vqa_clean",
    "vqa_item_score",
    "vqa_scores",
]
