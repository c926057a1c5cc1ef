"""The reliability index of answers and report sentences, and its evaluation (issue 4, part 3).

Modules: :mod:`~validation.reliability.vqa` (one VQA answer: M samples, clusters, the three
estimators; the :class:`AnswerSampler` protocol), :mod:`~validation.reliability.sentences`
(report sentences and their yes/no questions), :mod:`~validation.reliability.report`
(sentence-level reliability, paper eq. 7, and calibrated levels),
:mod:`~validation.reliability.experiment` (the VQA and sentence experiments;
:func:`run_uncertainty_calibration`, the ``uncertainty_calibration`` asset's entry point) and
:mod:`~validation.reliability.tables` (markdown, JSON and plots). CLI: ``python -m validation.reliability``.
"""

from validation.reliability.experiment import (
    run_experiments,
    run_sentence_experiment,
    run_uncertainty_calibration,
    run_vqa_experiment,
    select_items,
)
from validation.reliability.report import (
    AGREE,
    DISAGREE,
    SENTENCE_SCORES,
    QuestionAnswers,
    SentenceReliability,
    agreement_clusters,
    assess_report,
    calibrate_sentence_levels,
    sentence_correct,
    sentence_level_errors,
)
from validation.reliability.sentences import (
    PromptedQuestionWriter,
    Question,
    QuestionWriter,
    RuleQuestionWriter,
    SentenceFinding,
    sentence_findings,
    split_sentences,
)
from validation.reliability.tables import markdown_tables, plot_sentence_auroc, plot_vqa_auroc, write_outputs
from validation.reliability.vqa import (
    ESTIMATORS,
    AnswerReliability,
    AnswerSampler,
    ModelSampler,
    answer_reliability,
    equivalence_for,
    item_prompt,
)

__all__ = [
    "AGREE",
    "DISAGREE",
    "ESTIMATORS",
    "SENTENCE_SCORES",
    "AnswerReliability",
    "AnswerSampler",
    "ModelSampler",
    "PromptedQuestionWriter",
    "Question",
    "QuestionAnswers",
    "QuestionWriter",
    "RuleQuestionWriter",
    "SentenceFinding",
    "SentenceReliability",
    "agreement_clusters",
    "answer_reliability",
    "assess_report",
    "calibrate_sentence_levels",
    "equivalence_for",
    "item_prompt",
    "markdown_tables",
    "plot_sentence_auroc",
    "plot_vqa_auroc",
    "run_experiments",
    "run_sentence_experiment",
    "run_uncertainty_calibration",
    "run_vqa_experiment",
    "select_items",
    "sentence_correct",
    "sentence_findings",
    "sentence_level_errors",
    "split_sentences",
    "write_outputs",
]
