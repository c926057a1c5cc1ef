"""Training recipes of the XMed VLM: one readable file per stage, typed YAML configs per profile.

=================  ==========================================  ==============================
stage              recipe (module)                             entry point for Dagster
=================  ==========================================  ==============================
``sft``            :mod:`model.recipes.sft` ``SFTRecipe``      ``run_sft(cfg, logger)``
``reasoning_sft``  :mod:`model.recipes.reasoning_sft`          ``run_reasoning_sft(cfg, logger)``
``dpo``            :mod:`model.recipes.dpo` ``DPORecipe``      ``run_dpo(cfg, logger)``
``audio``          :mod:`model.recipes.audio` ``AudioRecipe``  ``run_audio(cfg, logger)``
=================  ==========================================  ==============================

Every recipe follows the same shape (a Protocol, not a base class: :class:`Recipe`):
``__init__(cfg)`` -> ``setup()`` -> ``train() -> TrainResult`` -> ``save_checkpoint()`` ->
``cleanup()``. Configs: :func:`load_recipe_config` (``model/configs/recipes/<stage>/<profile>.yaml``);
metrics: :mod:`model.recipes.metric_logging`.

The recipe modules are imported lazily (``from model.recipes import run_sft`` works) so that
``python -m model.recipes.sft`` does not import itself twice.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from model.recipes._common import NonFiniteLossError, TrainResult
from model.recipes.config import (
    AudioConfig,
    DPOConfig,
    ReasoningSFTConfig,
    RecipeConfigError,
    SFTConfig,
    load_recipe_config,
)
from model.recipes.metric_logging import ListLogger, MetricLogger, MlflowLogger, StdoutLogger

__all__ = [
    "AudioConfig",
    "DPOConfig",
    "ListLogger",
    "MetricLogger",
    "MlflowLogger",
    "NonFiniteLossError",
    "ReasoningSFTConfig",
    "Recipe",
    "RecipeConfigError",
    "SFTConfig",
    "StdoutLogger",
    "TrainResult",
    "load_recipe_config",
    "run_audio",
    "run_dpo",
    "run_reasoning_sft",
    "run_sft",
]


class Recipe(Protocol):
    """The shape every training recipe has (torchtune's ``recipe_interfaces.py``)."""

    def setup(self) -> None:
        """Build tokenizer/processor, model, data and the DeepSpeed engine; resume if configured."""
        ...

    def train(self) -> TrainResult:
        """Run the training loop."""
        ...

    def save_checkpoint(self) -> Path:
        """Write the final HF model folder and return it."""
        ...

    def cleanup(self) -> None:
        """Release the engine and memory."""
        ...


_LAZY = {
    "run_sft": "model.recipes.sft",
    "run_reasoning_sft": "model.recipes.reasoning_sft",
    "run_dpo": "model.recipes.dpo",
    "run_audio": "model.recipes.audio",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'model.recipes' has no attribute {name!r}")
