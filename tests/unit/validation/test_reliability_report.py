"""Tests of validation.reliability.report: agree/disagree clustering, U_k, correctness, levels.

Hand-worked values (natural logarithms):

* answers ["Yes", "yes, there is", "No", "the liver"] to a question expecting "yes" ->
  clusters [agree, agree, disagree, disagree]; equal likelihoods -> discrete and semantic entropy
  ln 2 = 0.693147; disagreement 2/4.
* two answers with mean token log-probs ln 0.6 and ln 0.2 in different clusters -> p = (3/4, 1/4),
  semantic entropy -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335; discrete ln 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import pytest

from validation.reliability.report import (
    AGREE,
    DISAGREE,
    QuestionAnswers,
    SentenceReliability,
    agreement_clusters,
    assess_report,
    calibrate_sentence_levels,
    sentence_correct,
    sentence_level_errors,
)
from validation.reliability.sentences import Question, RuleQuestionWriter
from validation.report_labeler import MetricUndefinedError


class Answer(NamedTuple):
    """The fields of model.generation.SampledAnswer the reliability code reads."""

    text: str
    token_logprobs: list[float]


Q_YES = Question("Is there a nodule in this image?", "yes", "presence", "Lung Lesion")


def _qa(question: Question, texts: list[str], logps: list[float] | None = None) -> QuestionAnswers:
    logps = logps or [-0.5] * len(texts)
    return QuestionAnswers(
        question,
        tuple(texts),
        tuple((lp,) for lp in logps),
        tuple(agreement_clusters(texts, question.expected)),
    )


def test_agreement_clusters_by_polarity():
    assert agreement_clusters(["Yes", "yes, there is", "No", "the liver"], "yes") == [
        AGREE,
        AGREE,
        DISAGREE,
        DISAGREE,
    ]
    assert agreement_clusters(["No.", "no nodule is seen", "Yes"], "no") == [AGREE, AGREE, DISAGREE]
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        agreement_clusters(["yes"], "perhaps")


def test_question_scores_hand_worked():
    qa = _qa(Q_YES, ["Yes", "yes, there is", "No", "the liver"])
    assert qa.score("discrete_semantic_entropy") == pytest.approx(math.log(2))
    assert qa.score("semantic_entropy") == pytest.approx(math.log(2))
    assert qa.score("disagreement") == 0.5
    # within-cluster: each cluster holds two equal samples -> ln 2 inside each, weights 1/2 + 1/2
    assert qa.score("within_cluster_entropy") == pytest.approx(math.log(2))
    weighted = _qa(Q_YES, ["Yes", "No"], [math.log(0.6), math.log(0.2)])
    assert weighted.score("semantic_entropy") == pytest.approx(0.562335, abs=1e-6)
    assert weighted.score("discrete_semantic_entropy") == pytest.approx(math.log(2))
    assert _qa(Q_YES, ["Yes"] * 5).score("semantic_entropy") == 0.0
    with pytest.raises(KeyError, match="unknown sentence score"):
        qa.score("variance")


def test_sentence_uncertainty_is_the_mean_over_the_first_k_questions():
    s = SentenceReliability(
        "There is a nodule.", {"Lung Lesion": 1},
        (_qa(Q_YES, ["Yes"] * 4), _qa(Q_YES, ["Yes", "No", "Yes", "No"]), _qa(Q_YES, ["no"] * 4)),
    )  # fmt: skip
    assert s.uncertainty(1) == 0.0
    assert s.uncertainty(2) == pytest.approx(math.log(2) / 2)
    assert s.uncertainty(3) == pytest.approx(math.log(2) / 3)  # consistent disagreement has entropy 0
    assert s.uncertainty(3, "disagreement") == pytest.approx((0 + 0.5 + 1) / 3)
    with pytest.raises(ValueError, match="has 3 questions, 4 asked for"):
        s.uncertainty(4)


def test_sentence_correct_rules():
    ref = {"Lung Lesion": 1, "Pleural Effusion": 0, "Edema": None}
    assert sentence_correct({"Lung Lesion": 1}, ref)
    assert sentence_correct({"Lung Lesion": -1}, ref)  # uncertain counts as positive
    assert not sentence_correct({"Pleural Effusion": 1}, ref)
    assert sentence_correct({"Edema": 0}, ref)  # not mentioned in the reference = not positive
    assert sentence_correct({"Cardiomegaly": 0}, ref)
    assert not sentence_correct({"Lung Lesion": 1, "Pleural Effusion": -1}, ref)  # one wrong label is enough
    assert not sentence_correct({"Pleural Effusion": 0}, {"Pleural Effusion": -1})
    with pytest.raises(ValueError, match="no labelled observation"):
        sentence_correct({}, ref)


class ScriptedSampler:
    """Answers by question text; records every call."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.calls = answers, []

    def sample(self, images, prompt, *, num_samples, max_new_tokens, seed):
        self.calls.append((tuple(images), prompt, num_samples, max_new_tokens, seed))
        texts = (self.answers.get(prompt, ["Yes"]) * num_samples)[:num_samples]
        return [Answer(t, [-0.5]) for t in texts]

    def greedy(self, images, prompt, *, max_new_tokens):  # pragma: no cover - not used here
        raise AssertionError("assess_report must not generate the report itself")


