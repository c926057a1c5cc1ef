"""Tests of model.tokenizer: coordinate and reserved tokens, chat template, save/load, corpus streaming."""

from __future__ import annotations

import pytest

from model.data.io import ShardedParquetWriter
from model.data.schema import INSTRUCTION_SCHEMA
from model.tokenizer import (
    CHAT_TEMPLATE,
    COORDINATE_MAX,
    GROUNDING_TOKENS,
    SPECIAL_TOKENS,
    coordinate_token_ids,
    iter_training_texts,
    load_tokenizer,
    main,
    train_tokenizer,
)

CORPUS = [
    "<image>\nWhere is the right lung? Give its bounding box.",
    "<ref>right lung</ref><box>[[120, 340, 560, 780]]</box>",
    "Is there a lesion in <ref>liver</ref><box>[[100, 200, 300, 400]]</box>? Answer yes or no.",
    "Yes",
    "No",
    "Sorry, I cannot find the spleen in the image.",
    "What imaging modality was used to acquire this image? CT MRI X-ray ultrasound",
    "Patient P000012, 63-year-old male, TNM stage IIIA, visit at month 12.5 of follow-up.",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS * 20, vocab_size=320)


def test_single_coordinate_is_one_token(tok):
    ids = tok("347", add_special_tokens=False)["input_ids"]
    assert ids == [coordinate_token_ids(tok)[347]]
    assert tok.convert_ids_to_tokens(ids) == ["347"]


def test_box_has_exactly_four_coordinate_tokens(tok):
    text = "[[120, 340, 560, 780]]"
    tokens = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    coords = [t for t in tokens if t.isdigit()]
    assert coords == ["120", "340", "560", "780"]
    # everything else is brackets, commas and (byte-level) spaces, no digit fragments
    assert all(set(t) <= set("[],Ġ") for t in tokens if not t.isdigit()), tokens
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_every_coordinate_is_a_distinct_single_token(tok):
    ids = coordinate_token_ids(tok)
    assert len(ids) == COORDINATE_MAX + 1 and len(set(ids)) == COORDINATE_MAX + 1
    for v in (0, 7, 10, 99, 100, 999, 1000):
        assert tok(str(v), add_special_tokens=False)["input_ids"] == [ids[v]]


def test_longer_digit_runs_split_into_integers(tok):
    tokens = tok.convert_ids_to_tokens(tok("1234 P000012", add_special_tokens=False)["input_ids"])
    assert [t for t in tokens if t.isdigit()] == ["123", "4", "0", "0", "0", "0", "12"]


def test_bpe_learned_no_multi_digit_merges(tok):
    learned = tok.backend_tokenizer.get_vocab(with_added_tokens=False)
    assert not [t for t in learned if sum(c.isdigit() for c in t) > 1]


def test_bpe_spends_no_merges_on_reserved_token_fragments():
    tok = train_tokenizer(
        ["<image>\n<|im_start|>user <ref>lung</ref><box>[[1, 2]]</box><|im_end|>"] * 50, vocab_size=300
    )
    learned = set(tok.backend_tokenizer.get_vocab(with_added_tokens=False))
    reserved = set(SPECIAL_TOKENS + GROUNDING_TOKENS)
    assert not {t for t in learned - reserved if len(t) > 1 and ("<" in t or ">" in t or "imag" in t)}


def test_reserved_token_ids_and_decoding(tok):
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + GROUNDING_TOKENS] == list(range(12))
    assert tok.pad_token_id == 0 and tok.eos_token == "<|im_end|>"
    ids = tok("<image>\n<ref>lung</ref><box>[[1, 2, 3, 4]]</box><|im_end|>", add_special_tokens=False)[
        "input_ids"
    ]
    # control tokens are dropped, grounding markup survives (parse_boxes needs it)
    assert tok.decode(ids, skip_special_tokens=True) == "\n<ref>lung</ref><box>[[1, 2, 3, 4]]</box>"


