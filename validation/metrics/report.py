"""Report-generation metrics: BLEU-n, ROUGE-L, METEOR and CheXpert-F1 (rule-based labeler).

Conventions (all offline; nothing is downloaded):

* **Tokenizer** (:func:`report_tokens`, used by every text metric here): lower-case; a token is a
  maximal run of letters/digits, with ``.`` or ``,`` kept between two digits ("3.5", "1,000");
  every other character (whitespace, punctuation) separates tokens and is dropped.
* **BLEU-n**: NLTK ``corpus_bleu`` (uniform weights ``1/n``, one reference per hypothesis) with
  ``SmoothingFunction().method1`` (Chen & Cherry 2014: a zero n-gram count becomes ``eps = 0.1``);
  :func:`sentence_bleu` is NLTK's ``sentence_bleu`` with the same smoothing (per item, for
  bootstrap CIs and Med-GRIT's image analysis).
* **ROUGE-L** (:func:`rouge_l`, own LCS implementation, Lin 2004): ``P = LCS / |hyp|``,
  ``R = LCS / |ref|``, F-measure with beta = 1 (``2PR / (P + R)``, as the ``rouge-score`` package's
  ``rougeL`` fmeasure), 0 when LCS = 0; the corpus value is the mean over pairs.
* **METEOR** (:func:`meteor`): NLTK ``single_meteor_score`` (Banerjee & Lavie 2005; alpha 0.9,
  beta 3, gamma 0.5: ``Fmean = PR / (alpha P + (1 - alpha) R)``, penalty
  ``gamma (chunks / matches)^beta``) with the **exact and Porter-stem matchers only**: WordNet is not
  installed offline, so a stub with no synsets is passed and synonym matching is off. Corpus value:
  the mean over pairs.
* **CheXpert-F1** (:func:`report_scores`): both reports are labelled by
  :func:`validation.report_labeler.label_report` and scored by
  :func:`validation.report_labeler.chexpert_f1` (micro and macro F1 on positive labels) over the 14
  CheXpert observations and over the 5 competition ones; uncertain counts as positive by default.

An empty reference raises ``ValueError`` (a data error); an empty hypothesis scores 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from validation.metrics._common import check_pairs, mean
from validation.report_labeler import MetricUndefinedError, Vocabulary, chexpert_f1, label_report

__all__ = [
    "bleu",
    "lcs_length",
    "meteor",
    "report_scores",
    "report_tokens",
    "rouge_l",
    "sentence_bleu",
]

_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+")


class _NoSynonyms:
    """A WordNet stand-in without synsets: METEOR's synonym stage matches nothing (WordNet is offline)."""

    @staticmethod
    def synsets(word: str) -> list:
        return []


def _bleu_module() -> Any:
    """``nltk.translate.bleu_score``, imported on first use (importing nltk takes seconds)."""
    from nltk.translate import bleu_score

    return bleu_score


