"""The paired DPO-vs-reasoning-SFT comparison of the learning report (hand-worked counts)."""

from __future__ import annotations

import pytest

from validation.learning_report import _markdown_dpo, paired_step5_difference


def test_paired_difference_counts_and_interval():
    baseline = [0.0, 0.5, 1.0, 0.5, 0.0, 1.0]
    candidate = [1.0, 0.5, 0.5, 0.5, 0.0, 1.0]  # +1 on prompt 0, -0.5 on prompt 2, four ties
    d = paired_step5_difference(candidate, baseline)
    assert d["difference"] == pytest.approx((1.0 - 0.5) / 6)
    assert (d["better"], d["worse"], d["same"]) == (1, 1, 4)
    # every resample's difference lies between all-worse (-0.5) and all-better (+1.0) draws
    assert -0.5 <= d["ci_low"] <= d["difference"] <= d["ci_high"] <= 1.0
    assert d["ci_low"] < 0 < d["ci_high"]  # one win and one loss: the interval straddles 0


def test_identical_models_have_a_zero_interval():
    d = paired_step5_difference([0.2, 0.7, 0.0], [0.2, 0.7, 0.0])
    assert (d["difference"], d["ci_low"], d["ci_high"], d["same"]) == (0.0, 0.0, 0.0, 3)


def test_prompt_counts_must_match():
    with pytest.raises(ValueError, match="2 candidate scores vs 3 baseline scores"):
        paired_step5_difference([0.1, 0.2], [0.1, 0.2, 0.3])


def test_markdown_names_both_checkpoints_and_the_difference():
    result = {
        "reasoning_sft": {"n": 3, "step5_f1": 0.3, "with_step5": 0.5},
        "dpo": {"n": 3, "step5_f1": 0.4, "with_step5": 0.6},
        "dpo_minus_reasoning_sft": {
            "difference": 0.1,
            "ci_low": -0.05,
            "ci_high": 0.25,
            "better": 2,
            "worse": 1,
            "same": 0,
        },
    }
    md = _markdown_dpo(result)
    assert "| reasoning_sft | 3 | 0.300 | 0.50 |" in md and "| dpo | 3 | 0.400 | 0.60 |" in md
    assert "DPO - reasoning SFT: +0.100 [95% paired bootstrap CI -0.050, +0.250]" in md
    assert "better on 2 prompts, worse on 1, same on 0" in md
