"""Synthetic in-context lookup rows of SFT (``data.lookup_drills``)."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
from pydantic import ValidationError

from model.recipes.config import DRILL_TASK, ReasoningSFTDataSettings, SFTDataSettings
from model.recipes.sft import MCQ_OPTION, lookup_drills


def _row(rid: str, task: str, modality: str, question: str, answer: str, images: int = 1) -> dict:
    return {
        "id": rid,
        "task": task,
        "modality": modality,
        "images": [f"img/{rid}_{k}.png" for k in range(images)],
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
        "split": "train",
    }


ROWS = [
    _row("q1", "vqa_closed", "ct", "<image>\nIs the imaging modality CT?", "Yes"),
    _row("q2", "vqa_closed", "mri", "<image>\nIs the imaging modality MRI?", "Yes"),
    _row(
        "m1",
        "mcq",
        "ct",
        "<image>\nWhich modality?\nA. CT\nB. MRI\nC. X-ray\nD. liver\nReply with a letter.",
        "A",
    ),
    _row("m2", "mcq", "mri", "<image>\nWhere?\nA. heart\nB. spine\nC. MRI\nD. CT\nGive the letter.", "C"),
    _row("p1", "prognosis", "ct", "Image-1: <image>\nImage-2: <image>\nWill it progress?", "No", images=2),
]
VOCAB = {"CT", "MRI", "X-ray", "liver", "heart", "spine"}


def _question(row: dict) -> str:
    return row["conversations"][0]["value"]


def test_lookups_answer_the_letter_of_the_named_option():
    out = lookup_drills(ROWS, 200, np.random.default_rng(0))
    lookups = [r for r in out if MCQ_OPTION.search(_question(r))]
    assert len(lookups) == 100  # every other row
    for r in lookups:
        q = _question(r)
        options = dict(MCQ_OPTION.findall(q))
        assert sorted(options) == ["A", "B", "C", "D"] and len(set(options.values())) == 4
        assert set(options.values()) <= VOCAB
        named = re.search(
            r"(?:Which option is (.+)\?|Find (.+) among the options\.|Based on this (.+) image)", q
        )
        word = next(g for g in named.groups() if g)
        assert options[r["conversations"][1]["value"]] == word
        assert q.rsplit("\n", 1)[-1] in {"Reply with a letter.", "Give the letter."}  # the corpus' footers
    letters = collections.Counter(r["conversations"][1]["value"] for r in lookups)
    assert set(letters) == {"A", "B", "C", "D"} and min(letters.values()) >= 15


def test_comparisons_say_yes_exactly_when_the_two_words_agree():
    out = lookup_drills(ROWS, 400, np.random.default_rng(1))
    compares = [r for r in out if not MCQ_OPTION.search(_question(r))]
    answers = collections.Counter()
    for r in compares:
        q = _question(r)
        m = re.fullmatch(
            r"<image>\n(?:Is (.+) the same as (.+)\? Answer yes or no\.|Based on this (.+) image, "
            r"Is the imaging modality (.+)\?)",
            q,
        )
        assert m is not None, q
        first, second = (m[1], m[2]) if m[1] else (m[3], m[4])
        expected = "Yes" if first == second else "No"
        assert r["conversations"][1]["value"] == expected
        answers[expected] += 1
        if m[3]:  # the corpus' wording shows an image of the named modality
            assert r["modality"] == {"CT": "ct", "MRI": "mri"}[first]
            assert second in {"CT", "MRI"}
    assert 0.35 < answers["Yes"] / len(compares) < 0.65


def test_rows_are_train_rows_of_the_drill_task_with_one_borrowed_image():
    out = lookup_drills(ROWS, 50, np.random.default_rng(2))
    assert [r["id"] for r in out] == [f"{DRILL_TASK}-{i}" for i in range(50)]
    single = {tuple(r["images"]): r["modality"] for r in ROWS if len(r["images"]) == 1}
    for r in out:
        assert r["task"] == DRILL_TASK and r["split"] == "train"
        assert r["conversations"][0]["value"].startswith("<image>\n")
        assert single[tuple(r["images"])] == r["modality"]
    assert lookup_drills(ROWS, 50, np.random.default_rng(2)) == out
    assert lookup_drills(ROWS, 50, np.random.default_rng(3)) != out


def test_too_few_option_texts_are_refused():
    with pytest.raises(ValueError, match="got 3 option texts"):
        lookup_drills(
            [_row("m", "mcq", "ct", "<image>\nQ\nA. CT\nB. MRI\nC. liver\nPick.", "A")],
            4,
            np.random.default_rng(0),
        )


def test_the_drill_task_is_weighted_like_a_curated_task():
    d = SFTDataSettings(
        shards="s",
        data_root="d",
        lookup_drills=100,
        task_weights={DRILL_TASK: 0.5},
        warmup={"steps": 10, "task_weights": {DRILL_TASK: 1.0, "single_label": 1.0}},
    )
    assert DRILL_TASK in d.kept_tasks() and d.lookup_drills == 100
    assert SFTDataSettings(shards="s", data_root="d").lookup_drills == 0
    with pytest.raises(ValidationError, match="unknown task"):
        ReasoningSFTDataSettings.model_validate(
            {
                "manifest_dir": "m",
                "data_root": "d",
                "replay_shards": "s",
                "replay_rows": 10,
                "replay_task_weights": {DRILL_TASK: 1.0},
            }
        )