def test_chat_template_is_internvl_chatml(tok):
    msgs = [{"role": "user", "content": "<image>\nModality?"}, {"role": "assistant", "content": "CT"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>user\n<image>\nModality?<|im_end|>\n<|im_start|>assistant\nCT<|im_end|>\n"
    )
    assert tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_save_load_round_trip(tmp_path):
    out = tmp_path / "tok"
    tok = train_tokenizer(CORPUS * 5, vocab_size=300, out_dir=out)
    again = load_tokenizer(out)
    text = CORPUS[2] + "<|im_end|>"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.chat_template == CHAT_TEMPLATE
    assert len(again) == len(tok)
    assert again.decode(again("<box>[[5, 6, 7, 8]]</box>")["input_ids"], skip_special_tokens=True) == (
        "<box>[[5, 6, 7, 8]]</box>"
    )


def test_load_missing_and_small_vocab_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(CORPUS, vocab_size=100)


def _row(i: int, turns: list[tuple[str, str]]) -> dict:
    return {
        "id": f"r{i}",
        "task": "vqa_closed",
        "images": ["a.png"],
        "image_ids": ["a"],
        "width": 64,
        "height": 64,
        "conversations": [{"from": f, "value": v} for f, v in turns],
        "patient_id": "P1",
        "split": "train",
        "site": "hospital_a",
        "site_role": "internal",
        "modality": "ct",
        "source": "synthetic",
        "template_id": 0,
        "target": "{}",
    }


def test_iter_training_texts_streams_conversations(tmp_path):
    with ShardedParquetWriter(tmp_path / "shards", INSTRUCTION_SCHEMA, rows_per_shard=1) as w:
        w.write(_row(0, [("human", "<image>\nIs it CT?"), ("gpt", "Yes")]))
        w.write(_row(1, [("human", "<image>\nLocate it."), ("gpt", "<box>[[1, 2, 3, 4]]</box>")]))
    assert list(iter_training_texts(tmp_path / "shards")) == [
        "<image>\nIs it CT?\nYes",
        "<image>\nLocate it.\n<box>[[1, 2, 3, 4]]</box>",
    ]


def test_iter_training_texts_names_bad_row(tmp_path):
    with ShardedParquetWriter(tmp_path / "shards", INSTRUCTION_SCHEMA) as w:
        w.write(_row(5, []))
    with pytest.raises(ValueError, match="'r5'"):
        list(iter_training_texts(tmp_path / "shards"))


def test_cli_reads_vocab_size_from_model_config(tmp_path):
    with ShardedParquetWriter(tmp_path / "shards", INSTRUCTION_SCHEMA) as w:
        for i, text in enumerate(CORPUS * 5):
            w.write(_row(i, [("human", "<image>\nQuestion?"), ("gpt", text)]))
    (tmp_path / "m.yaml").write_text("tokenizer: {vocab_size: 290}\narchitecture: {grid: 8}\n")
    main(
        [
            "--shards",
            str(tmp_path / "shards"),
            "--out",
            str(tmp_path / "tok"),
            "--config",
            str(tmp_path / "m.yaml"),
        ]
    )
    tok = load_tokenizer(tmp_path / "tok")
    assert len(tok.backend_tokenizer.get_vocab(with_added_tokens=False)) <= 290
    assert tok("347", add_special_tokens=False)["input_ids"] == [coordinate_token_ids(tok)[347]]


def test_tokenizer_without_coordinate_tokens_keeps_digit_pieces():
    plain = train_tokenizer(CORPUS * 20, vocab_size=320, coordinate_tokens=False)
    assert plain.convert_tokens_to_ids("347") == plain.unk_token_id
    assert len(plain("347", add_special_tokens=False)["input_ids"]) > 1
    assert plain.decode(plain("[[120, 340]]", add_special_tokens=False)["input_ids"]) == "[[120, 340]]"
