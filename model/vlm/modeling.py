"""The XMed vision-language model: an HF-native LLaVA/InternVL-style composition.

``XMedVLMForConditionalGeneration`` = vision tower -> MLP projector -> causal LM, plus an optional
Whisper encoder -> audio projector. It is a ``PreTrainedModel`` + ``GenerationMixin``, saved and
loaded with ``save_pretrained``/``from_pretrained`` (safetensors) and registered with
``AutoConfig``, ``AutoModelForImageTextToText`` and ``AutoModelForCausalLM`` (importing this module
registers it), so a tiny model trained here and a real checkpoint go through the same code path.

Spatial inductive bias (a plain tiny LLaVA with learned position embeddings stays near the
constant-box IoU on localisation):

* the vision tower's convolutional stem keeps a spatial grid (64x64 pixels -> 8x8 tokens);
* FIXED 2D sin-cos position embeddings (MAE, https://arxiv.org/abs/2111.06377) are added to the
  grid tokens before a few transformer encoder layers;
* every integer 0..1000 is one token of the tokenizer and :func:`init_coordinate_embeddings`
  initialises those rows from sin-cos features of ``v / 1000``, so neighbouring coordinates start
  close.

Sequence layout: the processor expands every ``<image>`` into ``num_image_tokens`` copies (and
``<audio>`` into ``num_audio_tokens``); :meth:`XMedVLMForConditionalGeneration.forward` replaces
the embeddings at those positions with the projected vision (audio) tokens, images in order.
``pixel_values`` is ``(total_images, 3, H, W)`` for the batch; ``image_counts[b]`` says how many
of them belong to row ``b`` (default: one per row).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama import LlamaConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from model.vlm.audio import AudioProjector, tiny_whisper_config
from model.vlm.configuration import XMedVisionConfig, XMedVLMConfig

__all__ = [
    "XMedVLMForConditionalGeneration",
    "XMedVLMPreTrainedModel",
    "XMedVisionTower",
    "build_tiny_vlm",
    "build_tiny_vlm_for_tokenizer",
    "coordinate_features",
    "count_parameters",
    "freeze",
    "init_coordinate_embeddings",
    "init_induction_heads",
    "init_mimetic_attention",
    "init_offset_heads",
    "read_architecture",
    "sincos_2d",
    "trainable_parameter_names",
    "weighted_answer_loss",
]

#: Parameter groups of :func:`freeze` and :func:`count_parameters` -> module attribute names.
PARAMETER_GROUPS: dict[str, tuple[str, ...]] = {
    "vision": ("vision_tower",),
    "projector": ("projector", "image_classifier"),
    "llm": ("language_model",),
    "audio": ("audio_encoder", "audio_projector"),
}


# ---------------------------------------------------------------------------------------------
# vision tower
# ---------------------------------------------------------------------------------------------


#: Exponent ``p`` of the per-token weight ``n_i ** -p`` of each loss weighting (see ``_supervised_loss``).
LOSS_WEIGHTINGS: dict[str, float] = {"token": 0.0, "square": 0.5, "sample": 1.0}


def weighted_answer_loss(
    per_token: torch.Tensor,
    keep: torch.Tensor,
    loss_weighting: str,
    *,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of per-answer-token losses (see :data:`LOSS_WEIGHTINGS`).

    Args:
        per_token: ``(N,)`` losses of the supervised positions, in ``keep.nonzero()`` order.
        keep: ``(B, L)`` bool, True where a token is supervised (``N`` of them).
        loss_weighting: ``token``, ``square`` or ``sample``: row ``i``'s tokens (``n_i`` of them)
            weigh ``n_i ** -p``.
        num_items_in_batch: denominator of the ``token`` weighting under gradient accumulation.

    Raises:
        ValueError: unknown weighting, or ``per_token`` does not have one entry per kept position.
    """
    if loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"loss_weighting={loss_weighting!r} is not one of {sorted(LOSS_WEIGHTINGS)}")
    if per_token.shape != (int(keep.sum()),):
        raise ValueError(f"per_token has shape {tuple(per_token.shape)}, expected ({int(keep.sum())},)")
    if loss_weighting == "token":
        denom = num_items_in_batch or keep.sum().clamp(min=1)
        return per_token.sum() / denom
    counts = keep.sum(dim=1).clamp(min=1).to(per_token.dtype)
    weights = counts.pow(-LOSS_WEIGHTINGS[loss_weighting])[keep.nonzero()[:, 0]]
    return (per_token * weights).sum() / weights.sum().clamp(min=1e-12)


def sincos_2d(grid: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2D sin-cos position embeddings, ``(grid * grid, dim)``, row-major (y, then x).

    The first half of the channels encodes the row, the second half the column, each with the
    1D transformer encoding ``[sin(p * w_k), cos(p * w_k)]``, ``w_k = 10000 ** (-k / (dim / 4))``
    (MAE's ``get_2d_sincos_pos_embed``).
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float64) / (dim // 4))
    pos = torch.arange(grid, device=device, dtype=torch.float64)
    ang = pos[:, None] * omega[None, :]  # (grid, dim/4)
    one_d = torch.cat([ang.sin(), ang.cos()], dim=1)  # (grid, dim/2)
    rows = one_d[:, None, :].expand(grid, grid, dim // 2)
    cols = one_d[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim).to(dtype)


class XMedVisionTower(nn.Module):
    """Conv stem keeping a spatial grid + fixed 2D sin-cos positions + transformer encoder layers.

    ``(N, C, H, W) -> (N, num_image_tokens, hidden_size)``; grid tokens in row-major order, then
    the summary token when the config has one.
    """

    def __init__(self, config: XMedVisionConfig) -> None:
        super().__init__()
        self.config = config
        stages: list[nn.Module] = []
        c_in = config.in_channels
        for c_out in config.stem_channels:
            stages += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.GELU()]
            c_in = c_out
        stages.append(nn.Conv2d(c_in, config.hidden_size, kernel_size=1))
        self.stem = nn.Sequential(*stages)
        self.pre_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.hidden_size,
                config.num_attention_heads,
                dim_feedforward=config.intermediate_size,
                dropout=0.0,
                activation="gelu",
                layer_norm_eps=config.layer_norm_eps,
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.num_hidden_layers)
        )
        self.post_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.position_table = None
        if config.position_embedding == "learned":
            self.position_table = nn.Parameter(torch.zeros(config.grid_size**2, config.hidden_size))
        self.summary = None
        if config.summary_token:
            self.summary = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def _positions(self, x: torch.Tensor) -> torch.Tensor | float:
        kind = self.config.position_embedding
        if kind == "sincos2d":
            return sincos_2d(self.config.grid_size, self.config.hidden_size, device=x.device, dtype=x.dtype)
        if kind == "learned":
            return self.position_table.to(x.dtype)
        return 0.0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images into grid tokens."""
        x = self.stem(pixel_values).flatten(2).transpose(1, 2)  # (N, grid*grid, D)
        x = self.pre_norm(x) + self._positions(x)
        if self.summary is not None:
            x = torch.cat([x, self.summary.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        for layer in self.layers:
            x = layer(x)
        return self.post_norm(x)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """InternVL's ``mlp1``: LayerNorm -> Linear -> GELU -> Linear."""
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
    )


