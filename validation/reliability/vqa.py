"""The reliability index of one VQA answer: sample M answers, cluster them by meaning, score the entropy.

* :class:`AnswerSampler`: who answers (``sample``: M answers with token log-probabilities in one call;
  ``greedy``: the answer whose reliability is judged). :class:`ModelSampler` wraps an XMed VLM
  (:func:`model.generation.sample_answers`, temperature 1.0, top-p 0.9, ONE batched ``generate`` call
  per question; :func:`model.generation.greedy_answer`); tests use fakes.
* :func:`answer_reliability`: the M sampled answers, their cluster ids
  (:func:`validation.uncertainty.semantic_clusters`) and the three estimators of
  :data:`ESTIMATORS` (natural logarithms; per-sample log-likelihood = mean token log-probability).
* **Prefixes.** Greedy clustering visits answers in order and an answer's cluster depends only on
  the answers before it, so the clusters of the first ``m`` samples are the first ``m`` ids of the
  clustering of all samples. :meth:`AnswerReliability.scores` therefore scores any ``m <= M``
  from ONE draw: the experiment draws 20 samples once and reads M = 5, 10, 15, 20 as prefixes.
* :func:`equivalence_for`: the back-end per question: rule-based yes/no for a closed question
  (cleaned gold "yes"/"no"), the given open back-end (MiniLM embeddings by default) otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from validation.metrics.vqa import vqa_clean
from validation.uncertainty import (
    Equivalence,
    YesNoEquivalence,
    discrete_semantic_entropy,
    semantic_clusters,
    semantic_entropy,
    within_cluster_entropy,
)

if TYPE_CHECKING:  # torch + transformers load only where a model answers
    from model.generation import SampledAnswer

__all__ = [
    "ESTIMATORS",
    "AnswerReliability",
    "AnswerSampler",
    "ModelSampler",
    "answer_reliability",
    "equivalence_for",
    "item_prompt",
]

#: The three estimators, ``(token log-probs per sample, cluster ids) -> entropy`` (nats).
ESTIMATORS: dict[str, Callable[[list[list[float]], list[int]], float]] = {
    "semantic_entropy": semantic_entropy,
    "discrete_semantic_entropy": lambda _lls, ids: discrete_semantic_entropy(ids),
    "within_cluster_entropy": within_cluster_entropy,
}


@runtime_checkable
class AnswerSampler(Protocol):
    """Answers a prompt on images: M samples with token log-probabilities, or the greedy answer."""

    def sample(
        self, images: Sequence[Path], prompt: str, *, num_samples: int, max_new_tokens: int, seed: int
    ) -> list[SampledAnswer]:
        """``num_samples`` sampled answers (one batched call), reproducible for a given ``seed``."""
        ...

    def greedy(self, images: Sequence[Path], prompt: str, *, max_new_tokens: int) -> SampledAnswer:
        """The greedy answer."""
        ...


class ModelSampler:
    """:class:`AnswerSampler` of an XMed VLM (temperature and top-p of the reliability index).

    Args:
        model: the VLM (eval mode).
        processor: its :class:`~model.vlm.XMedProcessor`.
        temperature: sampling temperature (1.0: the model's own distribution).
        top_p: nucleus mass of the sampler.
    """

    def __init__(self, model: Any, processor: Any, *, temperature: float = 1.0, top_p: float = 0.9) -> None:
        self.model, self.processor = model, processor
        self.temperature, self.top_p = temperature, top_p

    def sample(
        self, images: Sequence[Path], prompt: str, *, num_samples: int, max_new_tokens: int, seed: int
    ) -> list[SampledAnswer]:
        """M answers in ONE ``generate`` call (:func:`model.generation.sample_answers`)."""
        from model.generation import sample_answers

        return sample_answers(
            self.model, self.processor, images=list(images), prompt=prompt, num_samples=num_samples,
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=max_new_tokens, seed=seed,
        )  # fmt: skip

    def greedy(self, images: Sequence[Path], prompt: str, *, max_new_tokens: int) -> SampledAnswer:
        """The greedy answer (:func:`model.generation.greedy_answer`)."""
        from model.generation import greedy_answer

        return greedy_answer(
            self.model, self.processor, images=list(images), prompt=prompt, max_new_tokens=max_new_tokens
        )


def item_prompt(row: dict[str, Any], data_root: str | os.PathLike) -> tuple[list[Path], str]:
    """``(image paths, user prompt)`` of a single-question curated row (paths under ``data_root``).

    Raises:
        ValueError: the row's conversation is not one human turn followed by one gpt turn.
    """
    turns = row["conversations"]
    if len(turns) != 2 or turns[0]["from"] != "human" or turns[1]["from"] != "gpt":
        raise ValueError(
            f"instruction {row.get('id')}: field 'conversations' must be one human and one gpt turn "
            f"for the reliability index, got {[t['from'] for t in turns]}"
        )
    return [Path(data_root) / p for p in row["images"]], turns[0]["value"]


def equivalence_for(gold: str, open_equivalence: Equivalence) -> Equivalence:
    """Yes/no equivalence for a closed question (cleaned gold "yes"/"no"), ``open_equivalence`` otherwise."""
    return YesNoEquivalence() if vqa_clean(gold) in ("yes", "no") else open_equivalence


@dataclass(frozen=True)
class AnswerReliability:
    """M sampled answers to one question and their semantic clusters.

    Attributes:
        texts: the sampled answers, in sampling order.
        token_logprobs: per answer, its raw-model token log-probabilities.
        cluster_ids: per answer, its cluster (greedy bidirectional equivalence, in order).
    """

    texts: tuple[str, ...]
    token_logprobs: tuple[tuple[float, ...], ...]
    cluster_ids: tuple[int, ...]

    def scores(self, m: int | None = None) -> dict[str, float]:
        """Each estimator of :data:`ESTIMATORS` on the first ``m`` samples (default all).

        Raises:
            ValueError: ``m`` outside ``1..len(texts)``.
        """
        m = len(self.texts) if m is None else m
        if not 1 <= m <= len(self.texts):
            raise ValueError(f"prefix of {m} samples asked of {len(self.texts)} sampled answers")
        lls = [list(t) for t in self.token_logprobs[:m]]
        ids = list(self.cluster_ids[:m])
        return {name: fn(lls, ids) for name, fn in ESTIMATORS.items()}

    def n_clusters(self, m: int | None = None) -> int:
        """Number of distinct meanings among the first ``m`` samples."""
        return len(set(self.cluster_ids[: len(self.texts) if m is None else m]))


def answer_reliability(
    sampler: AnswerSampler,
    *,
    images: Sequence[Path],
    prompt: str,
    num_samples: int,
    max_new_tokens: int,
    equivalence: Equivalence | Callable[[str, str], bool],
    seed: int = 0,
) -> AnswerReliability:
    """Draw ``num_samples`` answers once and cluster them (score with :meth:`AnswerReliability.scores`).

    Args:
        sampler: who answers.
        images: image paths of the question.
        prompt: the user turn.
        num_samples: M (the largest prefix that will be scored).
        max_new_tokens: generation budget per answer.
        equivalence: clustering back-end (see :func:`equivalence_for`).
        seed: sampling seed.

    Returns:
        The answers and their clusters.

    Raises:
        ValueError: the sampler returned another number of answers than asked.
    """
    answers = sampler.sample(
        images, prompt, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed
    )
    if len(answers) != num_samples:
        raise ValueError(f"sampler returned {len(answers)} answers, {num_samples} were asked")
    texts = [a.text for a in answers]
    prepare = getattr(equivalence, "prepare", None)
    if prepare is not None:  # embedding back-end: one batched encode per question, not one per pair
        prepare(texts)
    return AnswerReliability(
        texts=tuple(texts),
        token_logprobs=tuple(tuple(a.token_logprobs) for a in answers),
        cluster_ids=tuple(semantic_clusters(texts, equivalence)),
    )
