"""Answer generation with per-token log-probabilities (for evaluation and uncertainty).

* :func:`sample_answers` draws ``M`` answers to one prompt in ONE batched ``generate`` call
  (``num_return_sequences=M``, KV cache shared by the batch).
* :func:`greedy_answer` / :func:`batched_greedy`: deterministic answers; the batched form left-pads
  many prompts for evaluation throughput.
* :func:`yes_no_probability` / :func:`batched_yes_no_probability`: ``P(yes)`` from the next-token
  distribution restricted to the yes/no tokens (prognosis stage).
* :func:`sequence_logprobs`: teacher-forced log-likelihood of labelled tokens (DPO, scoring).

Log-prob convention: ``token_logprobs[t]`` is the RAW model's ``log_softmax(logits)`` at the sampled
token (``generate(output_logits=True)``), i.e. before temperature, top-p or token suppression.
That is the sequence likelihood semantic entropy needs (Farquhar et al., Nature 2024,
https://doi.org/10.1038/s41586-024-07421-0); it equals a teacher-forced forward pass's
log-softmax at those tokens. Each answer's tokens stop at (and include) the first ``<|im_end|>``;
``text`` excludes it. ``<image>``/``<audio>``/``<pad>`` are never generated (suppressed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.collators import SFTCollator
from model.vlm.processor import ImageLike, XMedProcessor

__all__ = [
    "YES_NO_WORDS",
    "SampledAnswer",
    "batched_greedy",
    "batched_yes_no_probability",
    "greedy_answer",
    "sample_answers",
    "sequence_logprobs",
    "yes_no_probability",
]

#: Surface forms whose first token counts as "yes" / "no" (curated answers are "Yes"/"No").
YES_NO_WORDS: dict[str, tuple[str, ...]] = {"yes": ("yes", "Yes"), "no": ("no", "No")}


@dataclass(frozen=True)
class SampledAnswer:
    """One generated answer.

    Attributes:
        text: decoded answer (up to, not including, ``<|im_end|>``).
        token_ids: generated ids, including the final ``<|im_end|>`` if it was reached.
        token_logprobs: raw-model log-probability of each generated token.
        finished: True if the answer ended with ``<|im_end|>`` (False: hit ``max_new_tokens``).
    """

    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finished: bool

    @property
    def logprob(self) -> float:
        """Sequence log-likelihood (sum of token log-probs)."""
        return float(sum(self.token_logprobs))


def _to_model(batch: dict, model: torch.nn.Module) -> dict:
    """Generation inputs of a collated batch, on the model's device (None entries dropped)."""
    keys = ("input_ids", "attention_mask", "pixel_values", "image_counts", "input_features", "audio_counts")
    dtype = next(model.parameters()).dtype
    out = {}
    for k in keys:
        v = batch.get(k)
        if v is None:
            continue
        out[k] = v.to(model.device, dtype=dtype) if v.is_floating_point() else v.to(model.device)
    return out


def _suppressed(processor: XMedProcessor) -> list[int]:
    ids = [processor.image_token_id, processor.tokenizer.pad_token_id]
    if processor.audio_token_id is not None:
        ids.append(processor.audio_token_id)
    return [i for i in ids if i is not None]


@torch.no_grad()
def _generate(
    model, processor: XMedProcessor, batch: dict, *, max_new_tokens: int, **kwargs
) -> list[SampledAnswer]:
    """Run ``generate`` and cut every returned row at its first ``<|im_end|>``."""
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    inputs = _to_model(batch, model)
    end = processor.end_token_id
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        eos_token_id=end,
        pad_token_id=processor.tokenizer.pad_token_id,
        suppress_tokens=_suppressed(processor),
        return_dict_in_generate=True,
        output_logits=True,
        **kwargs,
    )
    new = out.sequences[:, inputs["input_ids"].shape[1] :]
    logits = torch.stack(out.logits, dim=1).float()  # (N, T, V): raw, before warpers
    logp = logits.log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    answers = []
    for ids_row, lp_row in zip(new.tolist(), logp.tolist(), strict=True):
        n = ids_row.index(end) + 1 if end in ids_row else len(ids_row)
        ids = ids_row[:n]
        answers.append(SampledAnswer(processor.decode(ids), ids, lp_row[:n], finished=end in ids_row))
    return answers


def _single(
    processor: XMedProcessor, images: Sequence[ImageLike], prompt: str, answer_prefix: str = ""
) -> dict:
    ex = processor.encode_generation(prompt, list(images), answer_prefix=answer_prefix)
    return SFTCollator(processor.tokenizer.pad_token_id)([ex])


