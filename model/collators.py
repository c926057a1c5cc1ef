"""Batch collators for supervised fine-tuning and preference optimisation (DPO).

Both are small dataclasses called on a list of examples produced by
:class:`model.vlm.processor.XMedProcessor`; images are collated on the fly (flat
``pixel_values`` of all images of the batch, in row order, plus per-row ``image_counts``), as
TRL's ``DataCollatorForVisionPreference`` does. Modelled on TRL's ``DataCollatorForPreference``
and torchtune's ``padded_collate_dpo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PreferenceCollator", "SFTCollator", "pad_sequences"]


def pad_sequences(seqs: Sequence[torch.Tensor], value: int, *, side: str = "right") -> torch.Tensor:
    """Stack 1-D tensors into ``(B, max_len)``, filling with ``value`` on the ``side`` given.

    Example:
        >>> pad_sequences([torch.tensor([1, 2]), torch.tensor([3])], 0, side="left").tolist()
        [[1, 2], [0, 3]]
    """
    if side not in ("right", "left"):
        raise ValueError(f"padding side must be 'right' or 'left', got {side!r}")
    if not seqs:
        raise ValueError("cannot collate an empty batch")
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = torch.as_tensor(s, dtype=torch.long)
        if side == "right":
            out[i, : len(s)] = s
        else:
            out[i, width - len(s) :] = s
    return out


def _media(examples: Sequence[dict[str, Any]], repeat: int = 1) -> dict[str, torch.Tensor | None]:
    """Flat pixel values / log-mels of all rows (row order, the whole list ``repeat`` times) + counts."""
    out: dict[str, torch.Tensor | None] = {}
    for items, count in (("pixel_values", "image_count"), ("input_features", "audio_count")):
        tensors = [ex[items] for ex in examples if ex.get(items) is not None and ex[items].shape[0] > 0]
        counts = torch.tensor([int(ex.get(count, 0) or 0) for ex in examples] * repeat, dtype=torch.long)
        if sum(t.shape[0] for t in tensors) != int(counts.sum()) // repeat:
            raise ValueError(f"'{count}' of the examples does not match the number of '{items}' they carry")
        out[items] = torch.cat(tensors * repeat, dim=0) if tensors else None
        out[count + "s"] = counts
    return out


@dataclass
class SFTCollator:
    """Pad token ids and labels, build the attention mask, stack images and their counts.

    Input: a list of dicts with ``input_ids`` and ``labels`` (1-D, same length; ``labels`` may be
    absent for generation prompts), ``pixel_values`` ``(n_i, 3, S, S)``, ``image_count`` ``n_i``
    and optionally ``input_features`` ``(k_i, mel, frames)`` with ``audio_count`` ``k_i``.

    Output keys: ``input_ids`` ``(B, L)``, ``attention_mask`` ``(B, L)`` (1 = token, 0 = pad),
    ``labels`` ``(B, L)`` (``label_pad`` on padding), ``pixel_values`` ``(sum n_i, 3, S, S)`` or
    None, ``image_counts`` ``(B,)``, ``input_features`` or None, ``audio_counts`` ``(B,)``.

    Example (``pad_token_id=0``, right padding)::

        rows   input_ids   labels        ->  input_ids       labels              attention_mask
        0      [5, 6, 7]   [-100, 6, 7]      [[5, 6, 7],     [[-100, 6, 7],      [[1, 1, 1],
        1      [8, 9]      [-100, 9]          [8, 9, 0]]      [-100, 9, -100]]    [1, 1, 0]]

    Attributes:
        pad_token_id: filler of ``input_ids``.
        label_pad: filler of ``labels`` (ignored by the loss).
        padding_side: ``right`` for training, ``left`` for batched generation.
    """

    pad_token_id: int
    label_pad: int = -100
    padding_side: str = "right"

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
        ids = [torch.as_tensor(ex["input_ids"]) for ex in examples]
        batch: dict[str, torch.Tensor | None] = {
            "input_ids": pad_sequences(ids, self.pad_token_id, side=self.padding_side),
            "attention_mask": pad_sequences([torch.ones_like(i) for i in ids], 0, side=self.padding_side),
        }
        if all("labels" in ex for ex in examples):
            for ex in examples:
                if len(ex["labels"]) != len(ex["input_ids"]):
                    raise ValueError("an example's labels and input_ids differ in length")
            batch["labels"] = pad_sequences(
                [ex["labels"] for ex in examples], self.label_pad, side=self.padding_side
            )
        batch.update(_media(examples))
        return batch


@dataclass
class PreferenceCollator:
    """DPO batches: CHOSEN rows first, REJECTED rows second, in one right-padded batch.

    Input: a list of ``B`` dicts with ``prompt_input_ids``, ``chosen_input_ids``,
    ``rejected_input_ids`` (1-D; answers end with ``<|im_end|>``), ``pixel_values``
    ``(n_i, 3, S, S)`` and ``image_count``. Output rows ``0..B-1`` are ``prompt_i + chosen_i`` and
    rows ``B..2B-1`` are ``prompt_i + rejected_i``; ``labels`` are -100 on the prompt and padding
    and the token ids on the answer; images are listed for the chosen rows, then again for the
    rejected rows (``image_counts`` has ``2B`` entries). Split model outputs with
    ``logps[:B]`` (chosen) and ``logps[B:]`` (rejected).

    Example (``pad_token_id=0``; prompts P, chosen C, rejected R)::

        example 0: prompt [1, 2], chosen [3],    rejected [4, 5]
        example 1: prompt [6],    chosen [7, 8], rejected [9]
        input_ids              labels                    row
        [[1, 2, 3, 0],         [[-100, -100, 3, -100],   0 = chosen of example 0
         [6, 7, 8, 0],          [-100, 7, 8, -100],      1 = chosen of example 1
         [1, 2, 4, 5],          [-100, -100, 4, 5],      2 = rejected of example 0
         [6, 9, 0, 0]]          [-100, 9, -100, -100]]   3 = rejected of example 1

    Attributes:
        pad_token_id: filler of ``input_ids``.
        label_pad: filler of ``labels`` and label of prompt tokens.
    """

    pad_token_id: int
    label_pad: int = -100

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
        seqs, labels = [], []
        for key in ("chosen_input_ids", "rejected_input_ids"):
            for ex in examples:
                prompt = torch.as_tensor(ex["prompt_input_ids"], dtype=torch.long)
                answer = torch.as_tensor(ex[key], dtype=torch.long)
                if len(answer) == 0:
                    raise ValueError(f"an example has an empty '{key}'")
                seqs.append(torch.cat([prompt, answer]))
                labels.append(torch.cat([torch.full_like(prompt, self.label_pad), answer]))
        batch: dict[str, torch.Tensor | None] = {
            "input_ids": pad_sequences(seqs, self.pad_token_id),
            "attention_mask": pad_sequences([torch.ones_like(s) for s in seqs], 0),
            "labels": pad_sequences(labels, self.label_pad),
        }
        batch.update(_media(examples, repeat=2))
        return batch
