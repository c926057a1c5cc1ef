"""Sentence-level reliability of a generated report (XMedGPT's reliability index for reports, eq. 7).

For each sentence ``s`` of a report (:func:`~validation.reliability.sentences.split_sentences`) a
:class:`~validation.reliability.sentences.QuestionWriter` writes yes/no questions ``q_1..q_K``; each
is asked ``M`` times on the image (one batched sampling call per question). Every answer is put in
one of two clusters by :func:`agreement_clusters`: **agree** (its yes/no polarity,
:func:`validation.uncertainty.answer_polarity`, is the answer the sentence implies) or **disagree**
(the other polarity, or no polarity at all: an answer that does not confirm the sentence).

Uncertainty of ``s`` with its first ``k`` questions (our reading of the paper's equation 7, which
follows the long-form procedure of Farquhar et al., Nature 2024: entropy per question, averaged
over the sentence's questions):

    U_k(s) = (1/k) * sum_{j=1..k} H(answers to q_j over {agree, disagree})

with ``H`` one of the estimators of :data:`~validation.reliability.vqa.ESTIMATORS`
(``semantic_entropy``, the likelihood-weighted one, is the headline). :data:`SENTENCE_SCORES` adds
``disagreement`` (mean share of answers that do not agree), reported beside the entropies as a
comparison: an entropy cannot see a model that *consistently* contradicts its own sentence.

**Sentence correctness** (:func:`sentence_correct`): every observation the labeler reads in the
sentence has the same positivity in the sentence as in the reference report, where positive means
label 1 or -1 (CheXpert "U-ones", as :func:`validation.report_labeler.chexpert_f1`) and an
observation the reference does not mention counts as not positive.

**Levels** (:func:`calibrate_sentence_levels`): thresholds from
:func:`validation.uncertainty.calibrate_levels` (its rule: ``high`` = the largest cut whose
sentences at or below it have error rate <= ``target_high``; ``medium`` likewise above ``high``
with ``target_medium``) on a validation split, error rate per level on a held-out split
(:func:`validation.uncertainty.level_error_rates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from validation.reliability.sentences import Question, QuestionWriter, sentence_findings, split_sentences
from validation.reliability.vqa import ESTIMATORS, AnswerSampler
from validation.report_labeler import Vocabulary, label_report
from validation.uncertainty import (
    ReliabilityThresholds,
    answer_polarity,
    calibrate_levels,
    level_error_rates,
)

__all__ = [
    "AGREE",
    "DISAGREE",
    "SENTENCE_SCORES",
    "QuestionAnswers",
    "SentenceReliability",
    "agreement_clusters",
    "assess_report",
    "calibrate_sentence_levels",
    "sentence_correct",
    "sentence_level_errors",
]

AGREE, DISAGREE = 0, 1
#: Per-question scores of a sentence, averaged over its first k questions.
SENTENCE_SCORES: tuple[str, ...] = (*ESTIMATORS, "disagreement")


def agreement_clusters(answers: Sequence[str], expected: str) -> list[int]:
    """:data:`AGREE` for an answer whose polarity is ``expected`` ("yes"/"no"), else :data:`DISAGREE`.

    Example:
        >>> agreement_clusters(["Yes.", "No, it is clear.", "left lung", "yes"], "yes")
        [0, 1, 1, 0]
    """
    if expected not in ("yes", "no"):
        raise ValueError(f"expected answer must be 'yes' or 'no', got {expected!r}")
    return [AGREE if answer_polarity(a) == expected else DISAGREE for a in answers]


@dataclass(frozen=True)
class QuestionAnswers:
    """The M sampled answers to one question about a sentence.

    Attributes:
        question: the question (with the answer that agrees with the sentence).
        texts: the sampled answers.
        token_logprobs: per answer, its token log-probabilities.
        cluster_ids: per answer, :data:`AGREE` or :data:`DISAGREE`.
    """

    question: Question
    texts: tuple[str, ...]
    token_logprobs: tuple[tuple[float, ...], ...]
    cluster_ids: tuple[int, ...]

    def score(self, name: str) -> float:
        """One of :data:`SENTENCE_SCORES` for this question's answers."""
        if name == "disagreement":
            return sum(c == DISAGREE for c in self.cluster_ids) / len(self.cluster_ids)
        if name not in ESTIMATORS:
            raise KeyError(f"unknown sentence score {name!r}; known: {SENTENCE_SCORES}")
        return ESTIMATORS[name]([list(t) for t in self.token_logprobs], list(self.cluster_ids))


@dataclass(frozen=True)
class SentenceReliability:
    """One probed sentence: its labels, its correctness (when a reference is known) and its answers.

    Attributes:
        sentence: the sentence text.
        labels: observation -> label the labeler reads in the sentence (mentioned ones only).
        questions: the asked questions and their answers, in writer order.
        correct: :func:`sentence_correct` against the reference report, None without one.
    """

    sentence: str
    labels: Mapping[str, int]
    questions: tuple[QuestionAnswers, ...]
    correct: bool | None = None

    def uncertainty(self, k: int, score: str = "semantic_entropy") -> float:
        """``U_k``: the mean of ``score`` over the first ``k`` questions (module docstring).

        Raises:
            ValueError: ``k`` outside ``1..len(questions)``.
        """
        if not 1 <= k <= len(self.questions):
            raise ValueError(f"sentence {self.sentence!r} has {len(self.questions)} questions, {k} asked for")
        return sum(q.score(score) for q in self.questions[:k]) / k