# ---------------------------------------------------------------------------------------------
# the composite model
# ---------------------------------------------------------------------------------------------


class XMedVLMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and HF class attributes shared by the XMed VLM classes."""

    config_class = XMedVLMConfig
    config: XMedVLMConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text", "audio")
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """Kaiming for the conv stem, HF defaults (normal 0.02, unit norms) for the rest."""
        if isinstance(module, XMedVisionTower) and module.summary is not None:
            init.normal_(module.summary, std=module.config.initializer_range)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class XMedVLMForConditionalGeneration(XMedVLMPreTrainedModel, GenerationMixin):
    """Vision tower + projector + causal LM (+ optional Whisper encoder + audio projector).

    Args:
        config: the composite :class:`~model.vlm.configuration.XMedVLMConfig`.
    """

    def __init__(self, config: XMedVLMConfig) -> None:
        super().__init__(config)
        vis, txt = config.vision_config, config.text_config
        self.vision_tower = XMedVisionTower(vis)
        self.projector = _mlp(vis.hidden_size, config.projector_hidden_size, txt.hidden_size)
        self.language_model = AutoModelForCausalLM.from_config(txt)
        if config.audio_config is not None:
            self.audio_encoder = WhisperEncoder(config.audio_config)
            self.audio_projector = AudioProjector(
                config.audio_config.d_model,
                config.audio_projector_hidden_size,
                txt.hidden_size,
                config.audio_pool,
            )
        else:
            self.audio_encoder = None
            self.audio_projector = None
        self.image_classifier = (
            nn.Linear(txt.hidden_size, len(config.image_label_names)) if config.image_label_names else None
        )
        self.post_init()

    # -- embeddings (so resize_token_embeddings, tying and generation work) ------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # -- modality encoders ---------------------------------------------------------------------
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> projected vision tokens ``(N, num_image_tokens, text_hidden)``."""
        return self.projector(self.vision_tower(pixel_values))

    def get_audio_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """``(A, mel, frames)`` log-mel -> projected audio tokens ``(A, num_audio_tokens, text_hidden)``."""
        if self.audio_encoder is None:
            raise ValueError(
                "this model has no audio encoder (audio_config is None); build it with with_audio=True"
            )
        frames = self.audio_encoder(input_features=input_features).last_hidden_state
        return self.audio_projector(frames)

    def _merge(
        self,
        input_ids: torch.Tensor,
        embeds: torch.Tensor,
        features: torch.Tensor,
        counts: torch.Tensor | None,
        token_id: int | None,
        name: str,
    ) -> torch.Tensor:
        """Write ``features`` (items, tokens, D) over the embeddings of the placeholder tokens."""
        if token_id is None:
            raise ValueError(f"config.{name}_token_id is not set; cannot place {name} features")
        mask = input_ids == token_id
        per_item = features.shape[1]
        if counts is not None:
            if int(counts.sum()) != features.shape[0]:
                raise ValueError(
                    f"{name}_counts sums to {int(counts.sum())} but {features.shape[0]} {name}s were given"
                )
            expected = counts.to(mask.device) * per_item
            if not torch.equal(mask.sum(dim=1), expected):
                raise ValueError(
                    f"<{name}> placeholder tokens per row {mask.sum(dim=1).tolist()} != "
                    f"{name}_counts x {per_item} "
                    f"= {expected.tolist()}; expand each <{name}> with XMedProcessor"
                )
        if int(mask.sum()) != features.shape[0] * per_item:
            raise ValueError(
                f"found {int(mask.sum())} <{name}> placeholder tokens in input_ids but "
                f"{features.shape[0]} {name}s x "
                f"{per_item} tokens; expand each <{name}> with XMedProcessor"
            )
        flat = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
        return embeds.masked_scatter(mask.unsqueeze(-1), flat)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_counts: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_counts: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache=None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        loss_only: bool = False,
        image_labels: torch.LongTensor | None = None,
        image_label_weight: float = 0.0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Embed text, splice in vision/audio tokens, run the causal LM.

        Args:
            input_ids: ``(B, L)`` token ids with expanded ``<image>``/``<audio>`` placeholders.
            attention_mask: ``(B, L)``, 1 = real token.
            position_ids: optional explicit positions.
            pixel_values: ``(total_images, 3, H, W)`` in [-1, 1], images in row order.
            image_counts: ``(B,)`` images per row; None means one image per row (or all rows
                share the flat list; only the total is checked).
            input_features: ``(total_clips, mel, frames)`` log-mel features.
            audio_counts: ``(B,)`` audio clips per row.
            labels: ``(B, L)`` targets, -100 = ignored; the loss is next-token cross-entropy
                (labels are shifted inside the LM).
            cache: the KV cache (``past_key_values`` is accepted as an alias).
            past_key_values: alias of ``cache``.
            inputs_embeds: precomputed embeddings (then no media is spliced in).
            use_cache: return the KV cache.
            logits_to_keep: compute logits for the last ``n`` positions only (0 = all).
            loss_only: with ``labels``, apply the LM head only at supervised positions: the same
                loss for a fraction of the head's compute (training); ``logits`` is then ``(N,
                vocab)``, the supervised positions' logits in row-major order.
            image_labels: ``(total_images,)`` class index of each image in ``config.image_label_names``
                (-100 = none); with ``image_label_weight`` > 0 and ``labels``, the loss adds
                ``image_label_weight`` x the cross-entropy of the image classifier on each image's
                mean projected token (the auxiliary image-level loss).
            image_label_weight: weight of that auxiliary loss (0 = off).
            **kwargs: forwarded to the LM (attention kwargs, ``num_items_in_batch``, ...).

        Returns:
            ``CausalLMOutputWithPast`` with ``loss`` (if labels), ``logits`` and ``cache``.

        Raises:
            ValueError: placeholder counts do not match the media given; an auxiliary image loss
                asked of a model without an image classifier, or labels that do not match the images.
        """
        cache = cache if cache is not None else past_key_values
        image_features = None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.get_input_embeddings()(input_ids)
            prefill = cache is None or cache.get_seq_length() == 0
            media = (
                (pixel_values, image_counts, self.config.image_token_id, "image", self.get_image_features),
                (input_features, audio_counts, self.config.audio_token_id, "audio", self.get_audio_features),
            )
            for items, counts, token_id, name, encode in media:
                if items is not None and items.shape[0] > 0:
                    features = encode(items)
                    if name == "image":
                        image_features = features
                    inputs_embeds = self._merge(input_ids, inputs_embeds, features, counts, token_id, name)
                elif prefill and token_id is not None and bool((input_ids == token_id).any()):
                    raise ValueError(
                        f"input_ids contain <{name}> placeholders but no {name} inputs were given"
                    )
        if labels is not None and use_cache is None:
            use_cache = False  # training / scoring: no KV cache to build
        aux = None
        if image_label_weight > 0 and labels is not None:
            aux = image_label_weight * self._image_label_loss(image_features, image_labels)
        if loss_only:
            if labels is None:
                raise ValueError("loss_only=True needs labels")
            out = self._supervised_loss(inputs_embeds, attention_mask, position_ids, labels, **kwargs)
        else:
            out = self.language_model(
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                inputs_embeds=inputs_embeds,
                labels=labels,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )
        if aux is not None:
            out.loss = out.loss + aux
        return out

    def _image_label_loss(
        self, features: torch.Tensor | None, image_labels: torch.Tensor | None
    ) -> torch.Tensor:
        """Cross-entropy of the image classifier on each image's mean projected token."""
        if self.image_classifier is None:
            raise ValueError(
                "an image-level auxiliary loss needs config.image_label_names (this model has no image classifier)"
            )
        if features is None or image_labels is None:
            raise ValueError("an image-level auxiliary loss needs pixel_values and image_labels")
        if image_labels.shape != (features.shape[0],):
            raise ValueError(
                f"image_labels has shape {tuple(image_labels.shape)}; expected ({features.shape[0]},), one per image"
            )
        logits = self.image_classifier(features.mean(dim=1)).float()
        if bool((image_labels == -100).all()):
            return logits.sum() * 0.0  # no labelled image in this batch: no signal, same graph
        return nn.functional.cross_entropy(logits, image_labels.to(logits.device), ignore_index=-100)

    def _supervised_loss(
        self, inputs_embeds, attention_mask, position_ids, labels, *, loss_weighting: str = "token", **kwargs
    ) -> CausalLMOutputWithPast:
        """Next-token cross-entropy over labels != -100, the head applied at those positions only.

        ``loss_weighting`` sets how answers of different lengths count (InternVL 2.5's choices):
        each supervised token of row ``i`` (``n_i`` of them) gets weight ``n_i ** -p`` with
        ``p = 0`` (``token``: long answers dominate), ``p = 1`` (``sample``: every example counts
        the same) or ``p = 0.5`` (``square``); the loss is the weighted mean. ``num_items_in_batch``
        (gradient accumulation) applies to ``token`` only.
        """
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting={loss_weighting!r} is not one of {sorted(LOSS_WEIGHTINGS)}")
        lm = self.language_model
        hidden = lm.base_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != -100
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        per_token = nn.functional.cross_entropy(logits, targets[keep], reduction="none")
        loss = weighted_answer_loss(
            per_token, keep, loss_weighting, num_items_in_batch=kwargs.get("num_items_in_batch")
        )
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    # -- generation ----------------------------------------------------------------------------
    _MEDIA_KEYS = ("pixel_values", "image_counts", "input_features", "audio_counts")

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_counts: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_counts: torch.LongTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """Media (pixels, log-mels and their counts) go in at the prefill step only when caching.

        After the first step the KV cache already holds the image/audio positions and
        ``input_ids`` is just the newest token, so re-encoding media would be wrong as well as
        wasteful. Without a cache the whole sequence is re-run and media are passed every step.
        """
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if is_first_iteration or not kwargs.get("use_cache", True):
            media = {
                "pixel_values": pixel_values,
                "image_counts": image_counts,
                "input_features": input_features,
                "audio_counts": audio_counts,
            }
            model_inputs.update({k: v for k, v in media.items() if v is not None})
        return model_inputs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ):
        """``num_return_sequences``: repeat each row's OWN images/clips ``expand_size`` times.

        The generic implementation repeat-interleaves every tensor along dim 0, which is wrong for
        the flat ``pixel_values`` of multi-image rows (it would give ``[i0, i0, i1, i1]`` for a
        row that needs ``[i0, i1]`` twice).
        """
        media = {k: model_kwargs.pop(k, None) for k in self._MEDIA_KEYS}
        batch = input_ids.shape[0] if input_ids is not None else None
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size,
            is_encoder_decoder=is_encoder_decoder,
            input_ids=input_ids,
            **model_kwargs,
        )
        if expand_size > 1:
            for items, counts in (("pixel_values", "image_counts"), ("input_features", "audio_counts")):
                media[items], media[counts] = _repeat_rows(media[items], media[counts], expand_size, batch)
        model_kwargs.update({k: v for k, v in media.items() if v is not None})
        return input_ids, model_kwargs


