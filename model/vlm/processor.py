r"""Turn instruction records into model inputs: chat prompt, token ids, labels, image tensors.

:class:`XMedProcessor` is the one place where the sequence layout is decided:

* prompts use the tokenizer's InternVL2/ChatML chat template (``human`` -> ``user``, ``gpt`` ->
  ``assistant``);
* every ``<image>`` placeholder becomes ``num_image_tokens`` copies of the ``<image>`` token (and
  every ``<audio>`` ``num_audio_tokens`` copies of ``<audio>``); the model overwrites their
  embeddings with vision (audio) tokens, in order;
* labels are -100 everywhere except the assistant (``gpt``) turns' content and their closing
  ``<|im_end|>`` (so the model learns to stop); the role header and the newline after
  ``<|im_end|>`` are not trained;
* images: PIL, converted to RGB, resized to ``image_size`` (bilinear), scaled to [-1, 1],
  ``(3, S, S)`` float32.

Example (``num_image_tokens=2``; ``I`` = the ``<image>`` id; ``x`` = -100), for the turns
``human: "<image>\nModality?"`` and ``gpt: "CT"``::

    segment                         input_ids                   labels
    <|im_start|>user\n              im_start user \n            x x x
    <image>\nModality?<|im_end|>    I I \n Modality ? im_end    x x x x x x
    \n                              \n                          x
    <|im_start|>assistant\n         im_start assistant \n       x x x
    CT<|im_end|>                    CT im_end                   CT im_end
    \n                              \n                          x
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model.tokenizer import ROLE_NAMES
from model.vlm.audio import load_log_mel

__all__ = ["AUDIO_PLACEHOLDER", "IMAGE_PLACEHOLDER", "SequenceTooLongError", "XMedProcessor"]

IMAGE_PLACEHOLDER = "<image>"
AUDIO_PLACEHOLDER = "<audio>"
IGNORE_INDEX = -100

ImageLike = Image.Image | str | os.PathLike | torch.Tensor


class SequenceTooLongError(ValueError):
    """An encoded example is longer than the processor's ``max_length`` (names the record)."""


def _turns(record: Any) -> list[tuple[str, str]]:
    """(from, value) pairs of a record's conversations (Parquet dict rows or schema Turns)."""
    turns = record["conversations"] if isinstance(record, Mapping) else record.conversations
    out = []
    for t in turns:
        if isinstance(t, Mapping):
            out.append((t["from"], t["value"]))
        else:
            out.append((t.from_, t.value))
    return out


