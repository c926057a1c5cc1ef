"""Fixtures of the recipe tests: the tiny world (``_world.py``), built once per session."""

from __future__ import annotations

import pytest
import torch

from tests.unit.model.recipes._world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """Tiny data, tokenizer, architecture YAML and checkpoints (see ``_world.py``)."""
    return build_world(tmp_path_factory.mktemp("recipes_world"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The ci configs set torch threads to 1; give other test modules their setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
