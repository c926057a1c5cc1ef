"""Complementary modality questions (``data.complement_modality_questions``)."""

from __future__ import annotations

import numpy as np
import pytest

from model.recipes.config import SFTDataSettings
from model.recipes.sft import (
    complementary_modality_questions,
    mcq_evidence_answers,
    modality_evidence_answers,
    shuffled_mcq_rows,
)


def _row(rid: str, modality: str, question: str, answer: str, task: str = "vqa_closed") -> dict:
    return {
        "id": rid,
        "task": task,
        "modality": modality,
        "images": [f"img/{rid}.png"],
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


ROWS = [
    _row("a", "ct", "<image>\nIs the imaging modality CT?", "Yes"),
    _row("b", "mri", "<image>\nQuestion: Is the imaging modality MRI?\nAnswer yes or no.", "Yes"),
    _row("c", "ct", "<image>\nIs the imaging modality MRI? Answer yes or no.", "No"),
    _row("d", "ct", "<image>\nIs there a nodule in the left lung?", "No"),  # not a modality question
    _row("e", "ct", "<image>\nWhat is the imaging modality?", "CT", task="vqa_open"),
    _row("f", "us", "<image>\nIs the imaging modality CT?", "No"),  # ultrasound's name never seen
]


def test_each_modality_question_gets_a_twin_with_the_opposite_answer():
    out = complementary_modality_questions(ROWS, np.random.default_rng(0))
    got = {r["id"]: (r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in out}
    assert got == {
        "a#complement": ("<image>\nIs the imaging modality MRI?", "No"),  # the only other known name
        "b#complement": ("<image>\nQuestion: Is the imaging modality CT?\nAnswer yes or no.", "No"),
        "c#complement": ("<image>\nIs the imaging modality CT? Answer yes or no.", "Yes"),
        # f: ultrasound has no "Yes" row naming it, so its "No" row gets no "Yes" twin
    }
    twin = next(r for r in out if r["id"] == "c#complement")
    assert twin["images"] == ["img/c.png"] and twin["modality"] == "ct" and twin["task"] == "vqa_closed"
    assert ROWS[2]["conversations"][1]["value"] == "No"  # originals untouched


def test_the_other_modality_is_a_seeded_pick():
    rows = [
        _row("a", "ct", "Is the imaging modality CT?", "Yes"),
        _row("b", "mri", "Is the imaging modality MRI?", "Yes"),
        _row("c", "us", "Is the imaging modality ultrasound?", "Yes"),
    ]
    first = complementary_modality_questions(rows, np.random.default_rng(3))
    assert first == complementary_modality_questions(rows, np.random.default_rng(3))
    names = {"ct": "CT", "mri": "MRI", "us": "ultrasound"}
    for r in first:
        q = r["conversations"][0]["value"]
        assert r["conversations"][1]["value"] == "No"
        assert q != f"Is the imaging modality {names[r['modality']]}?"


def test_two_names_for_one_modality_are_refused():
    rows = [
        _row("a", "ct", "Is the imaging modality CT?", "Yes"),
        _row("b", "ct", "Is the imaging modality MR?", "Yes"),
    ]
    with pytest.raises(ValueError, match="row b: modality 'ct' asked as 'MR', elsewhere as 'CT'"):
        complementary_modality_questions(rows, np.random.default_rng(0))


def test_the_option_is_off_by_default():
    assert SFTDataSettings(shards="s", data_root="d").complement_modality_questions is False


# --- evidence-first answers (``data.modality_evidence``) ---------------------------------------


def test_modality_questions_are_answered_evidence_first():
    out = modality_evidence_answers(ROWS)
    answers = {r["id"]: r["conversations"][1]["value"] for r in out}
    assert answers == {
        "a": "The imaging modality is CT. Yes.",
        "b": "The imaging modality is MRI. Yes.",
        "c": "The imaging modality is CT. No.",  # the image's own modality, not the one asked about
        "d": "No",  # not a modality question
        "e": "CT",  # open question
        "f": "No",  # ultrasound's display name is never seen in a "Yes" row: left as it is
    }
    assert [r["id"] for r in out] == [r["id"] for r in ROWS]
    assert out[2]["conversations"][0] == ROWS[2]["conversations"][0]  # the question is kept
    assert ROWS[2]["conversations"][1]["value"] == "No"  # originals untouched


def test_evidence_answers_score_as_the_plain_answer():
    from validation.metrics.vqa import vqa_item_score

    for r, e in zip(ROWS[:3], modality_evidence_answers(ROWS)[:3]):
        gold, answer = r["conversations"][1]["value"], e["conversations"][1]["value"]
        assert vqa_item_score(gold, answer).correct
        flipped = "no" if gold == "Yes" else "yes"
        assert not vqa_item_score(flipped, answer).correct  # one of yes/no, no negation word


def test_evidence_goes_with_the_complement_twins():
    rows = ROWS + complementary_modality_questions(ROWS, np.random.default_rng(0))
    answers = {r["id"]: r["conversations"][1]["value"] for r in modality_evidence_answers(rows)}
    assert answers["a#complement"] == "The imaging modality is CT. No."
    assert answers["c#complement"] == "The imaging modality is CT. Yes."


@pytest.mark.parametrize("on", [False, True])
def test_reasoning_replay_passes_the_option_to_its_sft_loop(on):
    from model.recipes.config import load_recipe_config
    from model.recipes.reasoning_sft import ReasoningSFTRecipe

    recipe = ReasoningSFTRecipe.__new__(ReasoningSFTRecipe)  # sft_config reads cfg and the two paths only
    recipe.cfg = load_recipe_config("reasoning_sft", "ci", [f"data.modality_evidence={str(on).lower()}"])
    recipe.dataset_path, recipe.reasoning_rows_path = "mix.parquet", None
    assert recipe.sft_config().data.modality_evidence is on
    assert SFTDataSettings(shards="s", data_root="d").modality_evidence is False


# --- evidence-first multiple choice (``data.mcq_evidence``) ------------------------------------

MCQ_PROMPT = (
    "<image>\nWhich imaging modality was used for this image?\nA. MRI\nB. CT\nC. X-ray\nD. endoscopy\nReply."
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "CT. The answer is B."),
        ("(C).", "X-ray. The answer is C."),
        ("E", "E"),  # not an option of the prompt: left as it is
        ("CT", "CT"),  # not a letter
    ],
)
def test_mcq_rows_are_answered_option_text_first(answer, expected):
    rows = [_row("m", "ct", MCQ_PROMPT, answer, task="mcq"), ROWS[0]]
    out = mcq_evidence_answers(rows)
    assert out[0]["conversations"][1]["value"] == expected
    assert out[1] is ROWS[0]  # other tasks untouched
    assert rows[0]["conversations"][1]["value"] == answer


