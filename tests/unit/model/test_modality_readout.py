"""The probe of benchmarks/modality_readout.py tells separable from unseparable features."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "modality_readout.py"
_spec = importlib.util.spec_from_file_location("modality_readout", _PATH)
mr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mr)


def _split(n, rng, shift):
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 16))
    x[:, 3] += shift * y  # the class lives in one small direction (or nowhere when shift = 0)
    return x, y


def test_probe_finds_a_small_direction_and_not_a_missing_one():
    rng = np.random.default_rng(0)
    assert mr.probe_accuracy(*_split(200, rng, 6.0), *_split(200, rng, 6.0)) > 0.97
    assert mr.probe_accuracy(*_split(200, rng, 0.0), *_split(200, rng, 0.0)) < 0.65


def test_probe_refuses_one_class():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="test split holds one class"):
        mr.probe_accuracy(x, np.array([0, 1, 0, 1]), x, np.zeros(4))
