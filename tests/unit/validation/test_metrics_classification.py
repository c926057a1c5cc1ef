"""Tests of validation.metrics.classification: macro-F1 by hand, the free-text mapping rule."""

from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from validation.metrics import (
    MetricUndefinedError,
    accuracy,
    macro_f1,
    map_answer_to_label,
    map_answer_to_labels,
    multilabel_macro_f1,
    per_label_f1,
)


def test_macro_f1_worked_example():
    """golds [a, a, b, c], preds [a, b, b, None].

    a: TP 1, FN 1 -> 2/3; b: TP 1, FP 1 -> 2/3; c: FN 1 -> 0; macro = 4/9.
    """
    golds, preds = ["a", "a", "b", "c"], ["a", "b", "b", None]
    assert per_label_f1(golds, preds) == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 0.0})
    assert macro_f1(golds, preds) == pytest.approx(4 / 9)


def test_macro_f1_matches_sklearn_when_every_label_occurs():
    golds = ["x", "y", "z", "x", "y", "z", "x"]
    preds = ["x", "z", "z", "y", "y", "x", "x"]
    assert macro_f1(golds, preds) == pytest.approx(f1_score(golds, preds, average="macro"))


def test_prediction_outside_labels_is_a_false_negative_only():
    """'d' is no label: a FN of 'a' and a FP of nothing; F1(a) = 0/(0+0+1), F1(b) = 1 -> 0.5."""
    assert macro_f1(["a", "b"], ["d", "b"]) == 0.5
    # as if 'd' were a wrong label that is not scored: b keeps F1 1
    assert per_label_f1(["a", "b"], ["d", "b"])["b"] == 1.0


def test_explicit_labels_never_seen_are_left_out():
    # 'c' never occurs: not in the mean (no 0 drags the score)
    assert macro_f1(["a", "b"], ["a", "b"], labels=["a", "b", "c"]) == 1.0
    with pytest.raises(ValueError, match="not in labels"):
        macro_f1(["a", "z"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(ValueError, match="duplicates"):
        macro_f1(["a"], ["a"], labels=["a", "a"])


def test_empty_and_mismatched_inputs_raise():
    with pytest.raises(MetricUndefinedError):
        macro_f1([], [])
    with pytest.raises(MetricUndefinedError):
        multilabel_macro_f1([], [])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        macro_f1(["a"], ["a", "b"])
    with pytest.raises(MetricUndefinedError, match="no label occurs"):
        multilabel_macro_f1([set(), set()], [set(), set()], labels=["a"])


def test_multilabel_macro_f1_worked_example():
    """golds [{a, b}, {b}], preds [{a}, {b, c}], labels a, b (default: union of golds).

    a: TP 1 -> 1; b: TP 1, FN 1 -> 2/3; c is no label: ignored -> macro 5/6.
    """
    golds, preds = [{"a", "b"}, {"b"}], [{"a"}, {"b", "c"}]
    assert multilabel_macro_f1(golds, preds) == pytest.approx(5 / 6)
    # with c a label: FP 1 -> F1 0 -> (1 + 2/3 + 0) / 3
    assert multilabel_macro_f1(golds, preds, labels=["a", "b", "c"]) == pytest.approx(5 / 9)


def test_accuracy():
    assert accuracy(["a", "b", "c"], ["a", None, "c"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pleural effusion", "pleural effusion"),  # whole answer
        ("PLEURAL-EFFUSION.", "pleural effusion"),  # punctuation is a space
        ("The most likely diagnosis is pneumonia.", "pneumonia"),  # phrase inside a sentence
        ("No pneumonia; likely pleural effusion.", "pleural effusion"),  # negated mention dropped
        ("Not pneumonia, but pleural effusion.", "pleural effusion"),  # clause cut at 'but'
        ("Pneumonia or pleural effusion.", None),  # two labels: ambiguous
        ("I cannot tell.", None),  # nothing
        ("", None),
        (None, None),
        ("Basal cell carcinoma of the skin.", "basal cell carcinoma"),  # longest phrase wins
        ("Fluid in the pleural space", "pleural effusion"),  # synonym
    ],
)
def test_map_answer_to_label(text, expected):
    labels = ["pneumonia", "pleural effusion", "carcinoma", "basal cell carcinoma"]
    synonyms = {"pleural effusion": ["fluid in the pleural space"]}
    assert map_answer_to_label(text, labels, synonyms) == expected


def test_map_yes_no_answers():
    assert map_answer_to_label("No, the lungs are clear.", ["yes", "no"]) == "no"
    assert map_answer_to_label("Yes.", ["yes", "no"]) == "yes"
    assert map_answer_to_label("Yes and no.", ["yes", "no"]) is None


def test_map_answer_vocabulary_errors():
    with pytest.raises(ValueError, match="not in labels"):
        map_answer_to_label("x", ["a"], {"b": ["x"]})
    with pytest.raises(ValueError, match="names two labels"):
        map_answer_to_label("x", ["a", "b"], {"a": ["x"], "b": ["X"]})


def test_map_answer_to_labels_multi():
    labels = ["nodule", "effusion", "edema"]
    assert map_answer_to_labels("Nodule; small effusion.", labels) == {"nodule", "effusion"}
    assert map_answer_to_labels("Nodule without effusion.", labels) == {"nodule"}
    assert map_answer_to_labels(None, labels) == set()