@pytest.mark.parametrize(
    ("answer", "expected"), [("B", "The answer is CT (B)."), ("(C).", "The answer is X-ray (C).")]
)
def test_mcq_bracket_form(answer, expected):
    (row,) = mcq_evidence_answers([_row("m", "ct", MCQ_PROMPT, answer, task="mcq")], form="bracket")
    assert row["conversations"][1]["value"] == expected


def test_mcq_bracket_form_spells_the_option_as_the_prompt_and_is_scored_by_its_letter():
    """The option's tokens in the answer are the prompt's (" CT" after a space), the letter follows
    them at once, and the MCQ parser reads the stated letter (not the text) from it."""
    from model.tokenizer import train_tokenizer
    from validation.metrics.mcq import mcq_parse

    rows = mcq_evidence_answers([_row("m", "ct", MCQ_PROMPT, "B", task="mcq")], form="bracket")
    tok = train_tokenizer([t["value"] for t in rows[0]["conversations"]] * 30, vocab_size=300)
    answer = tok.tokenize(rows[0]["conversations"][1]["value"])
    prompt = tok.tokenize(MCQ_PROMPT)
    name = tok.tokenize(" CT")
    at = answer.index(name[-1])
    rest = answer[at + 1 :]  # " CT", " (", "B": the prompt's letter token right after the bracket
    assert tok.convert_tokens_to_string(rest[: rest.index(tok.tokenize("B")[0])]) == " ("
    assert prompt[prompt.index(name[-1]) - 2] == tok.tokenize("B")[0]  # "B", ".", " CT" in the prompt
    options = {"A": "MRI", "B": "CT", "C": "X-ray", "D": "endoscopy"}
    assert mcq_parse(rows[0]["conversations"][1]["value"], options) == "B"
    assert mcq_parse("The answer is CT (D).", options) == "D"  # the stated letter decides
    with pytest.raises(ValueError, match="mcq_format='bracket' needs data.mcq_evidence"):
        SFTDataSettings(shards="s", data_root="d", mcq_format="bracket")
    with pytest.raises(ValueError, match="unknown multiple-choice answer form"):
        mcq_evidence_answers(rows, form="question")


