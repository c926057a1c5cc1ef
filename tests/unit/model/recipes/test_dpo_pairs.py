"""How DPO picks (chosen, rejected) from K scored samples."""

from __future__ import annotations

import pytest

from model.reasoning import ReasoningFormatError, check_answer_layout
from model.recipes.dpo import is_well_formed, select_pair

FIVE_STEPS = (
    "Step 1: Identify the anatomical structures.\nThis is a chest CT image.\n"
    "Step 2: Detect the regions.\n- <ref>left lung</ref><box>[[100, 200, 300, 400]]</box>\n"
    "Step 3: Describe each region.\n- left lung: no abnormality.\n"
    "Step 4: Analyse the findings.\nNo prior study.\n"
    "Step 5: Final report: The lungs are clear. Impression: Normal chest CT."
)


def test_ties_go_to_the_most_likely_best_and_the_most_likely_worst():
    scores = [1.0, 0.0, 1.0, 0.0, 0.5]
    likelihoods = [-1.2, -3.0, -0.4, -0.9, -0.1]
    assert select_pair(scores, likelihoods) == (2, 3)
    assert select_pair(scores) == (0, 1)  # no likelihoods: first occurrences
    assert select_pair([0.3, 0.3, 0.3], likelihoods=[-1.0, -2.0, -3.0]) is None


def test_likelihoods_must_match_the_samples():
    with pytest.raises(ValueError, match="2 likelihoods for 3 scores"):
        select_pair([0.1, 0.2, 0.3], [-1.0, -2.0])


def test_well_formed_needs_steps_one_to_five_once_each_in_order():
    assert is_well_formed(FIVE_STEPS)
    assert not is_well_formed(FIVE_STEPS.replace("Step 3: Describe each region.\n", ""))  # missing
    assert not is_well_formed(FIVE_STEPS.replace("Step 4:", "Step 2:"))  # repeated
    swapped = (
        FIVE_STEPS.replace("Step 2:", "Step X:").replace("Step 3:", "Step 2:").replace("Step X:", "Step 3:")
    )
    assert not is_well_formed(swapped)  # out of order
    assert not is_well_formed("Step 1: chest CT, left lung, left lung, left lung")


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("[[100, 200, 300, 400]]", "[[300, 200, 100, 400]]", "impossible"),  # x2 < x1
        ("</ref><box>", "</ref>", "outside a complete"),  # a ref without its box
        ("[[100, 200, 300, 400]]", "[[100, 200, 300]]", "outside a complete"),  # three coordinates
        ("No prior study.\n", "No prior study.\nStep Final report: clear.\n", "no step header"),
        ("Final report: The lungs", "The lungs", "'Final report' must appear once"),
        ("Normal chest CT.", "Normal chest CT. Impression: Normal.", "more than once in step 5"),
    ],
)
def test_layout_check_rejects_answers_a_reader_could_not_use(old, new, why):
    assert is_well_formed(FIVE_STEPS, "layout")
    garbled = FIVE_STEPS.replace(old, new)
    assert garbled != FIVE_STEPS
    assert is_well_formed(garbled, "steps")  # the step headers alone do not see it
    assert not is_well_formed(garbled, "layout")
    with pytest.raises(ReasoningFormatError, match=why):
        check_answer_layout(garbled)


def test_unknown_format_check_is_refused():
    with pytest.raises(ValueError, match=r"one of \['layout', 'report', 'steps'\]"):
        is_well_formed(FIVE_STEPS, "strict")
