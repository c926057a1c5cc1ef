"""Recipes are one file each, copy over inheritance (CONVENTIONS 3); the copied methods must stay
word-for-word the same as the SFT recipe's (the TRL rule), or a fix lands in one stage only."""

from __future__ import annotations

import inspect

import pytest

from model.recipes.audio import AudioRecipe
from model.recipes.dpo import DPORecipe
from model.recipes.sft import SFTRecipe

COPIES = [
    (AudioRecipe, "_setup_engine"),
    (AudioRecipe, "_save_state"),
    (AudioRecipe, "_to_device"),
    (AudioRecipe, "_batches"),
    (AudioRecipe, "cleanup"),
    (DPORecipe, "_setup_engine"),
    (DPORecipe, "_save_state"),
]


@pytest.mark.parametrize(("recipe", "method"), COPIES, ids=lambda v: getattr(v, "__name__", v))
def test_copied_methods_match_the_sft_recipe(recipe, method):
    original = inspect.getsource(getattr(SFTRecipe, method))
    assert inspect.getsource(getattr(recipe, method)) == original, (
        f"{recipe.__name__}.{method} drifted from SFTRecipe.{method}: apply the change to every copy"
    )