def test_shuffled_mcq_copies_move_the_texts_and_the_letter_follows_its_text():
    from model.recipes.sft import MCQ_OPTION

    row = _row("m", "ct", MCQ_PROMPT, "B", task="mcq")
    copies = shuffled_mcq_rows([row, ROWS[0]], 5, np.random.default_rng(3))  # the closed row is skipped
    assert [c["id"] for c in copies] == [f"m#perm{k}" for k in range(5)]
    orders = set()
    for c in copies:
        question, reply = c["conversations"]
        options = dict(MCQ_OPTION.findall(question["value"]))
        assert sorted(options) == ["A", "B", "C", "D"]  # the letters stay in place
        assert sorted(options.values()) == ["CT", "MRI", "X-ray", "endoscopy"]
        assert options[reply["value"]] == "CT"  # the right letter is where "CT" went
        assert question["value"].startswith("<image>\nWhich imaging modality") and question["value"].endswith(
            "\nReply."
        )
        orders.add(tuple(options.values()))
    assert len(orders) == 5 and ("MRI", "CT", "X-ray", "endoscopy") not in orders  # all new orders
    assert row["conversations"][1]["value"] == "B"  # the original is untouched
    again = shuffled_mcq_rows([row], 5, np.random.default_rng(3))
    assert [c["conversations"] for c in again] == [c["conversations"] for c in copies]  # seeded


def test_shuffled_mcq_copies_are_capped_by_the_orders_and_refuse_negative_counts():
    two = _row("t", "ct", "<image>\nWhich?\nA. CT\nB. MRI\nReply.", "A", task="mcq")
    (only,) = shuffled_mcq_rows([two], 4, np.random.default_rng(0))  # 2 options: one other order
    assert only["conversations"][1]["value"] == "B" and "A. MRI\nB. CT" in only["conversations"][0]["value"]
    assert (
        shuffled_mcq_rows([_row("e", "ct", MCQ_PROMPT, "E", task="mcq")], 2, np.random.default_rng(0)) == []
    )
    with pytest.raises(ValueError, match="copies must be >= 0"):
        shuffled_mcq_rows([two], -1, np.random.default_rng(0))


def test_mcq_evidence_answers_are_scored_by_their_letter():
    from validation.metrics.mcq import mcq_parse

    options = {"A": "MRI", "B": "CT", "C": "X-ray", "D": "endoscopy"}
    (row,) = mcq_evidence_answers([_row("m", "ct", MCQ_PROMPT, "B", task="mcq")])
    assert mcq_parse(row["conversations"][1]["value"], options) == "B"
    assert mcq_parse("CT. The answer is C.", options) == "C"  # the letter decides, not the text


def _closed_scoring_reads_the_yes_no(answers: dict[str, str]) -> None:
    """Rows "a" (gold Yes) and "c" (gold No) score right against their gold and wrong against the other."""
    from validation.metrics.vqa import vqa_item_score

    for gold, rid in (("Yes", "a"), ("No", "c")):
        assert vqa_item_score(gold, answers[rid]).correct
        assert not vqa_item_score("no" if gold == "Yes" else "yes", answers[rid]).correct


@pytest.mark.parametrize(
    ("form", "yes", "no"),
    [
        (
            "restate",
            "Asked: imaging modality CT. Seen: CT. Yes.",
            "Asked: imaging modality MRI. Seen: CT. No.",
        ),
        ("mirror", "Seen: the imaging modality CT. Yes.", "Seen: the imaging modality CT. No."),
        ("adjacent", "The imaging modality is CT Yes.", "The imaging modality is CT No."),
    ],
)
def test_each_modality_answer_form(form, yes, no):
    answers = {r["id"]: r["conversations"][1]["value"] for r in modality_evidence_answers(ROWS, form=form)}
    assert (answers["a"], answers["c"]) == (yes, no)
    assert (answers["d"], answers["e"], answers["f"]) == ("No", "CT", "No")  # other rows as they were
    _closed_scoring_reads_the_yes_no(answers)