def _repeat_rows(items, counts, n: int, batch: int | None):
    """Repeat each row's chunk of ``items`` (split by ``counts``) ``n`` times, rows in order."""
    if items is None:
        return None, (counts.repeat_interleave(n) if counts is not None else None)
    if counts is None:
        if batch is not None and items.shape[0] != batch:
            raise ValueError(f"{items.shape[0]} media items for {batch} rows: pass image_counts/audio_counts")
        counts = torch.ones(items.shape[0], dtype=torch.long, device=items.device)
    chunks = items.split(counts.tolist())
    out = torch.cat([c for c in chunks for _ in range(n)], dim=0)
    return out, counts.repeat_interleave(n)


# ---------------------------------------------------------------------------------------------
# coordinate tokens, builder, freezing
# ---------------------------------------------------------------------------------------------


def coordinate_features(values: torch.Tensor, dim: int, *, max_value: int = 1000, min_period: float = 16.0):
    """Smooth sin-cos features of ``values / max_value``, ``(n, dim)``, RMS 1 per element.

    Angular frequencies ``w_k = pi * r**k`` rise geometrically from ``pi`` (half a cycle over the
    whole range: monotone, separates far values) to ``2 * pi * max_value / min_period`` (one
    cycle every ``min_period`` coordinate units, about a pixel of a 64-pixel image), so features
    of neighbouring coordinates are close and distant coordinates are distinguishable.
    """
    half = dim // 2
    u = values.double()[:, None] / max_value
    top = 2 * max_value / min_period  # in units of pi
    w = math.pi * top ** (torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    feats = torch.cat([torch.sin(u * w), torch.cos(u * w)], dim=1) * math.sqrt(2.0)
    if dim % 2:
        feats = torch.cat([feats, torch.zeros(len(values), 1, dtype=feats.dtype)], dim=1)
    return feats.float()


@torch.no_grad()
def init_coordinate_embeddings(model: PreTrainedModel, tokenizer, *, max_value: int = 1000) -> list[int]:
    """Initialise the embeddings (and untied output rows) of coordinate tokens "0".."max_value".

    Rows get :func:`coordinate_features` scaled to the text config's ``initializer_range``.

    Args:
        model: an :class:`XMedVLMForConditionalGeneration` (or any model with input embeddings).
        tokenizer: a tokenizer in which every integer ``0..max_value`` is one token.

    Returns:
        The token ids of ``0..max_value``, in value order.

    Raises:
        ValueError: some integer is not a single token of ``tokenizer``.
    """
    ids = [tokenizer.convert_tokens_to_ids(str(v)) for v in range(max_value + 1)]
    unk = getattr(tokenizer, "unk_token_id", None)
    bad = [v for v, i in enumerate(ids) if i is None or i == unk]
    if bad:
        raise ValueError(
            f"coordinate values {bad[:5]}... are not single tokens; train the tokenizer with train_tokenizer"
        )
    emb = model.get_input_embeddings().weight
    std = getattr(model.config.get_text_config(), "initializer_range", 0.02)
    feats = coordinate_features(torch.arange(max_value + 1), emb.shape[1], max_value=max_value) * std
    index = torch.tensor(ids, device=emb.device)
    emb[index] = feats.to(emb.device, emb.dtype)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != emb.data_ptr():
        out.weight[index] = feats.to(out.weight.device, out.weight.dtype)
    return ids


@torch.no_grad()
def init_mimetic_attention(
    layers, *, heads: int | None = None, qk_scale: float = 0.7, vo_scale: float = 1.0
) -> None:
    """Mimetic initialisation of self-attention heads (Trockman & Kolter, 2023), in place.

    In each mimetic head the key projection equals the query projection, drawn with rows of norm
    about ``qk_scale`` (so the head's ``W_q^T W_k`` is positive semi-definite: a token attends to
    earlier copies of itself from the first step), and the head's slice of the output projection is
    ``-vo_scale`` times the scaled transpose of its value projection (``W_o W_v`` close to minus the
    identity on the head's subspace). A from-scratch LLM then learns to compare a word with one
    elsewhere in its context, or to look an option up, from several times fewer examples
    (benchmarks/README.md, eighth round). The other heads keep their initialisation.

    Args:
        layers: decoder layers whose ``self_attn`` has ``{q,k,v,o}_proj`` linear layers and
            ``head_dim`` (Llama), or is an ``nn.MultiheadAttention`` (the vision tower's layers).
        heads: the first ``heads`` heads of each layer are set (default all).
        qk_scale: row norm of the shared query/key projection.
        vo_scale: size of the negative identity ``W_o W_v`` approximates (0 leaves W_o as it is).

    Raises:
        ValueError: fewer key/value heads than query heads, or ``heads`` out of range.
    """
    for layer in layers:
        attn = layer.self_attn
        if isinstance(attn, nn.MultiheadAttention):  # packed rows q, k, v of in_proj_weight
            d = attn.embed_dim
            packed = attn.in_proj_weight
            q, k, v, o = packed[:d], packed[d : 2 * d], packed[2 * d :], attn.out_proj.weight
        else:
            q, k, v, o = (getattr(attn, f"{n}_proj").weight for n in "qkvo")
        if k.shape != q.shape:
            raise ValueError("mimetic attention needs as many key/value heads as query heads")
        head_dim = attn.head_dim
        n_heads = q.shape[0] // head_dim
        chosen = n_heads if heads is None else heads
        if not 0 < chosen <= n_heads:
            raise ValueError(f"mimetic heads {heads} out of range: the layer has {n_heads} heads")
        rows = slice(0, chosen * head_dim)
        w = torch.randn_like(q[rows]) * (qk_scale / math.sqrt(q.shape[1]))
        q[rows] = w
        k[rows] = w
        if vo_scale:
            o[:, rows] = -vo_scale * v[rows].T / v[rows].norm(dim=1).pow(2).mean()


def offset_score_weights(inv_freq: torch.Tensor, offset: int, span: int) -> tuple[torch.Tensor, float]:
    """Non-negative weights ``a_i`` (summing to 1) of the rotary frequencies for a head that attends
    ``offset`` tokens back, and the margin they reach: ``S(d) = sum_i a_i cos((d - offset) theta_i)``
    peaks at ``d = offset``, and the weights maximise its smallest drop ``S(offset) - S(d)`` over every
    other ``0 <= d < span`` (a linear programme over the frequencies)."""
    from scipy.optimize import linprog

    theta = inv_freq.double().cpu().numpy()
    d = np.arange(span)
    d = d[d != offset]
    drop = 1.0 - np.cos(np.outer(d - offset, theta))  # (positions, frequencies)
    n = theta.size
    res = linprog(
        c=np.r_[np.zeros(n), -1.0],  # maximise the margin t
        A_ub=np.hstack([-drop, np.ones((d.size, 1))]),  # t <= drop @ a at every other position
        b_ub=np.zeros(d.size),
        A_eq=np.r_[np.ones(n), 0.0][None],
        b_eq=[1.0],
        bounds=[(0, None)] * n + [(None, None)],
    )
    if not res.success or res.x[-1] <= 0:
        raise ValueError(f"no rotary weighting singles out offset {offset} within {span} positions")
    return torch.tensor(res.x[:n]), float(res.x[-1])


def _orthonormal(n: int, k: int, within: torch.Tensor | None = None) -> torch.Tensor:
    """``k`` random orthonormal columns in R^n (or in the span of ``within``'s orthonormal columns)."""
    g = torch.linalg.qr(torch.randn(n if within is None else within.shape[1], k, dtype=torch.float64))[0]
    return g if within is None else within @ g


def _offset_head_layout(attn, inv_freq: torch.Tensor, offsets: Sequence[int], what: str):
    """Checked sizes of a Llama attention block that gets positional heads: ``(head_dim, hidden,
    n_heads, theta)``; refuses missing query/key biases, offsets out of range and a rotary table
    that does not fit the heads."""
    if attn.q_proj.bias is None or attn.k_proj.bias is None:
        raise ValueError(f"{what} need query/key biases: build the LLM with attention_bias=True")
    head_dim = attn.head_dim
    hidden = attn.q_proj.weight.shape[1]
    n_heads = attn.q_proj.weight.shape[0] // head_dim
    if not offsets or len(offsets) > n_heads or min(offsets) < 1:
        raise ValueError(f"offsets {list(offsets)}: need 1..{n_heads} offsets, each >= 1")
    theta = inv_freq.double().cpu()
    if theta.numel() != head_dim // 2:
        raise ValueError(f"{theta.numel()} rotary frequencies for head_dim {head_dim}")
    return head_dim, hidden, n_heads, theta


@torch.no_grad()
def _positional_query_key(
    attn, rows: slice, offset: int, theta: torch.Tensor, *, span: int, sharpness: float
) -> None:
    """Make the head at ``rows`` of ``attn`` attend ``offset`` tokens back by position alone: zero
    query/key weights, constant query/key biases whose rotary phases differ by ``offset * theta_i``
    (weights from :func:`offset_score_weights`), the offset ``sharpness`` nats above any other position."""
    head_dim = rows.stop - rows.start
    half = head_dim // 2
    a, margin = offset_score_weights(theta, offset, span)
    amp = (a * sharpness * math.sqrt(head_dim) / margin).sqrt()
    # query phase 0 and key phase offset * theta_i in every rotary pair
    q = torch.cat([amp, torch.zeros(half, dtype=amp.dtype)])
    k = torch.cat([amp * torch.cos(offset * theta), amp * torch.sin(offset * theta)])
    for proj, bias in ((attn.q_proj, q), (attn.k_proj, k)):
        proj.weight[rows] = 0
        proj.bias[rows] = bias.to(proj.bias.dtype)


@torch.no_grad()
def init_offset_heads(
    layer, inv_freq: torch.Tensor, offsets: Sequence[int], *, span: int, sharpness: float = 12.0
) -> None:
    """Make the last ``len(offsets)`` heads of a Llama layer previous-token heads, in place.

    Head ``j`` attends ``offsets[j]`` tokens back by position alone (see
    :func:`_positional_query_key`) and copies what it reads: ``W_o W_v`` is the projection onto a
    random ``head_dim``-dimensional subspace of the hidden state. Such heads move a token (or what
    earlier layers computed at it) a fixed number of places on, the first half of an induction
    circuit; the matching half is what mimetic heads (:func:`init_mimetic_attention`) do from
    initialisation. With ``{0: [2], 2: [1]}`` (architecture key ``offset_heads``): the first layer
    writes, at each option text of "B. CT", the letter two tokens before it; a mimetic head of the
    second layer at the answer's " CT" finds the prompt's " CT" and reads that letter; the third
    layer moves it one token on, to the "(" after which "The answer is CT (B)." states the letter.

    Args:
        layer: a Llama decoder layer built with ``attention_bias=True``.
        inv_freq: the rotary inverse frequencies (``rotary_emb.inv_freq``).
        offsets: how far back each head looks (each >= 1).
        span: context length the offset must win over (``max_position_embeddings``).
        sharpness: score margin (nats) of the offset over any other position.

    Raises:
        ValueError: no query/key biases, or offsets out of range.
    """
    attn = layer.self_attn
    head_dim, hidden, n_heads, theta = _offset_head_layout(attn, inv_freq, offsets, "offset heads")
    first = n_heads - len(offsets)
    for j, offset in enumerate(offsets):
        rows = slice((first + j) * head_dim, (first + j + 1) * head_dim)
        _positional_query_key(attn, rows, offset, theta, span=span, sharpness=sharpness)
        basis = _orthonormal(hidden, head_dim)
        attn.v_proj.weight[rows] = basis.T.to(attn.v_proj.weight.dtype)
        attn.o_proj.weight[:, rows] = basis.to(attn.o_proj.weight.dtype)
        if attn.v_proj.bias is not None:
            attn.v_proj.bias[rows] = 0


@torch.no_grad()
def init_induction_heads(
    layers,
    inv_freq: torch.Tensor,
    offsets: Sequence[int],
    *,
    span: int,
    embed_std: float,
    sharpness: float = 12.0,
    match_sharpness: float = 16.0,
    reach: int = 64,
) -> None:
    """An induction circuit present at initialisation (Olsson et al., 2022), in place.

    * The last ``len(offsets)`` heads of ``layers[0]`` attend ``offsets[j]`` tokens back by position
      alone: zero query/key weights, constant query/key biases whose rotary phases differ by
      ``offset * theta_i`` per frequency (weights from :func:`offset_score_weights`), the offset
      beating every other position within ``span`` by ``sharpness`` nats.
    * The hidden space is split into orthogonal parts S, T (head_dim) and the rest R. The first
      offset head writes the *key code* ``K e`` of the token it reads (``K``: orthonormal rows in R)
      into S; the other offset heads write a code of theirs into T.
    * Head 0 of ``layers[1]`` queries with S (the previous token's key code) and keys with ``K``
      (the token itself, blind to S and T), in its slow rotary pairs only, so a position attends to
      the places where the token before it stands elsewhere, at any distance up to ``reach``; its
      value reads T: what stood ``offsets[1]`` before that place. After "CT (" in an answer it
      attends to the " CT" of the prompt line "B. CT" and reads the "B" there: the multiple-choice
      letter becomes one learned read-out instead of a circuit the from-scratch LLM forms only
      after tens of thousands of examples.

    Args:
        layers: Llama decoder layers built with ``attention_bias=True``; at least two.
        inv_freq: the rotary inverse frequencies (``rotary_emb.inv_freq``).
        offsets: how far back each offset head of layer 0 looks (e.g. ``(1, 2)``).
        span: context length the offset must win over (``max_position_embeddings``).
        embed_std: standard deviation of the LLM's token embeddings (``initializer_range``): the
            offset heads write codes of 3x that size per entry, so the token a position holds still
            shows next to what is copied into it.
        sharpness: score margin (nats) of the offset over any other position.
        match_sharpness: expected score (nats) of the induction head on a matching token at
            initialisation (its query/key scale is solved for it from the sizes above).
        reach: token distance over which the match must hold (selects the slow rotary pairs,
            those turning less than 0.5 rad over it).

    Raises:
        ValueError: no query/key biases, fewer than two layers, offsets out of range, no slow
            enough rotary pair, or a hidden size too small for the three subspaces.
    """
    if len(layers) < 2:
        raise ValueError("induction heads need at least two LLM layers")
    attn, match = layers[0].self_attn, layers[1].self_attn
    head_dim, hidden, n_heads, theta = _offset_head_layout(attn, inv_freq, offsets, "induction heads")
    half = head_dim // 2
    slow = (theta * reach < 0.5).nonzero().flatten()
    if slow.numel() == 0:
        raise ValueError(f"no rotary frequency turns slowly enough to match over {reach} tokens")
    code_rows = torch.cat([slow, slow + half])
    code = code_rows.numel()
    if hidden < 2 * code + head_dim:
        raise ValueError(f"hidden size {hidden} < {2 * code + head_dim} (two codes of {code} and a head)")
    basis = _orthonormal(hidden, hidden)
    s_space, t_space, r_space = basis[:, :code], basis[:, code : code + head_dim], basis[:, code + head_dim :]
    key_code = _orthonormal(hidden, code, within=r_space)  # (hidden, code): K = key_code.T
    first = n_heads - len(offsets)
    vo_scale = 3.0 * embed_std
    # residual entering layer 1, per entry: the embedding (embed_std) + the S code (vo_scale on
    # `code` entries) + the T codes (vo_scale on head_dim entries per further offset head); the
    # match q.k = qk^2 vo embed_std code / rms^2 (RMSNorm'd), divided by sqrt(head_dim)
    rms2 = (embed_std**2 * hidden + vo_scale**2 * (code + head_dim * (len(offsets) - 1))) / hidden
    qk_scale = math.sqrt(match_sharpness * math.sqrt(head_dim) * rms2 / (vo_scale * embed_std * code))

    def put(proj, rows, weight):
        proj.weight[rows] = weight.to(proj.weight.dtype)

    for j, offset in enumerate(offsets):
        rows = slice((first + j) * head_dim, (first + j + 1) * head_dim)
        _positional_query_key(attn, rows, offset, theta, span=span, sharpness=sharpness)
        v = torch.zeros(head_dim, hidden, dtype=torch.float64)
        o = torch.zeros(hidden, head_dim, dtype=torch.float64)
        if j == 0:  # value = the key code of the token read, written into S
            v[:code], o[:, :code] = key_code.T, vo_scale * s_space
        else:  # a code of the token read, written into T
            v, o = _orthonormal(hidden, head_dim).T, vo_scale * t_space
        put(attn.v_proj, rows, v)
        attn.o_proj.weight[:, rows] = o.to(attn.o_proj.weight.dtype)
    head0 = slice(0, head_dim)
    q = torch.zeros(head_dim, hidden, dtype=torch.float64)
    k = torch.zeros(head_dim, hidden, dtype=torch.float64)
    q[code_rows], k[code_rows] = qk_scale * s_space.T, qk_scale * key_code.T
    put(match.q_proj, head0, q)
    put(match.k_proj, head0, k)
    put(match.v_proj, head0, t_space.T)
    match.o_proj.weight[:, head0] = (vo_scale * _orthonormal(hidden, head_dim)).to(match.o_proj.weight.dtype)
    for proj in (match.q_proj, match.k_proj, match.v_proj):
        if proj.bias is not None:
            proj.bias[head0] = 0


def build_tiny_vlm(
    *,
    vocab_size: int,
    image_size: int,
    grid: int,
    vision_hidden: int,
    vision_layers: int,
    text_hidden: int,
    text_layers: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    image_token_id: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int | None = None,
    projector_hidden: int | None = None,
    stem_channels: Sequence[int] | None = None,
    with_audio: bool = False,
    audio_token_id: int | None = None,
    audio_hidden: int = 64,
    audio_layers: int = 2,
    audio_seconds: int = 6,
    audio_pool: int = 6,
    tie_word_embeddings: bool = False,
    position_embedding: str = "sincos2d",
    mimetic_heads: int = 0,
    induction_offsets: Sequence[int] = (),
    offset_heads: dict[int, Sequence[int]] | None = None,
    mimetic_vision: bool = False,
    summary_token: bool = False,
    image_label_names: Sequence[str] | None = None,
    seed: int | None = None,
) -> XMedVLMForConditionalGeneration:
    """A randomly initialised tiny XMed VLM (Llama LM, conv+ViT vision tower, optional Whisper).

    Args:
        vocab_size: ``len(tokenizer)``.
        image_size: input image side (pixels).
        grid: vision token grid side (``image_size / grid`` must be a power of two).
        vision_hidden: vision token width.
        vision_layers: vision transformer layers.
        text_hidden: LLM width.
        text_layers: LLM decoder layers.
        heads: attention heads (vision, LLM and audio encoder).
        intermediate: LLM MLP width (the vision MLP uses ``2 * vision_hidden``).
        max_positions: LLM context length.
        image_token_id: id of ``<image>``.
        pad_token_id: id of ``<pad>``.
        eos_token_id: generation stop token (``<|im_end|>``).
        bos_token_id: id of ``<s>`` (not prepended by the chat template).
        projector_hidden: projector MLP width (default ``text_hidden``).
        stem_channels: conv stage widths (default doubling from 16, capped at ``vision_hidden``).
        with_audio: add a Whisper encoder and audio projector.
        audio_token_id: id of ``<audio>`` (required with audio).
        audio_hidden: Whisper encoder width.
        audio_layers: Whisper encoder layers.
        audio_seconds: audio clip length (``max_source_positions = 50 * seconds``).
        audio_pool: encoder frames per audio token.
        tie_word_embeddings: share the LLM input and output embeddings.
        position_embedding: vision-token positions, ``sincos2d`` (fixed), ``learned`` or ``none``.
        mimetic_heads: LLM attention heads per layer given :func:`init_mimetic_attention` (0: none).
        induction_offsets: give the LLM an induction circuit at initialisation
            (:func:`init_induction_heads`): the last ``len(induction_offsets)`` heads of the first
            layer attend that many tokens back, head 0 of the second layer matches on them; the LLM
            gets query/key/value/output biases and the first layer no mimetic heads. Empty: none.
        mimetic_vision: give every head of the vision transformer layers the mimetic initialisation.
        summary_token: append a learned summary (class) token to each image's grid tokens.
        image_label_names: classes of an image-level classifier on the mean projected image tokens
            (an auxiliary training loss, e.g. the imaging modalities); None = none.
        seed: seed the initialisation (the global RNG state is restored afterwards).
    """
    stages = round(math.log2(image_size / grid))
    if stem_channels is None:
        stem_channels = [min(vision_hidden, 16 * 2**i) for i in range(stages)]
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=intermediate,
        num_hidden_layers=text_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
        attention_bias=bool(induction_offsets or offset_heads),
    )
    vision = XMedVisionConfig(
        image_size=image_size,
        stem_channels=list(stem_channels),
        grid_size=grid,
        hidden_size=vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=heads,
        intermediate_size=2 * vision_hidden,
        position_embedding=position_embedding,
        summary_token=summary_token,
    )
    audio = None
    if with_audio:
        audio = tiny_whisper_config(
            d_model=audio_hidden,
            layers=audio_layers,
            heads=heads,
            ffn_dim=2 * audio_hidden,
            seconds=audio_seconds,
        )
    config = XMedVLMConfig(
        vision_config=vision,
        text_config=text,
        audio_config=audio,
        projector_hidden_size=projector_hidden or text_hidden,
        audio_projector_hidden_size=projector_hidden or text_hidden,
        audio_pool=audio_pool,
        image_token_id=image_token_id,
        audio_token_id=audio_token_id,
        image_label_names=list(image_label_names or []),
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = XMedVLMForConditionalGeneration(config)
        llm = model.language_model.model
        if mimetic_heads:  # the first layer's heads are positional with an induction circuit
            init_mimetic_attention(llm.layers[1:] if induction_offsets else llm.layers, heads=mimetic_heads)
        if induction_offsets:
            init_induction_heads(
                llm.layers,
                llm.rotary_emb.inv_freq,
                induction_offsets,
                span=max_positions,
                embed_std=text.initializer_range,
            )
        for index, offsets in sorted((offset_heads or {}).items()):
            if not 0 <= int(index) < len(llm.layers):
                raise ValueError(f"offset_heads: layer {index} out of range (the LLM has {len(llm.layers)})")
            init_offset_heads(llm.layers[int(index)], llm.rotary_emb.inv_freq, offsets, span=max_positions)
        if mimetic_vision:
            init_mimetic_attention(model.vision_tower.layers)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = eos_token_id, pad_token_id, bos_token_id
    return model


def _has_coordinate_tokens(tokenizer) -> bool:
    """True when "1000" is one token (tokenizers trained with coordinate tokens)."""
    tid = tokenizer.convert_tokens_to_ids("1000")
    return tid is not None and tid != getattr(tokenizer, "unk_token_id", None)


def build_tiny_vlm_for_tokenizer(
    tokenizer, *, seed: int | None = None, smooth_coordinates: bool = True, **architecture
) -> XMedVLMForConditionalGeneration:
    """:func:`build_tiny_vlm` with the vocabulary size and token ids read from ``tokenizer``.

    Coordinate-token embeddings are initialised with :func:`init_coordinate_embeddings`.

    Args:
        tokenizer: a tokenizer from :func:`model.tokenizer.train_tokenizer`.
        seed: initialisation seed.
        smooth_coordinates: initialise the coordinate-token rows from a smooth function of their
            value (False keeps the random initialisation; for the localisation ablation).
        **architecture: the remaining :func:`build_tiny_vlm` arguments (e.g. the ``architecture``
            block of ``model/configs/model/<profile>.yaml``, see :func:`read_architecture`).
    """
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "bos_token_id": tokenizer.bos_token_id,
    }
    if architecture.get("with_audio"):
        ids["audio_token_id"] = tokenizer.convert_tokens_to_ids("<audio>")
    model = build_tiny_vlm(vocab_size=len(tokenizer), seed=seed, **ids, **architecture)
    if smooth_coordinates and _has_coordinate_tokens(tokenizer):
        init_coordinate_embeddings(model, tokenizer)
    return model