def _positive(label: int | None) -> bool:
    return label in (1, -1)


def sentence_correct(sentence_labels: Mapping[str, int], reference_labels: Mapping[str, int | None]) -> bool:
    """Whether every observation of the sentence has the reference's positivity (module docstring).

    Raises:
        ValueError: the sentence has no labelled observation (nothing to be right or wrong about).

    Example:
        sentence {Lung Lesion: 1}, reference {Lung Lesion: 1, Pleural Effusion: 0} -> True;
        sentence {Pleural Effusion: 0}, reference {Pleural Effusion: -1} -> False (-1 counts as positive);
        sentence {Edema: 0}, reference without Edema -> True.
    """
    if not sentence_labels:
        raise ValueError("sentence_correct: the sentence has no labelled observation")
    return all(_positive(v) == _positive(reference_labels.get(k)) for k, v in sentence_labels.items())


def _sentence_labels(sentence: str, vocabulary: Vocabulary | None) -> dict[str, int]:
    return {f.observation: f.label for f in sentence_findings(sentence, vocabulary=vocabulary)}


def assess_report(
    sampler: AnswerSampler,
    *,
    images: Sequence[Path],
    report: str,
    writer: QuestionWriter,
    num_samples: int,
    max_questions: int,
    max_new_tokens: int = 8,
    reference: str | None = None,
    vocabulary: Vocabulary | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[SentenceReliability]:
    """Probe every sentence of ``report`` with up to ``max_questions`` questions, M answers each.

    Args:
        sampler: who answers (the model that wrote the report).
        images: the report's image paths.
        report: the generated report.
        writer: the question writer.
        num_samples: M answers per question.
        max_questions: questions per sentence (a sentence with fewer gets fewer).
        max_new_tokens: generation budget of a yes/no answer.
        reference: the reference report; when given, each sentence's correctness is set.
        vocabulary: labeler vocabulary (default: the labeler's).
        seed: sampling seed of the first question (then +1 per question).
        progress: called with the number of questions asked after each sentence.

    Returns:
        One entry per sentence that got at least one question (sentences without a labelled
        finding are left out), in report order.
    """
    ref_labels = label_report(reference, vocabulary=vocabulary) if reference is not None else None
    out, n = [], 0
    for sentence in split_sentences(report):
        questions = writer.write(sentence, max_questions=max_questions)
        if not questions:
            continue
        asked = []
        for q in questions:
            answers = sampler.sample(
                images, q.text, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed + n
            )
            texts = [a.text for a in answers]
            asked.append(
                QuestionAnswers(
                    q, tuple(texts), tuple(tuple(a.token_logprobs) for a in answers),
                    tuple(agreement_clusters(texts, q.expected)),
                )
            )  # fmt: skip
            n += 1
        labels = _sentence_labels(sentence, vocabulary)
        correct = sentence_correct(labels, ref_labels) if ref_labels is not None and labels else None
        out.append(SentenceReliability(sentence, labels, tuple(asked), correct))
        if progress is not None:
            progress(len(asked))
    return out


def _scored(sentences: Sequence[SentenceReliability], k: int, score: str) -> tuple[list[float], list[bool]]:
    kept = [s for s in sentences if s.correct is not None]
    if len(kept) != len(sentences):
        raise ValueError("every sentence needs its correctness (assess_report with a reference report)")
    return [s.uncertainty(min(k, len(s.questions)), score) for s in kept], [not s.correct for s in kept]


def calibrate_sentence_levels(
    sentences: Sequence[SentenceReliability],
    *,
    k: int,
    score: str = "semantic_entropy",
    target_high: float,
    target_medium: float,
) -> ReliabilityThresholds:
    """Level thresholds of ``U_k`` on validation sentences (:func:`validation.uncertainty.calibrate_levels`).

    A sentence with fewer than ``k`` questions uses all of its questions.

    Raises:
        ValueError: a sentence without correctness, bad targets.
        MetricUndefinedError: no sentence.
    """
    u, wrong = _scored(sentences, k, score)
    return calibrate_levels(u, wrong, target_high=target_high, target_medium=target_medium)


def sentence_level_errors(
    sentences: Sequence[SentenceReliability],
    thresholds: ReliabilityThresholds,
    *,
    k: int,
    score: str = "semantic_entropy",
) -> dict[str, dict[str, float | int | None]]:
    """Count and error rate per level of held-out sentences (:func:`validation.uncertainty.level_error_rates`)."""
    u, wrong = _scored(sentences, k, score)
    return level_error_rates(u, wrong, thresholds)
