"""Tests of validation.metrics.guardrail: the refusal rule on the curated template and scores by hand."""

from __future__ import annotations

import pytest

from model.data.curation import REFUSAL
from validation.metrics import MetricUndefinedError, guardrail_scores, is_refusal


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        (REFUSAL.format(region="spleen"), True),  # the curated guardrail answer
        ("I can't locate the liver in this image.", True),
        ("The gallbladder is not visible.", True),
        ("Unable to identify the left kidney.", True),
        ("There is no spleen in this image.", True),
        ("<ref>spleen</ref><box>[[10, 20, 30, 40]]</box>", False),  # a localisation
        ("Sorry, I cannot find it <box>[[1, 2, 3, 4]]</box>", False),  # a box wins
        ("The spleen is at the upper left.", False),
        ("", False),
        (None, False),
    ],
)
def test_is_refusal(text, refusal):
    assert is_refusal(text) is refusal


def test_guardrail_scores_worked_example():
    """should [T, T, F, F], refused [T, F, F, T]: refusal 1/2, non-refusal 1/2, overall 2/4."""
    out = guardrail_scores([True, True, False, False], [True, False, False, True])
    assert out == {"accuracy": 0.5, "refusal_accuracy": 0.5, "non_refusal_accuracy": 0.5}
    out = guardrail_scores([True, True, True], [True, True, False])
    assert out == pytest.approx({"accuracy": 2 / 3, "refusal_accuracy": 2 / 3})  # no present item


def test_guardrail_errors():
    with pytest.raises(MetricUndefinedError):
        guardrail_scores([], [])
    with pytest.raises(ValueError):
        guardrail_scores([True], [True, False])