def test_adjacent_form_puts_the_yes_no_token_right_after_the_seen_name_token():
    """With the platform's byte-level BPE the name's last token predicts the yes/no, and the same
    name token stands in the question (what one matching attention step needs)."""
    from model.tokenizer import train_tokenizer

    rows = modality_evidence_answers(ROWS, form="adjacent")
    corpus = [turn["value"] for r in rows for turn in r["conversations"]] * 30
    tok = train_tokenizer(corpus, vocab_size=300)
    (row,) = [r for r in rows if r["id"] == "c"]  # asked MRI, seen CT
    answer = tok.tokenize(row["conversations"][1]["value"])
    name = tok.tokenize(" CT")
    at = answer.index(name[-1])
    assert answer[at + 1] == tok.tokenize(" No")[0]
    (yes_row,) = [r for r in rows if r["id"] == "a"]  # asked CT, seen CT
    assert name[-1] in tok.tokenize(yes_row["conversations"][0]["value"])


def test_answer_forms_other_than_the_sentence_need_the_evidence_answers():
    for form in ("restate", "mirror", "adjacent"):
        with pytest.raises(ValueError, match=f"modality_format='{form}' needs data.modality_evidence"):
            SFTDataSettings(shards="s", data_root="d", modality_format=form)
        assert SFTDataSettings(shards="s", data_root="d", modality_evidence=True, modality_format=form)
    with pytest.raises(ValueError, match="not one of"):
        modality_evidence_answers(ROWS, form="question")
    with pytest.raises(ValueError):
        SFTDataSettings(shards="s", data_root="d", modality_evidence=True, modality_format="question")


def test_the_config_offers_exactly_the_forms_the_builder_knows():
    from typing import get_args

    from model.recipes.config import EvidenceAnswers
    from model.recipes.sft import MCQ_FORMATS, MODALITY_FORMATS

    assert set(get_args(EvidenceAnswers.model_fields["modality_format"].annotation)) == set(MODALITY_FORMATS)
    assert set(get_args(EvidenceAnswers.model_fields["mcq_format"].annotation)) == set(MCQ_FORMATS)


def test_sft_rows_get_the_shuffled_copies_when_configured(tmp_path):
    """``data.mcq_shuffles`` reaches the rows the SFT recipe trains on (seeded by ``train.seed``)."""
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.data.schema import INSTRUCTION_SCHEMA
    from model.recipes.sft import SFTRecipe
    from tests.unit.model.recipes._world import _instruction

    shards = tmp_path / "shards"
    shards.mkdir()
    mcq = _instruction(0, "mcq", "img/m.png", MCQ_PROMPT.removeprefix("<image>\n"), "B")
    closed = _instruction(1, "vqa_closed", "img/a.png", "Is the imaging modality CT?", "Yes")
    pq.write_table(
        pa.Table.from_pylist([mcq, closed], schema=INSTRUCTION_SCHEMA), shards / "part-00000.parquet"
    )

    def loaded(shuffles: int) -> list[dict]:
        data = SFTDataSettings(shards=str(shards), data_root=str(tmp_path), mcq_shuffles=shuffles)
        return SFTRecipe._load_rows(
            SimpleNamespace(cfg=SimpleNamespace(data=data, train=SimpleNamespace(seed=0)))
        )

    m, a = mcq["id"], closed["id"]
    assert [r["id"] for r in loaded(0)] == [m, a]
    with_copies = loaded(2)
    assert [r["id"] for r in with_copies] == [m, a, f"{m}#perm0", f"{m}#perm1"]
    assert with_copies[2]["conversations"][0]["value"].startswith(MCQ_PROMPT.split("A.")[0])
    assert [r["conversations"] for r in with_copies] == [r["conversations"] for r in loaded(2)]
    with pytest.raises(ValueError, match="mcq_shuffles"):
        SFTDataSettings(shards="s", data_root="d", mcq_shuffles=-1)