def _field(record: Any, name: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


class XMedProcessor:
    """Prompt building, tokenisation with labels, placeholder expansion and image preprocessing.

    Args:
        tokenizer: a tokenizer from :func:`model.tokenizer.train_tokenizer` (or a real checkpoint's
            tokenizer with ``<image>``/``<|im_end|>`` tokens and a chat template).
        image_size: side of the square model input.
        num_image_tokens: copies of ``<image>`` per image (``config.num_image_tokens``).
        num_audio_tokens: copies of ``<audio>`` per clip (``config.num_audio_tokens``; 0 = no audio).
        audio_seconds: clip length of the audio encoder (``config.audio_seconds``).
        max_length: raise :class:`SequenceTooLongError` for longer examples (None = no limit).
    """

    def __init__(
        self,
        tokenizer,
        image_size: int,
        num_image_tokens: int,
        *,
        num_audio_tokens: int = 0,
        audio_seconds: int = 6,
        max_length: int | None = None,
    ) -> None:
        if image_size <= 0 or num_image_tokens <= 0:
            raise ValueError(
                f"image_size ({image_size}) and num_image_tokens ({num_image_tokens}) must be positive"
            )
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.num_image_tokens = num_image_tokens
        self.num_audio_tokens = num_audio_tokens
        self.audio_seconds = audio_seconds
        self.max_length = max_length
        self.image_token_id = self._single_id(IMAGE_PLACEHOLDER)
        self.audio_token_id = self._single_id(AUDIO_PLACEHOLDER) if num_audio_tokens else None
        self.end_token_id = self._single_id("<|im_end|>")

    @classmethod
    def for_model(cls, tokenizer, config, *, max_length: int | None = None) -> XMedProcessor:
        """A processor matching an :class:`~model.vlm.configuration.XMedVLMConfig`."""
        return cls(
            tokenizer,
            config.vision_config.image_size,
            config.num_image_tokens,
            num_audio_tokens=config.num_audio_tokens,
            audio_seconds=config.audio_seconds or 6,
            max_length=max_length if max_length is not None else config.text_config.max_position_embeddings,
        )

    def _single_id(self, token: str) -> int:
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"tokenizer does not have {token!r} as a single token (got ids {ids})")
        return ids[0]

    # -- text ------------------------------------------------------------------------------
    def build_prompt(self, conversations: Sequence[Any], *, add_generation_prompt: bool) -> str:
        """Render turns (``{"from", "value"}`` dicts or ``Turn``) with the chat template.

        Raises:
            ValueError: a turn has an unknown role.
        """
        messages = [
            {"role": self._role(f), "content": v} for f, v in _turns({"conversations": conversations})
        ]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    @staticmethod
    def _role(who: str) -> str:
        if who not in ROLE_NAMES:
            raise ValueError(f"unknown conversation role {who!r}; expected one of {sorted(ROLE_NAMES)}")
        return ROLE_NAMES[who]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def expand_placeholders(self, ids: Sequence[int]) -> list[int]:
        """Replace each ``<image>`` (``<audio>``) id by ``num_image_tokens`` (``num_audio_tokens``) copies."""
        out: list[int] = []
        for i in ids:
            if i == self.image_token_id:
                out.extend([i] * self.num_image_tokens)
            elif self.audio_token_id is not None and i == self.audio_token_id:
                out.extend([i] * self.num_audio_tokens)
            else:
                out.append(i)
        return out

    def _tokenize_turns(
        self, turns: Sequence[tuple[str, str]], *, train: bool
    ) -> tuple[list[int], list[int]]:
        """Ids and labels of whole turns; assistant content + ``<|im_end|>`` labelled when ``train``."""
        ids: list[int] = []
        labels: list[int] = []
        for who, value in turns:
            head = self._ids(f"<|im_start|>{self._role(who)}\n")
            body = self.expand_placeholders(self._ids(value + "<|im_end|>"))
            tail = self._ids("\n")
            ids += head + body + tail
            supervised = train and who == "gpt"
            labels += [IGNORE_INDEX] * len(head) + (body if supervised else [IGNORE_INDEX] * len(body))
            labels += [IGNORE_INDEX] * len(tail)
        return ids, labels

    # -- media -----------------------------------------------------------------------------
    def image_tensor(self, image: ImageLike) -> torch.Tensor:
        """One image -> ``(3, S, S)`` float32 in [-1, 1] (RGB, bilinear resize)."""
        if isinstance(image, torch.Tensor):
            if tuple(image.shape) != (3, self.image_size, self.image_size):
                raise ValueError(
                    f"image tensor has shape {tuple(image.shape)}; expected (3, {self.image_size}, ...)"
                )
            return image.float()
        if not isinstance(image, Image.Image):
            with Image.open(image) as im:
                return self.image_tensor(im.convert("RGB"))
        im = image.convert("RGB")
        if im.size != (self.image_size, self.image_size):
            im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def pixel_values(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Stack images into ``(n, 3, S, S)`` (``n`` may be 0)."""
        if not images:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([self.image_tensor(im) for im in images])

    def _media(
        self, rid: str, images: Sequence[ImageLike], audios: Sequence[str | os.PathLike], text: str
    ) -> dict[str, Any]:
        """Check placeholder counts against the media lists, then load them."""
        n_img, n_aud = text.count(IMAGE_PLACEHOLDER), text.count(AUDIO_PLACEHOLDER)
        if n_img != len(images):
            raise ValueError(
                f"instruction {rid}: field 'images' has {len(images)} entries "
                f"but the text has {n_img} <image>"
            )
        if n_aud != len(audios):
            raise ValueError(
                f"instruction {rid}: field 'audios' has {len(audios)} entries "
                f"but the text has {n_aud} <audio>"
            )
        for p in images:
            if isinstance(p, (str, os.PathLike)) and not Path(p).is_file():
                raise FileNotFoundError(f"instruction {rid}: field 'images': no image file at {p}")
        out: dict[str, Any] = {"pixel_values": self.pixel_values(images), "image_count": len(images)}
        if audios:
            if not self.num_audio_tokens:
                raise ValueError(f"instruction {rid} has audio but the processor has num_audio_tokens=0")
            feats = [load_log_mel(a, seconds=self.audio_seconds) for a in audios]
            out.update(input_features=torch.stack(feats), audio_count=len(audios))
        return out

    def _record_media(self, record: Any, data_root: str | os.PathLike | None, text: str) -> dict[str, Any]:
        root = Path(data_root) if data_root is not None else Path(".")
        images = [root / p for p in (_field(record, "images") or [])]
        audios = [root / p for p in (_field(record, "audios") or [])]
        return self._media(str(_field(record, "id", "?")), images, audios, text)

    def _check_length(self, n: int, record: Any) -> None:
        if self.max_length is not None and n > self.max_length:
            raise SequenceTooLongError(
                f"instruction {_field(record, 'id', '?')}: {n} tokens exceed max_length={self.max_length}"
            )

    # -- examples ----------------------------------------------------------------------------
    def encode_example(self, record: Any, data_root: str | os.PathLike | None) -> dict[str, Any]:
        """Training example: ``input_ids``, ``labels`` (1-D), ``pixel_values`` ``(n, 3, S, S)``, counts.

        ``record`` is an INSTRUCTION_SCHEMA row (dict) or an ``InstructionRecord``; an optional
        ``audios`` field lists WAV paths for ``<audio>`` placeholders (then ``input_features``
        ``(k, 80, frames)`` and ``audio_count`` are added). Paths are relative to ``data_root``.

        Raises:
            ValueError: placeholder counts do not match the media lists, or a role is unknown.
            FileNotFoundError: an image is missing (names the record and the path).
            SequenceTooLongError: longer than ``max_length``.
        """
        turns = _turns(record)
        ids, labels = self._tokenize_turns(turns, train=True)
        self._check_length(len(ids), record)
        out = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        out.update(self._record_media(record, data_root, "".join(v for _, v in turns)))
        return out

    def encode_prompt(self, record: Any, data_root: str | os.PathLike | None) -> dict[str, Any]:
        """Generation input: every turn before the LAST ``gpt`` turn + ``<|im_start|>assistant\\n``.

        Returns ``input_ids`` (1-D), ``pixel_values``, ``image_count`` (and audio fields).
        """
        turns = _turns(record)
        last = max((i for i, (w, _) in enumerate(turns) if w == "gpt"), default=len(turns))
        ids, _ = self._tokenize_turns(turns[:last], train=False)
        ids += self._ids("<|im_start|>assistant\n")
        self._check_length(len(ids), record)
        out = {"input_ids": torch.tensor(ids)}
        out.update(self._record_media(record, data_root, "".join(v for _, v in turns[:last])))
        return out

    def encode_generation(
        self,
        prompt: str,
        images: Sequence[ImageLike] = (),
        *,
        audios: Sequence[str | os.PathLike] = (),
        answer_prefix: str = "",
    ) -> dict[str, Any]:
        """Generation input from a user prompt and in-memory images (or paths).

        If ``prompt`` has no ``<image>`` but images are given, one ``"<image>\\n"`` per image is
        prepended (InternVL's convention). ``answer_prefix`` is text the assistant turn already
        starts with (generation continues it).

        Raises:
            ValueError: the prompt has placeholders whose number differs from ``len(images)``.
        """
        if images and IMAGE_PLACEHOLDER not in prompt:
            prompt = (IMAGE_PLACEHOLDER + "\n") * len(images) + prompt
        ids, _ = self._tokenize_turns([("human", prompt)], train=False)
        ids += self._ids("<|im_start|>assistant\n")
        if answer_prefix:
            ids += self._ids(answer_prefix)
        record = {"id": "prompt"}
        self._check_length(len(ids), record)
        out = {"input_ids": torch.tensor(ids)}
        out.update(self._media("prompt", list(images), list(audios), prompt))
        return out

    def encode_preference(
        self, record: Any, data_root: str | os.PathLike | None, *, chosen: str, rejected: str
    ) -> dict[str, Any]:
        """DPO example: the prompt of ``record`` (turns before its last answer) and two answers.

        Returns ``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids`` (each answer
        ends with ``<|im_end|>``), ``pixel_values``, ``image_count``; see
        :class:`model.collators.PreferenceCollator`.
        """
        prompt = self.encode_prompt(record, data_root)
        out = {
            "prompt_input_ids": prompt.pop("input_ids"),
            "chosen_input_ids": torch.tensor(self._ids(chosen + "<|im_end|>")),
            "rejected_input_ids": torch.tensor(self._ids(rejected + "<|im_end|>")),
        }
        longest = len(out["prompt_input_ids"]) + max(
            len(out["chosen_input_ids"]), len(out["rejected_input_ids"])
        )
        self._check_length(longest, record)
        out.update(prompt)
        return out

    def decode(self, token_ids: Sequence[int]) -> str:
        """Answer text of generated ids: cut at the first ``<|im_end|>``, special tokens dropped."""
        ids = list(token_ids)
        if self.end_token_id in ids:
            ids = ids[: ids.index(self.end_token_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)
