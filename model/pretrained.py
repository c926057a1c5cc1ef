"""The ``prod`` model path: a real HF vision-language checkpoint from a local directory.

* :func:`check_checkpoint_dir` says, before anything is loaded, exactly what a checkpoint directory
  lacks (config, safetensors weights or their shards, tokenizer, InternVL2's remote-code files) and
  how to put it there offline (:class:`CheckpointNotFoundError`).
* :func:`load_pretrained_vlm` loads with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1``),
  dispatching on ``config.json``'s ``model_type``: ``xmed_vlm`` -> our
  :class:`~model.vlm.modeling.XMedVLMForConditionalGeneration`; ``internvl_chat`` (InternVL2-8B) ->
  ``AutoModel`` with the checkpoint's own remote code; anything else ->
  ``AutoModelForImageTextToText`` (HF-native VLMs such as ``internvl``/``llava``).
* :func:`apply_freeze_policy` freezes parts by name as the InternVL2-8B full fine-tune does
  (vision backbone frozen; ``mlp1`` projector and LLM trained), with LoRA on the LLM as an option.
* :class:`ProdModelConfig` / :func:`load_prod_model_config` validate
  ``model/configs/model/prod.yaml`` on CPU without the checkpoint; :meth:`ProdModelConfig.check_paths`
  then checks the checkpoint itself.

Wiring (a recipe)::

    cfg = load_prod_model_config("model/configs/model/prod.yaml"); cfg.check_paths()
    model, tokenizer = load_pretrained_vlm(cfg.checkpoint.path, dtype=cfg.checkpoint.dtype)
    model = apply_freeze_policy(model, cfg.freeze.model_dump(), lora=cfg.lora_kwargs())
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from model.lora import add_lora, is_lora_parameter
from model.tokenizer import load_tokenizer
from model.vlm.modeling import XMedVLMForConditionalGeneration, freeze

__all__ = [
    "CheckpointNotFoundError",
    "CheckpointSettings",
    "FreezeSettings",
    "LoraSettings",
    "ProdModelConfig",
    "TilingSettings",
    "apply_freeze_policy",
    "check_checkpoint_dir",
    "load_pretrained_vlm",
    "load_prod_model_config",
    "parameter_group",
    "trainable_parameters_by_group",
]

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
INTERNVL_REMOTE_CODE: tuple[str, ...] = ("configuration_internvl_chat.py", "modeling_internvl_chat.py")
#: Module-name components that identify a parameter's part (InternVL2, HF-native VLMs, ours).
GROUP_COMPONENTS: dict[str, frozenset[str]] = {
    "vision": frozenset({"vision_model", "vision_tower", "visual"}),
    "projector": frozenset({"mlp1", "multi_modal_projector", "projector"}),
    "llm": frozenset({"language_model", "lm_head"}),
    "audio": frozenset({"audio_encoder", "audio_projector", "audio_tower"}),
}


# ---------------------------------------------------------------------------------------------
# checking a checkpoint directory
# ---------------------------------------------------------------------------------------------


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint directory is missing or incomplete; the message says what to put there."""


def _how_to_fix(path: Path) -> str:
    return (
        "A checkpoint directory must hold:\n"
        "  - config.json\n"
        "  - the weights: model.safetensors, or model.safetensors.index.json and every shard it lists\n"
        "  - the tokenizer: tokenizer_config.json and tokenizer.json or tokenizer.model\n"
        "  - for InternVL2 (model_type internvl_chat) its remote-code files "
        f"{', '.join(INTERNVL_REMOTE_CODE)} and the other *.py files of the snapshot\n"
        "Nothing is downloaded at run time (local_files_only=True, HF_HUB_OFFLINE=1). To obtain it "
        "offline, copy the complete InternVL2-8B snapshot directory there: on a machine with network "
        "access run `hf download OpenGVLab/InternVL2-8B --local-dir InternVL2-8B` and copy that folder "
        f"to {path}, or point checkpoint.path in model/configs/model/prod.yaml at the folder you have."
    )


def _missing_weights(root: Path) -> list[str]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        if not shards:
            return [f"{index.name} lists no shards (empty weight_map)"]
        return [f"weight shard {s} (listed in {index.name})" for s in shards if not (root / s).is_file()]
    if any(root.glob("*.safetensors")):
        return []
    return ["model weights (model.safetensors, or model.safetensors.index.json with its shards)"]


def _remote_code_files(root: Path, config: Mapping[str, Any]) -> list[str]:
    """The .py files InternVL2 needs: the two fixed ones plus every module its auto_map names."""
    files = set(INTERNVL_REMOTE_CODE)
    for doc in (
        config,
        _read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {},
    ):
        for ref in (doc.get("auto_map") or {}).values():
            for item in ref if isinstance(ref, list) else [ref]:
                if isinstance(item, str) and "." in item:
                    files.add(item.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(files)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); copy the file again from the checkpoint snapshot"
        ) from e


