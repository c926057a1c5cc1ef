"""Answer-balanced resampling of a task's rows (``data.balanced_tasks``)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from model.recipes.config import SFTDataSettings
from model.recipes.sft import balance_by_answer


def _count(rows, answers_of):
    out: dict[str, int] = {}
    for i in rows:
        out[answers_of[i]] = out.get(answers_of[i], 0) + 1
    return out


def test_rare_answers_are_repeated_to_the_common_count():
    # rows 10..16: five "No" (two spellings), two "Yes"
    idx = [10, 11, 12, 13, 14, 15, 16]
    answers = ["No", "no ", "No", "Yes", "No", "yes", "NO"]
    out = balance_by_answer(idx, answers, np.random.default_rng(0))
    label = {i: a.strip().lower() for i, a in zip(idx, answers)}
    assert _count(out, label) == {"no": 5, "yes": 5}
    # "no" rows once each (sorted answer order first), then the two "yes" rows twice + one of them
    assert out[:5] == [10, 11, 12, 14, 16]
    yes = out[5:]
    assert yes[:4] == [13, 15, 13, 15] and yes[4] in (13, 15)
    assert out == balance_by_answer(idx, answers, np.random.default_rng(0))  # a pure function of the seed


def test_balanced_input_is_unchanged_and_empty_stays_empty():
    assert balance_by_answer([3, 4], ["Yes", "No"], np.random.default_rng(1)) == [4, 3]
    assert balance_by_answer([], [], np.random.default_rng(1)) == []


def test_answers_must_match_the_rows():
    with pytest.raises(ValueError, match="3 rows but 2 answers"):
        balance_by_answer([1, 2, 3], ["a", "b"], np.random.default_rng(0))


def test_balanced_tasks_must_be_known():
    with pytest.raises(ValidationError, match="data.balanced_tasks: unknown task"):
        SFTDataSettings(shards="s", data_root="d", balanced_tasks=["prognosis", "survival"])
    assert SFTDataSettings(shards="s", data_root="d", balanced_tasks=["prognosis"]).balanced_tasks == [
        "prognosis"
    ]
