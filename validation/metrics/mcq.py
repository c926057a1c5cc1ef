"""Multiple-choice scoring: parse the chosen option from free text; accuracy overall and per group.

Parsing rule (:func:`mcq_parse`), first that applies:

1. **Letter alone**: the answer, stripped of spaces and of the characters ``( ) [ ] . : ,``, is one
   option letter (any case): "B", "(b)", "C." -> that letter.
2. **Explicit letter**: an upper-case option letter at the start followed by ``.``, ``)``, ``]`` or
   ``:`` ("A. heart", "(B) liver", "C: ..."), or after "answer", "answer is", "option", "choice"
   (keyword in any case) as an upper-case letter or any letter in brackets ("The answer is B",
   "answer: (c)"), or an upper-case letter in brackets right after an option's text (any case):
   "The answer is CT (B)", "liver (B)" (the stated letter decides: "CT (A)" reads A even when CT
   is option B). When these patterns name several different letters the answer is ambiguous ->
   None.
3. **Option text**: the option texts (and the letter-free answer) are matched with
   :func:`validation.metrics.classification.map_answer_to_label` (whole-word, case-insensitive,
   longest phrase wins, negated mentions dropped); exactly one option -> its letter.

Anything else is unparseable: None, scored as **wrong** (never a random pick). A lower-case "a" is
the article, and "A large mass" starts with one, so a letter followed by a space alone is not a
choice (rule 3 reads "A heart" through its option text).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from validation.metrics._common import check_pairs
from validation.metrics.classification import map_answer_to_label

__all__ = ["mcq_accuracy", "mcq_parse"]

_STRIP = re.compile(r"[\s()\[\].:,]+")
_LEADING = re.compile(r"^\s*[(\[]?([A-Z])[.):\]]")
_KEYWORD = re.compile(
    r"\b(?i:answer(?:\s+is)?|option|choice)\s*[:\-]?\s*(?:[(\[]([A-Za-z])[)\]]|([A-Z])\b(?!['\u2019-]))"
)


def _after_option_text(options: Mapping[str, str]) -> re.Pattern:
    """An upper-case letter in brackets right after one of the option texts: "CT (B)"."""
    texts = sorted({t.strip() for t in options.values() if t.strip()}, key=len, reverse=True)
    alternatives = "|".join(re.escape(t) for t in texts) or r"(?!)"
    return re.compile(rf"(?i:\b(?:{alternatives}))\s*[(\[]([A-Z])[)\]]")


def _check_options(options: Mapping[str, str]) -> None:
    bad = [k for k in options if not (isinstance(k, str) and len(k) == 1 and k.isalpha() and k.isupper())]
    if bad or not options:
        raise ValueError(f"options must map upper-case letters to texts, got keys {list(options)}")


def mcq_parse(text: str | None, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer chooses, or None when it cannot be told (see module docstring).

    Args:
        text: the model's answer.
        options: letter -> option text, e.g. ``{"A": "heart", "B": "liver"}``.

    Returns:
        The chosen letter, or None (unparseable or ambiguous).

    Raises:
        ValueError: an option key is not one upper-case letter.

    Example:
        >>> mcq_parse("The answer is (B).", {"A": "heart", "B": "liver"})
        'B'
        >>> mcq_parse("It looks like the liver.", {"A": "heart", "B": "liver"})
        'B'
    """
    _check_options(options)
    if text is None:
        return None
    bare = _STRIP.sub("", text)
    if len(bare) == 1 and bare.upper() in options:
        return bare.upper()
    letters = {m.group(1) for m in _LEADING.finditer(text)} | {
        (m.group(1) or m.group(2)).upper() for m in _KEYWORD.finditer(text)
    }
    letters |= {m.group(1) for m in _after_option_text(options).finditer(text)}
    letters &= set(options)
    if len(letters) == 1:
        return letters.pop()
    if len(letters) > 1:
        return None
    by_text = {v: k for k, v in options.items()}
    chosen = map_answer_to_label(text, list(by_text))
    return None if chosen is None else by_text[chosen]


def _group_accuracy(correct: Sequence[bool], keys: Sequence[str], name: str) -> dict[str, float]:
    if len(keys) != len(correct):
        raise ValueError(f"mcq_accuracy: group {name!r} has {len(keys)} values for {len(correct)} items")
    hits: dict[str, list[bool]] = defaultdict(list)
    for k, c in zip(keys, correct):
        hits[k].append(c)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


def mcq_accuracy(
    golds: Sequence[str],
    preds: Sequence[str | None],
    options_per_item: Sequence[dict[str, str]],
    groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Multiple-choice accuracy, overall and per group.

    Args:
        golds: the correct option letter per item.
        preds: the model's free-text answer per item (parsed with :func:`mcq_parse`).
        options_per_item: the options of each item.
        groups: grouping name -> one value per item, e.g. ``{"modality": [...], "department": [...]}``.

    Returns:
        ``{"accuracy": float, "n_items": int, "n_unparsed": int,
        "per_group": {name: {value: accuracy}}, "parsed": [letter or None per item]}``.

    Raises:
        ValueError: lengths differ, a gold letter is not an option of its item, or a group has the
            wrong length.
        MetricUndefinedError: empty input.

    Example:
        golds [A, B, A], answers ["A", "the liver", "I don't know"] -> parsed [A, B, None];
        accuracy 2/3; with modality [ct, ct, mri]: ct 1.0, mri 0.0.
    """
    n = check_pairs(golds, preds, "mcq_accuracy")
    if len(options_per_item) != n:
        raise ValueError(f"mcq_accuracy: {len(options_per_item)} option sets for {n} items")
    parsed, correct = [], []
    for i, (g, p, opts) in enumerate(zip(golds, preds, options_per_item)):
        if g not in opts:
            raise ValueError(f"mcq_accuracy: gold {g!r} of item {i} is not an option ({sorted(opts)})")
        parsed.append(mcq_parse(p, opts))
        correct.append(parsed[-1] == g)
    return {
        "accuracy": sum(correct) / n,
        "n_items": n,
        "n_unparsed": sum(p is None for p in parsed),
        "per_group": {name: _group_accuracy(correct, keys, name) for name, keys in (groups or {}).items()},
        "parsed": parsed,
    }
