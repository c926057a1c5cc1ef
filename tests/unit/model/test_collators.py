"""Exact-tensor tests of model.collators (SFT padding, DPO chosen-then-rejected layout, images)."""

from __future__ import annotations

import pytest
import torch

from model.collators import PreferenceCollator, SFTCollator, pad_sequences

X = -100


def _img(value: float, n: int = 1) -> torch.Tensor:
    """n 1x2x2 'images' filled with ``value`` (tiny stand-ins for (3, S, S) pixel tensors)."""
    return torch.full((n, 1, 2, 2), value)


def test_sft_right_padding_exact():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [X, 6, 7], "pixel_values": _img(1.0), "image_count": 1},
        {"input_ids": [8, 9], "labels": [X, 9], "pixel_values": _img(2.0, 2), "image_count": 2},
        {"input_ids": [4], "labels": [4], "pixel_values": _img(0.0, 0), "image_count": 0},
    ]
    batch = SFTCollator(pad_token_id=0)(examples)
    assert torch.equal(
        batch["input_ids"],
        torch.tensor(
            [
                [5, 6, 7],  # row 0: full length
                [8, 9, 0],  # row 1: one pad on the right
                [4, 0, 0],  # row 2: two pads
            ]
        ),
    )
    assert torch.equal(
        batch["labels"],
        torch.tensor(
            [
                [X, 6, 7],
                [X, 9, X],  # padding is ignored by the loss
                [4, X, X],
            ]
        ),
    )
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    # images flat in row order: row 0's image, then row 1's two images; row 2 has none
    assert torch.equal(batch["pixel_values"], torch.cat([_img(1.0), _img(2.0, 2)]))
    assert torch.equal(batch["image_counts"], torch.tensor([1, 2, 0]))
    assert batch["input_features"] is None and torch.equal(batch["audio_counts"], torch.tensor([0, 0, 0]))


def test_sft_left_padding_for_generation_without_labels():
    examples = [
        {"input_ids": torch.tensor([5, 6, 7]), "pixel_values": _img(1.0), "image_count": 1},
        {"input_ids": torch.tensor([8]), "pixel_values": _img(3.0), "image_count": 1},
    ]
    batch = SFTCollator(pad_token_id=0, padding_side="left")(examples)
    assert torch.equal(
        batch["input_ids"],
        torch.tensor(
            [
                [5, 6, 7],  # row 0: full length
                [0, 0, 8],  # row 1: pads on the LEFT so the last position is the real last token
            ]
        ),
    )
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [0, 0, 1]]))
    assert "labels" not in batch
    assert torch.equal(batch["image_counts"], torch.tensor([1, 1]))


def test_sft_audio_features_and_no_images():
    feats = torch.arange(6.0).reshape(1, 2, 3)
    examples = [
        {
            "input_ids": [1, 2],
            "labels": [X, 2],
            "pixel_values": _img(0.0, 0),
            "image_count": 0,
            "input_features": feats,
            "audio_count": 1,
        },
        {"input_ids": [3], "labels": [3], "pixel_values": _img(0.0, 0), "image_count": 0},
    ]
    batch = SFTCollator(pad_token_id=0)(examples)
    assert batch["pixel_values"] is None  # no image anywhere in the batch
    assert torch.equal(batch["input_features"], feats)
    assert torch.equal(batch["audio_counts"], torch.tensor([1, 0]))


def test_sft_rejects_mismatched_counts_and_lengths():
    with pytest.raises(ValueError, match="image_count"):
        SFTCollator(0)([{"input_ids": [1], "labels": [1], "pixel_values": _img(1.0, 2), "image_count": 1}])
    with pytest.raises(ValueError, match="differ in length"):
        SFTCollator(0)([{"input_ids": [1, 2], "labels": [1], "pixel_values": _img(1.0), "image_count": 1}])
    with pytest.raises(ValueError, match="padding side"):
        SFTCollator(0, padding_side="middle")(
            [{"input_ids": [1], "pixel_values": _img(1.0), "image_count": 1}]
        )


def test_preference_collator_docstring_example():
    examples = [
        {
            "prompt_input_ids": [1, 2],
            "chosen_input_ids": [3],
            "rejected_input_ids": [4, 5],
            "pixel_values": _img(10.0),
            "image_count": 1,
        },
        {
            "prompt_input_ids": [6],
            "chosen_input_ids": [7, 8],
            "rejected_input_ids": [9],
            "pixel_values": _img(20.0, 2),
            "image_count": 2,
        },
    ]
    batch = PreferenceCollator(pad_token_id=0)(examples)
    assert torch.equal(
        batch["input_ids"],
        torch.tensor(
            [
                [1, 2, 3, 0],  # row 0 = chosen of example 0
                [6, 7, 8, 0],  # row 1 = chosen of example 1
                [1, 2, 4, 5],  # row 2 = rejected of example 0
                [6, 9, 0, 0],  # row 3 = rejected of example 1
            ]
        ),
    )
    assert torch.equal(
        batch["labels"],
        torch.tensor(
            [
                [X, X, 3, X],  # prompt and padding ignored, the answer is the target
                [X, 7, 8, X],
                [X, X, 4, 5],
                [X, 9, X, X],
            ]
        ),
    )
    assert torch.equal(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    )
    # images: chosen rows (ex0: 1 image, ex1: 2 images), then the same again for the rejected rows
    assert torch.equal(
        batch["pixel_values"], torch.cat([_img(10.0), _img(20.0, 2), _img(10.0), _img(20.0, 2)])
    )
    assert torch.equal(batch["image_counts"], torch.tensor([1, 2, 1, 2]))


def test_preference_rejects_empty_answer():
    with pytest.raises(ValueError, match="rejected_input_ids"):
        PreferenceCollator(0)(
            [
                {
                    "prompt_input_ids": [1],
                    "chosen_input_ids": [2],
                    "rejected_input_ids": [],
                    "pixel_values": _img(1.0),
                    "image_count": 1,
                }
            ]
        )


def test_pad_sequences_left_and_right():
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    assert pad_sequences(seqs, 9).tolist() == [[1, 2, 3], [4, 9, 9]]
    assert pad_sequences(seqs, 9, side="left").tolist() == [[1, 2, 3], [9, 9, 4]]
    with pytest.raises(ValueError, match="empty"):
        pad_sequences([], 0)
