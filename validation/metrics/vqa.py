"""VQA scores with MultiMedEval's definitions (Royer et al. 2024, https://github.com/corentin-ryr/MultiMedEval).

Reproduces ``multimedeval.utils.clean_str`` (the VQAv2 answer cleaner) and
``multimedeval.task_families.VQA.evaluate``:

* **Cleaner** (:func:`vqa_clean`): lower-case; for each of the VQAv2 punctuation marks
  ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: delete it when it touches a space in the text or the
  text has a digit-comma-digit group, else replace it by a space (apostrophes and colons are kept);
  delete periods not followed by a digit (at most 32 of them: MultiMedEval, like the official VQAv2
  evaluation code, passes ``re.UNICODE`` (= 32) as ``re.sub``'s *count*); number words
  none/zero..ten -> digits; drop the articles a/an/the; restore VQAv2 contractions
  ("dont" -> "don't"); finally delete commas.
* **Tokens**: P, G = sets of whitespace tokens of the cleaned prediction and gold.
  precision = |P & G| / |P| (0 when P is empty), recall = |P & G| / |G|,
  F1 = 2 p r / (p + r + 1e-8).
* **BLEU-1** per sample on the cleaned strings (torchmetrics ``BLEUScore(n_gram=1)``: whitespace
  tokens, clipped unigram precision, brevity penalty ``exp(1 - |gold| / |pred|)`` unless
  ``|pred| > |gold|``, no smoothing), averaged over samples.
* **Closed** question iff the cleaned gold is exactly "yes" or "no". When G == {"no"}, "not" is added to
  G for the closed decision only; a closed answer is correct iff its recall against that G >= 0.4.
  ``recall`` / ``f1`` use the plain G.
* **open_recall** = mean recall over open questions; **open_accuracy** = share of open questions
  with recall >= 0.75.

Differences from MultiMedEval, both about undefined cases: a key whose denominator is empty (no
closed question -> no ``closed_accuracy``; no open question -> no ``open_recall``/``open_accuracy``) is
left out of the result instead of being reported as 0, and a gold answer that cleans to nothing
raises ``ValueError`` (a data error) instead of scoring recall 0.

Example (hand-worked, see the tests): gold "No", prediction "no." -> G = P = {"no"}: recall 1,
F1 ~ 1, BLEU-1 1; closed, G becomes {"no", "not"}, closed recall 1/2 = 0.5 >= 0.4 -> correct.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from validation.metrics._common import check_pairs, mean

__all__ = ["VQAItemScore", "vqa_bleu1", "vqa_clean", "vqa_item_score", "vqa_scores"]

_PUNCT = tuple(';/[]"{}()=+\\_-><@`,?!')  # the VQAv2 punctuation list, one character each
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # VQAv2's pattern, kept as is
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_MAX_PERIODS = 32  # re.UNICODE passed as count by the reference code
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# VQAv2's contraction table (apostrophe-less form -> standard form); entries whose key has an
# upper-case letter can never match after lower-casing and are left out.
_CONTRACTIONS = {
    **{k: k[:-2] + "n't" for k in (
        "arent", "couldnt", "didnt", "doesnt", "hadnt", "hasnt", "havent", "isnt", "mightnt",
        "mustnt", "neednt", "oughtnt", "shouldnt", "wasnt", "werent", "wouldnt",
    )},
    "aint": "ain't", "cant": "can't", "dont": "don't", "shant": "shan't", "wont": "won't",
    "couldve": "could've", "mightve": "might've", "mustve": "must've", "shouldve": "should've",
    "wouldve": "would've", "notve": "not've",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "oclock": "o'clock",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_CLOSED = ("yes", "no")
_CLOSED_RECALL = 0.4
_OPEN_RECALL = 0.75


def vqa_clean(text: str) -> str:
    """The VQAv2 answer cleaner as MultiMedEval applies it (module docstring lists the steps).

    Example:
        >>> vqa_clean("The answer: Two, dont know.")
        "answer: 2 don't know"
    """
    if not isinstance(text, str):
        raise TypeError(f"vqa_clean needs a string, got {type(text).__name__}")
    lower = text.lower()
    has_digit_comma = _COMMA_STRIP.search(lower) is not None
    out = lower
    for p in _PUNCT:
        touches_space = p + " " in lower or " " + p in lower
        out = out.replace(p, "" if (touches_space or has_digit_comma) else " ")
    out = _PERIOD_STRIP.sub("", out, count=_MAX_PERIODS)
    words = [_NUMBERS.get(w, w) for w in out.split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words).replace(",", "")


def vqa_bleu1(pred_clean: str, gold_clean: str) -> float:
    """Sentence BLEU-1 as torchmetrics ``BLEUScore(n_gram=1)`` computes it (no smoothing).

    ``BP * clipped unigram precision`` with ``BP = 1`` if ``|pred| > |gold|`` else
    ``exp(1 - |gold| / |pred|)``; 0 when no unigram matches (or the prediction is empty).

    Example:
        pred "left lung", gold "left lung lobe": precision 2/2, BP = exp(1 - 3/2) -> 0.6065.
    """
    p, g = pred_clean.split(), gold_clean.split()
    gold_counts = Counter(g)
    matches = sum(min(c, gold_counts[w]) for w, c in Counter(p).items())
    if matches == 0:
        return 0.0
    bp = 1.0 if len(p) > len(g) else math.exp(1 - len(g) / len(p))
    return bp * matches / len(p)


@dataclass(frozen=True)
class VQAItemScore:
    """Scores of one VQA answer (MultiMedEval conventions).

    Attributes:
        gold: cleaned gold answer.
        pred: cleaned prediction.
        precision: |P & G| / |P| (0 for an empty prediction).
        recall: |P & G| / |G|.
        f1: 2 p r / (p + r + 1e-8).
        bleu1: sentence BLEU-1 of the cleaned strings.
        closed: the cleaned gold is "yes" or "no".
        correct: closed: recall (with "not" added to G = {"no"}) >= 0.4; open: recall >= 0.75.
    """

    gold: str
    pred: str
    precision: float
    recall: float
    f1: float
    bleu1: float
    closed: bool
    correct: bool


def vqa_item_score(gold: str, pred: str) -> VQAItemScore:
    """Score one answer (the per-item terms of :func:`vqa_scores`; use them for bootstrap CIs).

    Raises:
        ValueError: the gold answer is empty after cleaning.
    """
    g_clean, p_clean = vqa_clean(gold), vqa_clean(pred)
    g, p = set(g_clean.split()), set(p_clean.split())
    if not g:
        raise ValueError(f"gold answer {gold!r} is empty after VQA cleaning")
    common = len(p & g)
    precision = common / len(p) if p else 0.0
    recall = common / len(g)
    f1 = 2 * precision * recall / (precision + recall + 1e-8)
    closed = g_clean in _CLOSED
    if closed:
        g_closed = g | {"not"} if g == {"no"} else g
        correct = len(p & g_closed) / len(g_closed) >= _CLOSED_RECALL
    else:
        correct = recall >= _OPEN_RECALL
    return VQAItemScore(g_clean, p_clean, precision, recall, f1, vqa_bleu1(p_clean, g_clean), closed, correct)


def vqa_scores(golds: list[str], preds: list[str]) -> dict[str, float]:
    """MultiMedEval VQA scores of a list of answers.

    Args:
        golds: gold answers (raw; cleaned here).
        preds: model answers (raw; cleaned here).

    Returns:
        ``bleu1``, ``f1``, ``recall`` (means over all items), and ``closed_accuracy`` when there is
        a closed question, ``open_recall`` and ``open_accuracy`` when there is an open question.

    Raises:
        ValueError: lengths differ, or a gold answer is empty after cleaning (named by index).
        MetricUndefinedError: empty input.
    """
    check_pairs(golds, preds, "vqa_scores")
    items = []
    for i, (g, p) in enumerate(zip(golds, preds)):
        try:
            items.append(vqa_item_score(g, p))
        except ValueError as e:
            raise ValueError(f"vqa_scores: item {i}: {e}") from e
    out = {
        "bleu1": mean([s.bleu1 for s in items], "bleu1"),
        "f1": mean([s.f1 for s in items], "f1"),
        "recall": mean([s.recall for s in items], "recall"),
    }
    closed = [s for s in items if s.closed]
    opened = [s for s in items if not s.closed]
    if closed:
        out["closed_accuracy"] = sum(s.correct for s in closed) / len(closed)
    if opened:
        out["open_recall"] = mean([s.recall for s in opened], "open_recall")
        out["open_accuracy"] = sum(s.correct for s in opened) / len(opened)
    return out
