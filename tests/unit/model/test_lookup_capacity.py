"""The synthetic tasks of benchmarks/lookup_capacity.py answer what they claim to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "lookup_capacity.py"
_spec = importlib.util.spec_from_file_location("lookup_capacity", _PATH)
lc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lc)


def test_lookup_letter_names_the_asked_word():
    x, y = lc.lookup_batch(200, 10, torch.Generator().manual_seed(0))
    assert x.shape == (200, 13)
    for row, letter in zip(x.tolist(), y.tolist()):
        asked, pairs = row[1], row[3:11]
        options = dict(zip(pairs[0::2], pairs[1::2]))
        assert sorted(options) == list(lc.LETTERS) and len(set(options.values())) == 4
        assert options[letter] == asked


def test_compare_answers_yes_exactly_when_the_words_agree():
    words, fill = 6, 5
    x, y = lc.compare_batch(400, words, fill, torch.Generator().manual_seed(0))
    assert x.shape == (400, 6 + fill)
    a, b = x[:, 1], x[:, -2]
    assert ((a == b) == (y == lc.LETTERS[0])).all() and set(y.tolist()) == set(lc.LETTERS[:2])
    assert 150 < int((a == b).sum()) < 250  # about half equal
    compared = torch.cat([a, b])
    assert compared.min() >= lc.N_SPECIAL and compared.max() < lc.N_SPECIAL + words
    filler = x[:, 3 : 3 + fill]  # distractors never collide with the compared words
    assert filler.min() >= lc.N_SPECIAL + words


def test_compare_without_arrow_ends_at_the_second_word():
    g = torch.Generator().manual_seed(0)
    with_arrow, y = lc.compare_batch(50, 6, 5, g)
    bare, y_bare = lc.compare_batch(50, 6, 5, torch.Generator().manual_seed(0), arrow=False)
    assert torch.equal(bare, with_arrow[:, :-1]) and torch.equal(y, y_bare)
    assert (with_arrow[:, -1] == lc.ARROW).all() and not (bare == lc.ARROW).any()


def test_letter_prompts_end_in_the_named_option_text_and_answer_its_letter():
    x, y = lc.letter_batch(200, 10, torch.Generator().manual_seed(0))
    assert x.shape == (200, 20)
    for row, letter in zip(x.tolist(), y.tolist()):
        lines = [row[1 + 4 * j : 5 + 4 * j] for j in range(4)]  # "L . w \n"
        assert [ln[0] for ln in lines] == list(lc.LETTERS)
        assert all(ln[1] == lc.DOT and ln[3] == lc.NEWLINE for ln in lines)
        options = {ln[0]: ln[2] for ln in lines}
        assert len(set(options.values())) == 4 and min(options.values()) >= lc.N_SPECIAL
        assert row[-1] == lc.BRACKET and options[letter] == row[-2]


def test_induction_option_builds_a_biased_llm(tmp_path):
    out = tmp_path / "lc.json"
    lc.main(
        [
            "--task",
            "letter",
            "--induction",
            "1,2",
            "--mimetic",
            "--steps",
            "2",
            "--every",
            "1",
            "--eval",
            "8",
            "--batch",
            "4",
            "--words",
            "8",
            "--out",
            str(out),
        ]
    )
    import json

    doc = json.loads(out.read_text())
    assert [r["step"] for r in doc["curve"]] == [1, 2] and doc["args"]["induction"] == "1,2"