def test_assess_report_probes_judges_and_skips_sentences_without_findings():
    sampler = ScriptedSampler(
        {
            "Is there pleural effusion in this image?": ["Yes", "No"],
            "Does this image show pleural effusion?": ["No"],
        }
    )
    out = assess_report(
        sampler, images=[Path("img.png")], writer=RuleQuestionWriter(), num_samples=4, max_questions=2,
        report="Findings: A nodule in the left lung. The lungs are otherwise clear. No pleural effusion is seen.",
        reference="There is a nodule in the left lung. There is a small pleural effusion.", seed=7,
    )  # fmt: skip
    assert [s.sentence for s in out] == ["A nodule in the left lung.", "No pleural effusion is seen."]
    assert [s.correct for s in out] == [True, False]
    assert [s.labels for s in out] == [{"Lung Lesion": 1}, {"Pleural Effusion": 0}]
    assert [c[1] for c in sampler.calls] == [
        "Is there a nodule in this image?",
        "Is there a nodule in the left lung?",
        "Is there pleural effusion in this image?",
        "Does this image show pleural effusion?",
    ]
    assert {c[2] for c in sampler.calls} == {4} and [c[4] for c in sampler.calls] == [7, 8, 9, 10]
    assert out[0].uncertainty(2) == 0.0
    # effusion: q1 "Yes","No","Yes","No" vs expected "no" -> ln 2; q2 all "No" agree -> 0
    assert out[1].uncertainty(2) == pytest.approx(math.log(2) / 2)
    assert out[1].questions[1].cluster_ids == (AGREE,) * 4
    no_ref = assess_report(sampler, images=[], report="No edema.", writer=RuleQuestionWriter(), num_samples=1,
                           max_questions=1)  # fmt: skip
    assert no_ref[0].correct is None


def _sentence(disagreeing: int, correct: bool) -> SentenceReliability:
    """One question, 10 answers of which ``disagreeing`` say no: disagreement = disagreeing / 10."""
    qa = _qa(Q_YES, ["Yes"] * (10 - disagreeing) + ["No"] * disagreeing)
    return SentenceReliability("There is a nodule.", {"Lung Lesion": 1}, (qa,), correct)


def test_levels_calibrated_on_validation_and_scored_on_held_out():
    """calibrate_levels' docstring example: u 0.1..0.6, wrong [0,0,1,0,1,1], targets 0 / 0.5 -> high 0.2, medium 0.4."""
    val = [_sentence(d, c) for d, c in zip(range(1, 7), [True, True, False, True, False, False])]
    th = calibrate_sentence_levels(val, k=5, score="disagreement", target_high=0.0, target_medium=0.5)
    assert (th.high, th.medium) == (pytest.approx(0.2), pytest.approx(0.4))
    held_out = [
        _sentence(0, True),
        _sentence(3, True),
        _sentence(4, False),
        _sentence(9, False),
        _sentence(8, True),
    ]
    errors = sentence_level_errors(held_out, th, k=5, score="disagreement")
    assert errors == {
        "high": {"n": 1, "error_rate": 0.0},
        "medium": {"n": 2, "error_rate": 0.5},
        "low": {"n": 2, "error_rate": 0.5},
    }
    with pytest.raises(ValueError, match="correctness"):
        calibrate_sentence_levels([_sentence(1, None)], k=1, target_high=0.1, target_medium=0.2)  # type: ignore[arg-type]
    with pytest.raises(MetricUndefinedError):
        calibrate_sentence_levels([], k=1, target_high=0.1, target_medium=0.2)


def test_summary_metrics_and_missing_aurocs():
    from validation.reliability.summary import missing_aurocs, uncertainty_metrics

    result = {
        "vqa": {
            "auroc": {"semantic_entropy": {"5": 0.75, "10": 0.8}},
            "prr": {"semantic_entropy": {"5": 0.5, "10": None}},
        },
        "sentences": {"auroc": {"semantic_entropy": {"1": 0.6, "2": float("nan")}}},
    }
    metrics = uncertainty_metrics(result)
    assert metrics["uncertainty/vqa/semantic_entropy/auroc_m10"] == 0.8
    assert "uncertainty/vqa/semantic_entropy/prr_m10" not in metrics
    assert missing_aurocs(result) == ["sentences/semantic_entropy/2"]
