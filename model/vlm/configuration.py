"""Configurations of the XMed vision-language model (HF ``PreTrainedConfig`` subclasses).

``XMedVLMConfig`` (``model_type="xmed_vlm"``) composes three sub-configurations, the way LLaVA
and InternVL do, so that ``save_pretrained``/``from_pretrained`` and the ``Auto*`` classes work:

* ``vision_config``: an :class:`XMedVisionConfig` (convolutional stem that keeps a spatial grid,
  fixed 2D sin-cos position embeddings, a few transformer encoder layers);
* ``text_config``: any causal-LM config (a tiny ``LlamaConfig`` here; a real checkpoint's config
  when one is loaded from a local path);
* ``audio_config`` (optional): a ``WhisperConfig`` whose encoder turns log-mel features into
  audio tokens.

The number of vision tokens per image is ``grid_size ** 2`` and the number of audio tokens per clip
is ``max_source_positions // audio_pool``; the processor expands every ``<image>`` / ``<audio>``
placeholder into that many copies of the placeholder token.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = ["POSITION_EMBEDDINGS", "XMedVLMConfig", "XMedVisionConfig"]

#: Kinds of vision-token position embedding.
POSITION_EMBEDDINGS: tuple[str, ...] = ("sincos2d", "learned", "none")


class XMedVisionConfig(PreTrainedConfig):
    """The vision tower: stride-2 conv stages down to a ``grid_size x grid_size`` grid, then a ViT.

    Attributes:
        image_size: input side in pixels (square images).
        in_channels: input channels (3: grayscale images are converted to RGB by the processor).
        stem_channels: output channels of each 3x3 stride-2 conv stage; their number ``n`` must
            satisfy ``image_size == grid_size * 2**n``. A 1x1 conv then maps to ``hidden_size``.
        grid_size: side of the token grid (``grid_size**2`` tokens per image).
        hidden_size: width of the vision tokens (divisible by 4 for the 2D sin-cos embedding).
        num_hidden_layers: transformer encoder layers on the grid tokens.
        num_attention_heads: attention heads of those layers.
        intermediate_size: MLP width of those layers.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal initialisation of linear layers.
        position_embedding: ``sincos2d`` (fixed 2D sin-cos, the default), ``learned`` (a trained
            table, as a plain ViT/LLaVA) or ``none``; the alternatives exist for the localisation
            ablation (``benchmarks/localisation_ablation.py``).
        summary_token: append one learned summary token (a ViT class token) that attends over the
            grid in every encoder layer; it follows the grid tokens (``grid_size**2 + 1`` tokens).
    """

    model_type = "xmed_vision"
    base_config_key = "vision_config"

    image_size: int = 64
    in_channels: int = 3
    stem_channels: list[int] | tuple[int, ...] = (32, 64, 64)
    grid_size: int = 8
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    position_embedding: str = "sincos2d"
    summary_token: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.stem_channels = [int(c) for c in self.stem_channels]
        stages = len(self.stem_channels)
        if self.image_size != self.grid_size * 2**stages:
            raise ValueError(
                f"XMedVisionConfig: image_size={self.image_size} must equal "
                "grid_size * 2**len(stem_channels) "
                f"= {self.grid_size} * 2**{stages}; add or remove stem stages or change grid_size"
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"XMedVisionConfig: position_embedding={self.position_embedding!r} is not one of "
                f"{POSITION_EMBEDDINGS}"
            )
        if self.hidden_size % 4:
            raise ValueError(
                f"XMedVisionConfig: hidden_size={self.hidden_size} must be divisible by 4 (2D sin-cos)"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"XMedVisionConfig: hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @property
    def num_image_tokens(self) -> int:
        """Vision tokens per image (``grid_size ** 2``, + 1 with the summary token)."""
        return self.grid_size**2 + int(self.summary_token)


class XMedVLMConfig(PreTrainedConfig):
    """Composite configuration of :class:`~model.vlm.modeling.XMedVLMForConditionalGeneration`.

    Attributes:
        vision_config: :class:`XMedVisionConfig` (or its dict).
        text_config: the causal LM's config (dict with ``model_type``; default ``llama``).
        audio_config: a ``WhisperConfig`` (or dict) for the optional audio encoder; None = no audio.
        projector_hidden_size: hidden width of the vision -> LLM MLP projector.
        audio_projector_hidden_size: hidden width of the audio -> LLM MLP projector.
        audio_pool: average-pooling stride over the Whisper encoder's output frames.
        image_token_id: id of ``<image>`` in the tokenizer.
        audio_token_id: id of ``<audio>`` in the tokenizer (required when ``audio_config`` is set).
        tie_word_embeddings: mirrors ``text_config.tie_word_embeddings``.
        image_label_names: class names of an image-level classifier on the mean projected image
            tokens (e.g. the imaging modalities); empty = no classifier. Trained as an auxiliary
            loss (``image_labels`` in the forward), it gives the image tokens a direction the LLM
            can read for every image, not only on the rows that ask about it.
    """

    model_type = "xmed_vlm"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": XMedVisionConfig,
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="whisper", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    projector_hidden_size: int = 256
    audio_projector_hidden_size: int = 256
    audio_pool: int = 6
    image_token_id: int | None = None
    audio_token_id: int | None = None
    tie_word_embeddings: bool = False
    image_label_names: list[str] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.image_label_names = list(self.image_label_names or [])
        if len(set(self.image_label_names)) != len(self.image_label_names):
            raise ValueError(f"XMedVLMConfig: image_label_names repeat a name: {self.image_label_names}")
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        if self.audio_config is not None:
            if self.audio_token_id is None:
                raise ValueError("XMedVLMConfig: audio_config is set but audio_token_id is None")
            if self.audio_config.max_source_positions % 50:
                raise ValueError(
                    "XMedVLMConfig: audio_config.max_source_positions="
                    f"{self.audio_config.max_source_positions} must be a multiple of 50 "
                    "(whole seconds of 10 ms mel frames, two frames per position)"
                )
            if self.audio_config.max_source_positions % self.audio_pool:
                raise ValueError(
                    "XMedVLMConfig: audio_config.max_source_positions="
                    f"{self.audio_config.max_source_positions} must be divisible by "
                    f"audio_pool={self.audio_pool}"
                )

    @property
    def num_image_tokens(self) -> int:
        """Placeholder tokens per image (``vision_config.num_image_tokens``)."""
        return self.vision_config.num_image_tokens

    @property
    def num_audio_tokens(self) -> int:
        """Placeholder tokens per audio clip (0 without an audio encoder)."""
        if self.audio_config is None:
            return 0
        return self.audio_config.max_source_positions // self.audio_pool

    @property
    def audio_seconds(self) -> int:
        """Clip length the audio encoder expects (Whisper: 2 mel frames of 10 ms per position)."""
        if self.audio_config is None:
            return 0
        return self.audio_config.max_source_positions // 50
