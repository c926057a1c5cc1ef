"""Tests of validation.uncertainty.clustering and the equivalence back-ends.

The real all-MiniLM-L6-v2 test loads the packaged weights (tens of seconds on 2 CPU cores) and is
marked ``slow``; the NLI back-end is exercised with a tiny BERT classifier written to ``tmp_path``.
"""

from __future__ import annotations

import pytest

from validation.uncertainty import (
    EmbeddingEquivalence,
    ExactMatch,
    NLIEquivalence,
    YesNoEquivalence,
    answer_polarity,
    discrete_semantic_entropy,
    semantic_clusters,
)

# ---------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------


def test_greedy_clustering_with_exact_match():
    answers = ["Yes.", "yes", "No", "the left lung", "Left lung!", "no."]
    assert semantic_clusters(answers, ExactMatch()) == [0, 0, 1, 2, 2, 1]
    assert discrete_semantic_entropy(semantic_clusters(["a b"] * 5, ExactMatch())) == 0.0


def test_clustering_needs_both_directions():
    """'a entails b' when b's words are a subset of a's: 'nodule left lung' entails 'nodule' only one way."""

    def entails(a: str, b: str) -> bool:
        return set(b.split()) <= set(a.split())

    assert semantic_clusters(["nodule left lung", "nodule", "left lung nodule"], entails) == [0, 1, 0]


def test_first_matching_representative_wins():
    """A non-transitive test: 'b' matches both 'a' (cluster 0) and 'c' (cluster 1); it joins cluster 0."""
    near = {frozenset("ab"), frozenset("bc")}

    def eq(x: str, y: str) -> bool:
        return x == y or frozenset(x + y) in near

    assert semantic_clusters(["a", "c", "b"], eq) == [0, 1, 0]


def test_clustering_rejects_non_strings():
    with pytest.raises(TypeError, match="answer 1"):
        semantic_clusters(["yes", None], ExactMatch())
    assert semantic_clusters([], ExactMatch()) == []


# ---------------------------------------------------------------------------------------------
# rule back-ends
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "polarity"),
    [
        ("Yes.", "yes"),
        ("yes, there is a nodule", "yes"),
        ("No, the lungs are clear.", "no"),
        ("There is no nodule.", "no"),
        ("The nodule isn't visible", "no"),
        ("There is a nodule in the left lung.", "yes"),
        ("Absent.", "no"),
        ("The imaging modality is CT. No.", "no"),  # evidence first, the answer last
        ("The imaging modality is MRI. Yes.", "yes"),
        ("The imaging modality is CT Yes.", "yes"),  # the adjacent form: no sentence break
        ("The imaging modality is CT No.", "no"),
        ("There is no nodule. Yes.", "yes"),  # the concluding yes/no wins over a negation word
        ("The imaging modality is CT.", None),
        ("The liver", None),
        ("", None),
    ],
)
def test_answer_polarity(text, polarity):
    assert answer_polarity(text) == polarity


def test_yes_no_equivalence():
    eq = YesNoEquivalence()
    assert eq("Yes.", "There is a nodule in the left lung.")
    assert not eq("Yes", "No nodule is seen.")
    assert eq("The liver", "the liver.")  # no polarity: exact match of the cleaned answers
    assert not eq("The liver", "The spleen")
    answers = ["yes", "Yes, a nodule.", "no", "There is no nodule.", "yes"]
    assert semantic_clusters(answers, eq) == [0, 0, 1, 1, 0]


# ---------------------------------------------------------------------------------------------
# embedding back-end (fake encoder: fast) and the real MiniLM weights (slow)
# ---------------------------------------------------------------------------------------------


def _fake_encode(texts: list[str]) -> list[list[float]]:
    """2-d vectors: 'lung' answers point one way, others another; 'upper' tilts slightly."""
    table = {"left lung": [1.0, 0.0], "left lung lobe": [0.95, 0.1], "right lung": [1.0, 0.0]}
    return [table.get(t, [0.0, 1.0]) for t in texts]


def test_embedding_threshold_and_guard():
    eq = EmbeddingEquivalence(0.9, encode=_fake_encode)
    assert eq("The left lung", "left lung")  # equal after cleaning: no embedding needed
    assert eq("left lung", "left lung lobe")  # cosine 0.994
    assert not eq("left lung", "heart")  # cosine 0
    # identical vectors, but laterality differs: the guard says no
    assert eq.similarity("left lung", "right lung") == pytest.approx(1.0)
    assert not eq("left lung", "right lung")
    assert EmbeddingEquivalence(0.9, guard=False, encode=_fake_encode)("left lung", "right lung")
    with pytest.raises(ValueError, match="cosine"):
        EmbeddingEquivalence(1.5)


def test_embedding_prepare_batches_once():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return _fake_encode(texts)

    eq = EmbeddingEquivalence(encode=encode)
    answers = ["left lung", "Left lung.", "left lung lobe", "heart"]
    eq.prepare(answers)
    semantic_clusters(answers, eq)
    assert calls == [["heart", "left lung", "left lung lobe"]]


@pytest.mark.slow
def test_real_minilm_embeddings():
    eq = EmbeddingEquivalence()
    answers = [
        "A nodule in the left lung",
        "There is a nodule in the left lung.",
        "Pleural effusion",
        "glioma",
    ]
    eq.prepare(answers)
    assert eq.similarity(answers[0], answers[1]) > 0.95
    assert eq.similarity("glioma", "hemorrhage") < 0.5
    assert semantic_clusters(answers, eq) == [0, 0, 1, 2]
    assert not eq("left lung", "right lung")  # cosine 0.92, but the guard separates them


# ---------------------------------------------------------------------------------------------
# NLI back-end with a tiny local checkpoint
# ---------------------------------------------------------------------------------------------


def _tiny_nli(path, winner: int) -> None:
    """A 1-layer BERT classifier whose classifier bias makes label ``winner`` the arg-max."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "yes", "no", "nodule", "lung"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=3,
        id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
        label2id={"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2},
    )
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        model.classifier.bias[winner] = 5.0
    model.save_pretrained(path)
    fast.save_pretrained(path)


def test_nli_backend_reads_the_entailment_label(tmp_path):
    _tiny_nli(tmp_path / "entails", winner=2)
    _tiny_nli(tmp_path / "contradicts", winner=0)
    yes = NLIEquivalence(tmp_path / "entails")
    assert yes("yes nodule", "nodule lung")
    assert semantic_clusters(["yes", "no", "lung"], yes) == [0, 0, 0]
    no = NLIEquivalence(tmp_path / "contradicts")
    assert semantic_clusters(["yes", "no", "yes"], no) == [0, 1, 2]


def test_nli_backend_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        NLIEquivalence(tmp_path / "absent")
