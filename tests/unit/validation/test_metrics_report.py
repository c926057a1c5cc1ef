"""Tests of validation.metrics.report: BLEU, ROUGE-L, METEOR and CheXpert-F1 on tiny worked examples."""

from __future__ import annotations

import math

import pytest

from validation.metrics import (
    MetricUndefinedError,
    bleu,
    lcs_length,
    meteor,
    report_scores,
    report_tokens,
    rouge_l,
    sentence_bleu,
)


def test_tokenizer():
    assert report_tokens("A 3.5 cm nodule, left-lower lobe (T2N1M0); 1,000 cells.") == [
        "a", "3.5", "cm", "nodule", "left", "lower", "lobe", "t2n1m0", "1,000", "cells",
    ]  # fmt: skip
    with pytest.raises(TypeError):
        report_tokens(None)


def test_bleu_worked_example():
    """ref 'the cat sat on mat' (5 tokens), hyp 'the cat sat' (3 tokens).

    p1 = 3/3, p2 = 2/2, p3 = 1/1, p4 = 0/0 -> smoothing method 1: 0.1 / 1.
    BP = exp(1 - 5/3) = exp(-2/3).
    BLEU-2 = exp(-2/3) = 0.5134; BLEU-4 = exp(-2/3) * 0.1 ** (1/4) = 0.2887.
    """
    assert bleu(["the cat sat on mat"], ["the cat sat"], 2) == pytest.approx(math.exp(-2 / 3))
    assert bleu(["the cat sat on mat"], ["The cat, sat."], 4) == pytest.approx(math.exp(-2 / 3) * 0.1**0.25)
    assert sentence_bleu("the cat sat on mat", "the cat sat", 2) == pytest.approx(math.exp(-2 / 3))
    assert bleu(["a b c d"], ["a b c d"]) == pytest.approx(1.0)


def test_bleu_is_corpus_level():
    """Corpus BLEU-1 pools counts: matches (2 + 0) / hyp tokens (2 + 2) = 0.5, lengths equal -> BP 1."""
    assert bleu(["a b", "c d"], ["a b", "x y"], 1) == pytest.approx(0.5)


def test_lcs_and_rouge_l():
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "c", "e"]) == 3
    assert lcs_length([], ["a"]) == 0
    # ref 6 tokens, hyp 5, LCS 5: P 1, R 5/6 -> F = 2 * 5/6 / (11/6) = 10/11
    assert rouge_l(["the cat sat on the mat"], ["the cat on the mat"]) == pytest.approx(10 / 11)
    # mean over pairs: 1 and 0
    assert rouge_l(["a b", "c d"], ["a b", "x"]) == pytest.approx(0.5)


def test_meteor_exact_stem_no_synonyms():
    """alpha 0.9, beta 3, gamma 0.5.

    'the cats sat on the mat' vs ref 'the cat sat on the mat': 5 exact + 1 stem (cats~cat) = 6
    matches, P = R = 1, Fmean = 1, 1 chunk -> penalty 0.5 (1/6)^3 -> 1 - 1/432.
    'c d a b' vs 'a b c d': 4 matches in 2 chunks -> 1 - 0.5 (2/4)^3 = 0.9375.
    'the kitty sat' vs 'the cat sat': no WordNet -> 2 matches, P = R = 2/3, Fmean 2/3,
    2 chunks -> penalty 0.5 (2/2)^3 -> 1/3.
    """
    assert meteor(["the cat sat on the mat"], ["the cats sat on the mat"]) == pytest.approx(1 - 1 / 432)
    assert meteor(["a b c d"], ["c d a b"]) == pytest.approx(0.9375)
    assert meteor(["the cat sat"], ["the kitty sat"]) == pytest.approx(1 / 3)
    assert meteor(["the cat"], [""]) == 0.0


def test_text_metric_errors():
    with pytest.raises(MetricUndefinedError):
        rouge_l([], [])
    with pytest.raises(ValueError, match="reference 1 has no word token"):
        meteor(["a", "..."], ["a", "b"])
    with pytest.raises(ValueError, match="1 predictions for 2"):
        bleu(["a", "b"], ["a"])


def test_report_scores_with_chexpert():
    """refs: [effusion+], [cardiomegaly+, edema 0]; hyps: [effusion+], [nothing -> No Finding].

    14 labels: Pleural Effusion TP 1; Cardiomegaly FN 1; No Finding FP 1 -> micro 2/(2+1+1) = 0.5,
    macro (1 + 0 + 0) / 3. Competition 5: effusion TP, cardiomegaly FN -> micro 2/3, macro 1/2.
    """
    refs = ["Small left pleural effusion.", "Cardiomegaly. No edema."]
    hyps = ["Pleural effusion.", "No acute findings."]
    out = report_scores(refs, hyps)
    assert out["chexpert_micro_f1_14"] == pytest.approx(0.5)
    assert out["chexpert_macro_f1_14"] == pytest.approx(1 / 3)
    assert out["chexpert_micro_f1_5"] == pytest.approx(2 / 3)
    assert out["chexpert_macro_f1_5"] == pytest.approx(0.5)
    assert out["bleu4"] == pytest.approx(bleu(refs, hyps, 4))
    assert out["rouge_l"] == pytest.approx(rouge_l(refs, hyps))
    assert out["meteor"] == pytest.approx(meteor(refs, hyps))


def test_report_scores_leave_out_undefined_chexpert_subset():
    """Brain reports: no competition label is positive anywhere -> the _5 keys are absent, never 0."""
    out = report_scores(["Glioma in the left frontal lobe."], ["Glioma in the frontal lobe."])
    assert "chexpert_micro_f1_5" not in out and "chexpert_macro_f1_5" not in out
    assert {"bleu4", "rouge_l", "meteor"} <= set(out)


def test_uncertain_as_positive_option():
    refs, hyps = ["Pleural effusion."], ["Possible pleural effusion."]
    assert report_scores(refs, hyps)["chexpert_micro_f1_5"] == 1.0
    assert report_scores(refs, hyps, uncertain_as_positive=False)["chexpert_micro_f1_5"] == 0.0