def read_architecture(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """Read ``model/configs/model/<profile>.yaml``: the architecture kwargs and the tokenizer vocab size.

    Raises:
        ValueError: a section is missing, or ``architecture`` has keys that
            :func:`build_tiny_vlm` does not take (or that come from the tokenizer).
    """
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    arch, tok = doc.get("architecture"), doc.get("tokenizer")
    if not isinstance(arch, dict) or not isinstance(tok, dict) or "vocab_size" not in tok:
        raise ValueError(f"{path}: needs an 'architecture' mapping and 'tokenizer: {{vocab_size: N}}'")
    allowed = set(inspect.signature(build_tiny_vlm).parameters) - _TOKENIZER_KWARGS
    unknown = sorted(set(arch) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown architecture key(s) {unknown}; allowed: {sorted(allowed)}")
    return arch, int(tok["vocab_size"])


_TOKENIZER_KWARGS = {
    "vocab_size",
    "image_token_id",
    "audio_token_id",
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "seed",
}


#: the attention blocks of the supported LLMs (Llama / Qwen2 ``self_attn``, InternLM2 ``attention``)
ATTENTION_MODULE_NAMES = ("self_attn", "attention")


def _group_modules(model: nn.Module, group: str) -> list[nn.Module]:
    return [m for name in PARAMETER_GROUPS[group] if (m := getattr(model, name, None)) is not None]


def freeze(
    model: nn.Module,
    *,
    vision: bool,
    projector: bool,
    llm: bool,
    audio: bool,
    lm_head: bool = False,
    llm_attention: bool = False,
) -> int:
    """Set ``requires_grad`` per part: True freezes the part, False makes it trainable.

    Parts: ``vision`` = vision tower, ``projector`` = vision projector, ``llm`` = language model
    (embeddings and head included), ``audio`` = Whisper encoder + audio projector (ignored when
    the model has none). Whisper's fixed position table stays frozen whatever ``audio`` says.
    ``lm_head`` also freezes the LLM's output projection when the rest of the LLM trains (a fixed
    classifier, Hoffer et al. 2018, https://arxiv.org/abs/1801.04540: the output rows of answers
    that share their contexts cannot be pulled together while the model does not yet tell them
    apart). ``llm_attention`` freezes the attention projections of every LLM layer (the modules
    named ``self_attn`` / ``attention``) while its MLPs, norms, embeddings and head train: a later
    stage then cannot rewire which token attends to which (the in-context matches SFT formed).

    Returns:
        The number of trainable parameters afterwards.

    Raises:
        ValueError: ``lm_head`` on a model whose output projection is tied to its input embeddings;
            ``llm_attention`` on a language model without such modules.
    """
    for group, frozen in (("vision", vision), ("projector", projector), ("llm", llm), ("audio", audio)):
        for module in _group_modules(model, group):
            module.requires_grad_(not frozen)
    if lm_head:
        head = model.get_output_embeddings()
        if head.weight is model.get_input_embeddings().weight:
            raise ValueError("freeze lm_head: the output projection is tied to the input embeddings")
        head.requires_grad_(False)
    if llm_attention:
        blocks = [
            m
            for name, m in model.language_model.named_modules()
            if name.rsplit(".", 1)[-1] in ATTENTION_MODULE_NAMES
        ]
        if not blocks:
            raise ValueError(
                f"freeze llm_attention: the language model has no module named one of {ATTENTION_MODULE_NAMES}"
            )
        for block in blocks:
            block.requires_grad_(False)
    encoder = getattr(model, "audio_encoder", None)
    if encoder is not None:
        encoder.embed_positions.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad`` (tied parameters listed once)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts per part (``vision``, ``projector``, ``llm``, ``audio``) and ``total``.

    Tied parameters are counted once.
    """
    out = {
        g: sum(p.numel() for m in _group_modules(model, g) for p in m.parameters()) for g in PARAMETER_GROUPS
    }
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


AutoConfig.register(XMedVLMConfig.model_type, XMedVLMConfig, exist_ok=True)
AutoModelForImageTextToText.register(XMedVLMConfig, XMedVLMForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(XMedVLMConfig, XMedVLMForConditionalGeneration, exist_ok=True)
