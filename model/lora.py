"""LoRA on the language model of a vision-language model (PEFT), and merging it back.

LoRA (Hu et al., https://arxiv.org/abs/2106.09685) adds a trainable low-rank update
``W + (alpha / r) * B @ A`` to chosen linear layers while ``W`` stays frozen. Here the adapters go
into the LLM only: the targets are matched as ``<...>language_model.<...>.<target>`` so the vision
tower and projector are never adapted (InternVL's ``wrap_llm_lora`` does the same on
``language_model``; its InternLM2 targets are ``wqkv``, ``wo``, ``w1``, ``w2``, ``w3``; a Llama LM
uses ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``).

* :func:`add_lora` wraps the model in a ``peft.PeftModel`` (all non-LoRA parameters frozen; the
  caller re-enables the parts it trains, see :func:`model.pretrained.apply_freeze_policy`);
* :func:`merge_lora` folds the adapters into the base weights and returns the plain model, whose
  parameter names and shapes are those of the model before :func:`add_lora`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

__all__ = ["add_lora", "is_lora_parameter", "lora_target_regex", "merge_lora"]


def lora_target_regex(target_modules: Sequence[str], *, scope: str = "language_model") -> str:
    """Regex (PEFT full-match) of the linear layers named ``target_modules`` inside ``scope``.

    Example:
        >>> bool(re.fullmatch(lora_target_regex(["wqkv"]), "language_model.model.layers.0.attention.wqkv"))
        True
    """
    if not target_modules:
        raise ValueError("target_modules is empty; name the LLM's linear layers to adapt (e.g. wqkv, wo)")
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"(.*\.)?{re.escape(scope)}\.(.*\.)?({names})"


def _matching_linears(model: nn.Module, regex: str) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(regex, n)]


def add_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str],
    scope: str = "language_model",
) -> PeftModel:
    """Wrap ``model`` with LoRA adapters on the linear layers ``target_modules`` of its LLM.

    Args:
        model: a vision-language model with a ``language_model`` submodule (any depth).
        r: LoRA rank.
        alpha: LoRA scaling numerator (update scaled by ``alpha / r``).
        dropout: dropout on the LoRA input.
        target_modules: leaf names of the linear layers to adapt.
        scope: the submodule name that must appear in the adapted layers' paths.

    Returns:
        The ``PeftModel``; only LoRA parameters are trainable.

    Raises:
        ValueError: bad ``r``/``alpha``/``dropout``, or no linear layer of ``scope`` matches
            ``target_modules`` (the message lists the names that exist).
    """
    if r < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1; got r={r}, alpha={alpha}, dropout={dropout}"
        )
    regex = lora_target_regex(target_modules, scope=scope)
    if not _matching_linears(model, regex):
        leaves = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in model.named_modules()
                if isinstance(m, nn.Linear) and f"{scope}." in n
            }
        )
        raise ValueError(
            f"LoRA target_modules {list(target_modules)} match no linear layer inside '{scope}'; "
            f"the linear layers there are named {leaves}"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex, bias="none")
    return get_peft_model(model, config)


def merge_lora(model: PeftModel) -> nn.Module:
    """Fold the LoRA updates into the base weights and return the unwrapped model.

    Raises:
        TypeError: ``model`` is not a ``PeftModel``.
    """
    if not isinstance(model, PeftModel):
        raise TypeError(f"merge_lora needs a peft.PeftModel (from add_lora), got {type(model).__name__}")
    return model.merge_and_unload()


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (``lora_A`` / ``lora_B`` ...)."""
    return ".lora_" in name