def report_tokens(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` (the tokenizer of every metric in this module).

    Example:
        >>> report_tokens("A 3.5 cm nodule, left-lower lobe.")
        ['a', '3.5', 'cm', 'nodule', 'left', 'lower', 'lobe']
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a string, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


def _tokenised(refs: Sequence[str], hyps: Sequence[str], metric: str) -> list[tuple[list[str], list[str]]]:
    check_pairs(refs, hyps, metric)
    out = []
    for i, (r, h) in enumerate(zip(refs, hyps)):
        ref = report_tokens(r)
        if not ref:
            raise ValueError(f"{metric}: reference {i} has no word token: {r!r}")
        out.append((ref, report_tokens(h)))
    return out


def _weights(n: int) -> tuple[float, ...]:
    if n < 1:
        raise ValueError(f"BLEU order must be >= 1, got {n}")
    return (1.0 / n,) * n


def bleu(refs: Sequence[str], hyps: Sequence[str], n: int = 4) -> float:
    """Corpus BLEU-n (NLTK ``corpus_bleu``, smoothing method 1, one reference per hypothesis).

    Raises:
        ValueError: lengths differ or a reference has no token.
        MetricUndefinedError: empty input.
    """
    pairs = _tokenised(refs, hyps, f"bleu{n}")
    nb = _bleu_module()
    smooth = nb.SmoothingFunction().method1
    return float(
        nb.corpus_bleu([[r] for r, _ in pairs], [h for _, h in pairs], _weights(n), smoothing_function=smooth)
    )


def sentence_bleu(ref: str, hyp: str, n: int = 4) -> float:
    """Sentence BLEU-n of one pair (NLTK ``sentence_bleu``, smoothing method 1).

    Raises:
        ValueError: the reference has no token.
    """
    ((r, h),) = _tokenised([ref], [hyp], f"sentence_bleu{n}")
    nb = _bleu_module()
    return float(nb.sentence_bleu([r], h, _weights(n), smoothing_function=nb.SmoothingFunction().method1))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(|a| |b|) dynamic programme)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _rouge_l_pair(ref: list[str], hyp: list[str]) -> float:
    lcs = lcs_length(ref, hyp)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return 2 * p * r / (p + r)


def rouge_l(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (beta = 1) over pairs.

    Example:
        ref "the cat sat on the mat", hyp "the cat on the mat": LCS 5, P = 5/5, R = 5/6,
        F = 2 * 1 * 5/6 / (1 + 5/6) = 10/11.

    Raises:
        ValueError: lengths differ or a reference has no token.
        MetricUndefinedError: empty input.
    """
    return mean([_rouge_l_pair(r, h) for r, h in _tokenised(refs, hyps, "rouge_l")], "rouge_l")


def meteor(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Mean METEOR over pairs (NLTK, exact + Porter-stem matchers, no synonyms; see module docstring).

    Raises:
        ValueError: lengths differ or a reference has no token.
        MetricUndefinedError: empty input.
    """
    from nltk.translate.meteor_score import single_meteor_score  # lazy: importing nltk takes seconds

    pairs = _tokenised(refs, hyps, "meteor")
    return mean([float(single_meteor_score(r, h, wordnet=_NoSynonyms())) for r, h in pairs], "meteor")


def _chexpert(
    refs: Sequence[str], hyps: Sequence[str], uncertain_as_positive: bool, vocabulary: Vocabulary | None
) -> dict[str, float]:
    ref_labels = [label_report(r, vocabulary=vocabulary) for r in refs]
    hyp_labels = [label_report(h, vocabulary=vocabulary) for h in hyps]
    out = {}
    for subset, suffix in (("all14", "14"), ("competition5", "5")):
        try:
            res = chexpert_f1(
                hyp_labels, ref_labels, subset=subset, uncertain_as_positive=uncertain_as_positive
            )
        except MetricUndefinedError:
            continue  # no positive label of the subset anywhere: the keys stay absent
        out[f"chexpert_micro_f1_{suffix}"] = res["micro_f1"]
        out[f"chexpert_macro_f1_{suffix}"] = res["macro_f1"]
    return out


def report_scores(
    refs: list[str],
    hyps: list[str],
    *,
    uncertain_as_positive: bool = True,
    vocabulary: Vocabulary | None = None,
) -> dict[str, float]:
    """Every report-generation metric of a corpus of (reference, generated) reports.

    Args:
        refs: reference reports.
        hyps: generated reports (for 5-step reasoning answers pass the step-5 report, see
            :func:`validation.report_labeler.extract_step5_or_none`; an empty string scores 0).
        uncertain_as_positive: CheXpert "U-ones": count an uncertain label as positive.
        vocabulary: the labeler's vocabulary (default :data:`validation.report_labeler.DEFAULT_VOCABULARY`).

    Returns:
        ``bleu4``, ``rouge_l``, ``meteor`` and ``chexpert_micro_f1_14``, ``chexpert_macro_f1_14``,
        ``chexpert_micro_f1_5``, ``chexpert_macro_f1_5``. A CheXpert subset with no positive label
        in any reference or hypothesis has an undefined F1: its two keys are left out (never 0).

    Raises:
        ValueError: lengths differ or a reference has no token.
        MetricUndefinedError: empty input.
    """
    out = {"bleu4": bleu(refs, hyps, 4), "rouge_l": rouge_l(refs, hyps), "meteor": meteor(refs, hyps)}
    out.update(_chexpert(refs, hyps, uncertain_as_positive, vocabulary))
    return out