def check_checkpoint_dir(path: str | os.PathLike) -> dict[str, Any]:
    """Check that ``path`` holds a loadable checkpoint, before any loading.

    Args:
        path: the local checkpoint directory.

    Returns:
        The parsed ``config.json``.

    Raises:
        CheckpointNotFoundError: the directory or any required file is missing; the message names
            the path, every missing item and how to obtain the checkpoint offline.
        ValueError: ``config.json`` (or the weight index) is not valid JSON.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointNotFoundError(f"checkpoint directory {root} does not exist.\n{_how_to_fix(root)}")
    if not (root / "config.json").is_file():
        raise CheckpointNotFoundError(f"checkpoint directory {root} has no config.json.\n{_how_to_fix(root)}")
    config = _read_json(root / "config.json")
    missing = _missing_weights(root)
    if not (root / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json")
    if not any((root / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        missing.append("tokenizer.json or tokenizer.model")
    if config.get("model_type") == "internvl_chat":
        missing += [
            f"remote-code file {f}" for f in _remote_code_files(root, config) if not (root / f).is_file()
        ]
    if missing:
        raise CheckpointNotFoundError(
            f"checkpoint directory {root} (model_type {config.get('model_type')!r}) is incomplete; "
            f"missing: {'; '.join(missing)}.\n{_how_to_fix(root)}"
        )
    return config


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def load_pretrained_vlm(
    path: str | os.PathLike,
    *,
    dtype: str = "bfloat16",
    trust_remote_code: bool = True,
    device_map: str | dict | None = None,
) -> tuple[nn.Module, Any]:
    """Load a vision-language checkpoint and its tokenizer (or processor) from a local directory.

    Args:
        path: checkpoint directory (see :func:`check_checkpoint_dir`).
        dtype: ``bfloat16``, ``float16`` or ``float32``.
        trust_remote_code: run the model code shipped in the directory (needed by InternVL2).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``); None loads on CPU.

    Returns:
        ``(model, tokenizer)`` for ``xmed_vlm`` and ``internvl_chat``; ``(model, processor)`` for
        other HF VLMs.

    Raises:
        CheckpointNotFoundError: the directory is incomplete (nothing is loaded).
        ValueError: unknown ``dtype``, or InternVL2 without ``trust_remote_code``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    config = check_checkpoint_dir(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": DTYPES[dtype]}
    if device_map is not None:
        kwargs["device_map"] = device_map
    path = str(path)
    model_type = config.get("model_type")
    if model_type == "xmed_vlm":
        return XMedVLMForConditionalGeneration.from_pretrained(path, **kwargs), load_tokenizer(path)
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    if model_type == "internvl_chat":
        if not trust_remote_code:
            raise ValueError(
                f"{path}: InternVL2 (model_type internvl_chat) ships its model code in the checkpoint; "
                "load it with trust_remote_code=True"
            )
        model = AutoModel.from_pretrained(path, trust_remote_code=True, **kwargs)
        tok = AutoTokenizer.from_pretrained(
            path, trust_remote_code=True, use_fast=False, local_files_only=True
        )
        return model, tok
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    return model, AutoProcessor.from_pretrained(
        path, trust_remote_code=trust_remote_code, local_files_only=True
    )


# ---------------------------------------------------------------------------------------------
# freeze policy (+ LoRA)
# ---------------------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True)


class FreezeSettings(BaseModel):
    """Which parts train. Default = InternVL2-8B full fine-tune: vision frozen, MLP + LLM trained."""

    model_config = _STRICT
    vision: Literal["frozen", "trained"] = Field("frozen", description="vision backbone (InternViT)")
    projector: Literal["frozen", "trained"] = Field("trained", description="vision -> LLM MLP (mlp1)")
    llm: Literal["trained", "frozen", "lora"] = Field(
        "trained", description="language model; lora = adapters only"
    )
    audio: Literal["frozen", "trained"] = Field("frozen", description="audio encoder + projector, if any")


def parameter_group(name: str) -> str | None:
    """The part (``vision``, ``projector``, ``llm``, ``audio``) a parameter name belongs to, or None."""
    parts = name.split(".")
    for group, components in GROUP_COMPONENTS.items():
        if any(p in components for p in parts):
            return group
    return None


def apply_freeze_policy(
    model: nn.Module,
    policy: Mapping[str, str] | FreezeSettings,
    lora: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Set ``requires_grad`` per part; with ``llm: lora`` wrap the LLM's linear layers in LoRA.

    Parts are found by module name (:data:`GROUP_COMPONENTS`: InternVL2's ``vision_model`` /
    ``mlp1`` / ``language_model``, HF VLMs' ``vision_tower`` / ``multi_modal_projector`` /
    ``language_model`` / ``lm_head``); our model goes through :func:`model.vlm.modeling.freeze`.

    Args:
        model: the loaded model.
        policy: ``{"vision": "frozen"|"trained", "projector": ..., "llm": "trained"|"frozen"|"lora",
            "audio": ...}`` (missing keys take :class:`FreezeSettings` defaults).
        lora: ``{"r", "alpha", "dropout", "target_modules"}`` (:func:`model.lora.add_lora`);
            required when ``llm`` is ``lora``.

    Returns:
        The model, wrapped in a ``peft.PeftModel`` when LoRA was added.

    Raises:
        ValueError: an invalid policy, ``llm: lora`` without ``lora`` settings, or parameters that
            belong to no known part (named in the message).
    """
    p = policy if isinstance(policy, FreezeSettings) else FreezeSettings.model_validate(dict(policy))
    ours = isinstance(model, XMedVLMForConditionalGeneration)
    unknown = [] if ours else [n for n, _ in model.named_parameters() if parameter_group(n) is None]
    if unknown:
        raise ValueError(
            f"cannot tell which part {len(unknown)} parameter(s) belong to (e.g. {unknown[:3]}); known "
            f"module names: {sorted(set().union(*GROUP_COMPONENTS.values()))}"
        )
    if p.llm == "lora":
        if not lora:
            raise ValueError(
                "freeze policy llm: lora needs lora settings {r, alpha, dropout, target_modules}"
            )
        model = add_lora(model, **lora)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    trained = {g: getattr(p, g) == "trained" for g in GROUP_COMPONENTS}
    if ours:
        freeze(base, **{g: not t for g, t in trained.items()})
    else:
        for name, param in base.named_parameters():
            param.requires_grad_(trained[parameter_group(name)])
    for name, param in base.named_parameters():
        if is_lora_parameter(name):
            param.requires_grad_(True)
    return model


def trainable_parameters_by_group(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts per part, plus ``lora`` (LoRA adapters) and ``other`` (unassigned)."""
    out = dict.fromkeys([*GROUP_COMPONENTS, "lora", "other"], 0)
    for name, param in model.named_parameters():
        if param.requires_grad:
            key = "lora" if is_lora_parameter(name) else (parameter_group(name) or "other")
            out[key] += param.numel()
    return out


# ---------------------------------------------------------------------------------------------
# the prod model config (model/configs/model/prod.yaml)
# ---------------------------------------------------------------------------------------------


class CheckpointSettings(BaseModel):
    """Where the checkpoint is and how to load it."""

    model_config = _STRICT
    path: str = Field(description="local checkpoint directory (InternVL2-8B snapshot)")
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="load/training dtype")
    trust_remote_code: bool = Field(True, description="run the model code shipped with the checkpoint")


class LoraSettings(BaseModel):
    """LoRA on the LLM (used when ``enabled``; then ``freeze.llm`` must be ``lora``)."""

    model_config = _STRICT
    enabled: bool = Field(False, description="train LoRA adapters instead of the full LLM")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (update scale alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        min_length=1, description="LLM linear layer names (InternLM2: wqkv, wo, w1..w3)"
    )


class TilingSettings(BaseModel):
    """InternVL dynamic-resolution tiling (:func:`model.vlm.tiling.dynamic_preprocess`)."""

    model_config = _STRICT
    image_size: int = Field(448, ge=1, description="tile side in pixels")
    min_num: int = Field(1, ge=1, description="fewest tiles")
    max_num: int = Field(12, ge=1, description="most tiles (thumbnail extra)")
    use_thumbnail: bool = Field(True, description="add a whole-image thumbnail when there are several tiles")

    @model_validator(mode="after")
    def _bounds(self) -> TilingSettings:
        if self.min_num > self.max_num:
            raise ValueError(f"tiling.min_num={self.min_num} > tiling.max_num={self.max_num}")
        return self


class ProdModelConfig(BaseModel):
    """The validated ``model/configs/model/prod.yaml``."""

    model_config = _STRICT
    checkpoint: CheckpointSettings
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    lora: LoraSettings
    tiling: TilingSettings = Field(default_factory=TilingSettings)
    max_length: int = Field(4096, ge=1, description="longest token sequence")

    @model_validator(mode="after")
    def _lora_consistent(self) -> ProdModelConfig:
        if self.lora.enabled != (self.freeze.llm == "lora"):
            raise ValueError(
                f"lora.enabled={self.lora.enabled} but freeze.llm={self.freeze.llm!r}: set both "
                "(lora.enabled: true with freeze.llm: lora) or neither"
            )
        return self

    def lora_kwargs(self) -> dict[str, Any] | None:
        """``add_lora`` keyword arguments when LoRA is enabled, else None."""
        if not self.lora.enabled:
            return None
        return self.lora.model_dump(exclude={"enabled"})

    def check_paths(self) -> None:
        """Check the checkpoint directory (:func:`check_checkpoint_dir`); raises CheckpointNotFoundError."""
        check_checkpoint_dir(self.checkpoint.path)


def load_prod_model_config(path: str | os.PathLike) -> ProdModelConfig:
    """Read and validate a prod model YAML (no checkpoint needed; see :meth:`ProdModelConfig.check_paths`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the YAML is not a mapping or fails validation (the message names the file and fields).
    """
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(doc).__name__}")  # noqa: TRY004
    try:
        return ProdModelConfig.model_validate(doc)
    except ValidationError as e:
        raise ValueError(f"{path}: invalid prod model config:\n{e}") from e