def sample_answers(
    model,
    processor: XMedProcessor,
    *,
    images: Sequence[ImageLike],
    prompt: str,
    num_samples: int,
    temperature: float = 1.0,
    top_p: float = 0.9,
    max_new_tokens: int,
    seed: int | None = None,
    answer_prefix: str = "",
) -> list[SampledAnswer]:
    """Draw ``num_samples`` answers in one batched ``generate`` call (``num_return_sequences``).

    Args:
        model: an XMed VLM (or any HF generative model taking the processor's inputs).
        processor: the matching :class:`XMedProcessor`.
        images: PIL images, paths or ``(3, S, S)`` tensors for the prompt's ``<image>`` placeholders
            (prepended as ``<image>\\n`` if the prompt has none).
        prompt: the user turn.
        num_samples: ``M`` answers.
        temperature: sampling temperature (> 0).
        top_p: nucleus mass (0 < top_p <= 1); top-k is disabled.
        max_new_tokens: generation budget per answer.
        seed: if given, sample from a forked RNG seeded with it (global RNG state unchanged).
        answer_prefix: text the assistant turn already starts with; the ``M`` answers continue it
            (their text, ids and log-probs are the continuation only).

    Returns:
        ``M`` answers; ``token_logprobs`` are the RAW model's log-probs (see module docstring).
    """
    if num_samples < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(
            "need num_samples >= 1, temperature > 0, 0 < top_p <= 1; "
            f"got {num_samples}, {temperature}, {top_p}"
        )
    batch = _single(processor, images, prompt, answer_prefix)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        return _generate(
            model,
            processor,
            batch,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            num_return_sequences=num_samples,
        )


def greedy_answer(
    model, processor: XMedProcessor, *, images: Sequence[ImageLike], prompt: str, max_new_tokens: int
) -> SampledAnswer:
    """The greedy (most likely next token at each step) answer to one prompt."""
    return _generate(
        model, processor, _single(processor, images, prompt), max_new_tokens=max_new_tokens, do_sample=False
    )[0]


def batched_greedy(
    model, processor: XMedProcessor, examples: Sequence[dict], *, max_new_tokens: int, batch_size: int = 16
) -> list[SampledAnswer]:
    """Greedy answers for many encoded prompts, ``batch_size`` at a time (left padding).

    Args:
        model: the VLM.
        processor: the matching processor.
        examples: outputs of :meth:`XMedProcessor.encode_prompt` / :meth:`~XMedProcessor.encode_generation`.
        max_new_tokens: generation budget per answer.
        batch_size: prompts per ``generate`` call.

    Returns:
        One answer per example, in order.
    """
    collate = SFTCollator(processor.tokenizer.pad_token_id, padding_side="left")
    out: list[SampledAnswer] = []
    for start in range(0, len(examples), batch_size):
        chunk = [
            {k: v for k, v in ex.items() if k != "labels"} for ex in examples[start : start + batch_size]
        ]
        out += _generate(model, processor, collate(chunk), max_new_tokens=max_new_tokens, do_sample=False)
    return out


def sequence_logprobs(model, batch: dict, *, label_pad: int = -100) -> torch.Tensor:
    """Teacher-forced log-likelihood of each row's labelled tokens, ``(B,)``; differentiable.

    ``sum_t log p(labels[t] | tokens < t)`` over positions with ``labels != label_pad`` (the
    answer of an :class:`~model.collators.SFTCollator` or
    :class:`~model.collators.PreferenceCollator` batch): the policy/reference log-likelihoods of
    DPO and the sequence scores of evaluation. Uses the raw model distribution.
    """
    inputs = _to_model(batch, model)
    labels = batch["labels"].to(model.device)
    logits = model(**inputs).logits[:, :-1].float()
    targets = labels[:, 1:]
    keep = targets != label_pad
    token_logp = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logp * keep).sum(-1)


def _word_ids(processor: XMedProcessor) -> tuple[list[int], list[int]]:
    tok = processor.tokenizer
    ids = {
        k: sorted({tok(w, add_special_tokens=False)["input_ids"][0] for w in words})
        for k, words in YES_NO_WORDS.items()
    }
    if set(ids["yes"]) & set(ids["no"]):
        raise ValueError(f"'yes' and 'no' share a first token ({ids}); the tokenizer cannot separate them")
    return ids["yes"], ids["no"]


@torch.no_grad()
def batched_yes_no_probability(
    model, processor: XMedProcessor, examples: Sequence[dict], *, batch_size: int = 16
) -> list[float]:
    """``P(yes) / (P(yes) + P(no))`` of the first answer token, for many encoded prompts.

    ``P(yes)`` sums the next-token probabilities of the first tokens of "yes" and "Yes" (and
    likewise for no), from one forward pass over the prompt (left padded, last position).
    """
    yes, no = _word_ids(processor)
    collate = SFTCollator(processor.tokenizer.pad_token_id, padding_side="left")
    out: list[float] = []
    for start in range(0, len(examples), batch_size):
        chunk = [
            {k: v for k, v in ex.items() if k != "labels"} for ex in examples[start : start + batch_size]
        ]
        inputs = _to_model(collate(chunk), model)
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding
        logits = model(**inputs, position_ids=positions, logits_to_keep=1).logits[:, -1].float()
        probs = logits.softmax(-1)
        p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
        out += (p_yes / (p_yes + p_no)).tolist()
    return out


def yes_no_probability(model, processor: XMedProcessor, images: Sequence[ImageLike], prompt: str) -> float:
    """``P(yes)`` for one prompt; see :func:`batched_yes_no_probability`."""
    return batched_yes_no_probability(model, processor, [processor.encode_generation(prompt, list(images))])[
        0
    ]
