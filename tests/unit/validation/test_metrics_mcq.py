"""Tests of validation.metrics.mcq: the parsing rule and accuracy per group."""

from __future__ import annotations

import pytest

from validation.metrics import MetricUndefinedError, mcq_accuracy, mcq_parse

OPTIONS = {"A": "heart", "B": "liver", "C": "left lung"}


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("C.", "C"),
        ("A. heart", "A"),
        ("(B) liver", "B"),
        ("The answer is B.", "B"),
        ("answer: (c)", "C"),
        ("Option C", "C"),
        ("The answer is liver (B).", "B"),  # a bracketed letter right after an option's text
        ("The answer is left lung [C]", "C"),
        ("The answer is liver (A).", "A"),  # the stated letter decides over the text
        ("liver (A) or heart (B)", None),  # two letters: ambiguous
        ("the liver (b)", "B"),  # lower-case letter: not stated, read through the text
        ("It looks like the liver.", "B"),  # option text
        ("Not the heart but the liver", "B"),  # negated option dropped
        ("A large mass in the liver", "B"),  # leading article 'A' is no choice
        ("The answer is a nodule in the liver", "B"),  # lower-case article after 'answer is'
        ("heart or liver", None),  # ambiguous
        ("I don't know", None),  # unparseable: wrong, never a random pick
        ("", None),
        (None, None),
        ("D", None),  # not an option
    ],
)
def test_mcq_parse(text, letter):
    assert mcq_parse(text, OPTIONS) == letter


def test_mcq_parse_rejects_bad_options():
    with pytest.raises(ValueError, match="upper-case letters"):
        mcq_parse("A", {"a": "heart"})


def test_mcq_accuracy_overall_and_groups():
    """parsed [A, B, None, C]; golds [A, B, A, B] -> 2/4; ct: items 0, 1 -> 1.0; mri: items 2, 3 -> 0.0."""
    out = mcq_accuracy(
        ["A", "B", "A", "B"],
        ["A", "the liver", "I don't know", "C."],
        [OPTIONS] * 4,
        groups={"modality": ["ct", "ct", "mri", "mri"], "department": ["x", "y", "x", "y"]},
    )
    assert out["accuracy"] == 0.5
    assert out["n_items"] == 4 and out["n_unparsed"] == 1
    assert out["parsed"] == ["A", "B", None, "C"]
    assert out["per_group"] == {"modality": {"ct": 1.0, "mri": 0.0}, "department": {"x": 0.5, "y": 0.5}}


def test_mcq_accuracy_errors():
    with pytest.raises(MetricUndefinedError):
        mcq_accuracy([], [], [])
    with pytest.raises(ValueError, match="not an option"):
        mcq_accuracy(["D"], ["A"], [OPTIONS])
    with pytest.raises(ValueError, match="group 'modality' has 1 values for 2"):
        mcq_accuracy(["A", "B"], ["A", "B"], [OPTIONS] * 2, groups={"modality": ["ct"]})
