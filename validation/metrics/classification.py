"""Classification metrics: macro-F1 (single- and multi-label) and free-text answer -> label mapping.

Conventions (fixed here, used by every benchmark):

* **Per-label F1** = ``2 TP / (2 TP + FP + FN)``; **macro-F1** = the unweighted mean over the labels
  that occur at least once among the golds or the predictions (a label of an explicit ``labels``
  list that never occurs anywhere has no defined F1 and is left out of the mean, as in
  :func:`validation.report_labeler.chexpert_f1`). No label to average -> :class:`MetricUndefinedError`.
* **Single-label**: a prediction outside ``labels`` (an unmappable answer is ``None``) is *wrong*:
  a false negative of the gold class and a false positive of no class.
* **Multi-label**: predicted labels outside ``labels`` are ignored in the per-label counts (they are
  false positives of no listed class); an empty predicted set is allowed.
* **Free text -> label** (:func:`map_answer_to_label`): see its docstring; an answer that maps to no
  label, or to several, is ``None`` and counts as wrong.

References: macro-F1 as in scikit-learn ``f1_score(average="macro")`` restricted to labels present
in golds or predictions (sklearn's ``zero_division`` case is excluded instead of scored 0).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from validation.metrics._common import check_pairs
from validation.report_labeler import MetricUndefinedError

__all__ = [
    "accuracy",
    "macro_f1",
    "map_answer_to_label",
    "map_answer_to_labels",
    "multilabel_macro_f1",
    "per_label_f1",
]

_NON_WORD = re.compile(r"[^0-9a-z]+")
#: words cutting a clause for the negation rule (besides punctuation)
_CLAUSE_WORDS = re.compile(r"\b(?:but|however|whereas|although|though|while|instead)\b")
_CLAUSE_PUNCT = re.compile(r"[.,;:!?()\n]+")
#: negation cues: a mention with one of these among the 3 words before it (same clause) is ignored
_NEGATIONS = frozenset({"no", "not", "without", "nor", "neither", "negative", "absent", "excluded"})
_NEG_WINDOW = 3


def _norm(text: str) -> str:
    """Case-folded text with every run of non-alphanumeric characters replaced by one space."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


# ---------------------------------------------------------------------------------------------
# F1
# ---------------------------------------------------------------------------------------------


def _f1_table(counts: Mapping[str, dict[str, int]]) -> dict[str, float]:
    """Per-label F1 of the labels with ``2TP + FP + FN > 0``."""
    out = {}
    for label, c in counts.items():
        denom = 2 * c["tp"] + c["fp"] + c["fn"]
        if denom:
            out[label] = 2 * c["tp"] / denom
    return out


def _labels(labels: Sequence[str] | None, default: Collection[str], metric: str) -> list[str]:
    out = sorted(default) if labels is None else list(labels)
    if len(set(out)) != len(out):
        raise ValueError(f"{metric}: labels contain duplicates: {out}")
    if not out:
        raise MetricUndefinedError(f"{metric}: no label to score")
    return out


def per_label_f1(
    golds: Sequence[str], preds: Sequence[str | None], labels: Sequence[str] | None = None
) -> dict[str, float]:
    """Single-label per-label F1 (the terms of :func:`macro_f1`).

    Args:
        golds: gold label per item (each must be in ``labels``).
        preds: predicted label per item; None or a string outside ``labels`` is wrong.
        labels: the label set; default the sorted set of ``golds``.

    Returns:
        Label -> F1 for every label occurring in golds or (valid) predictions.

    Raises:
        ValueError: lengths differ, duplicate labels, or a gold label outside ``labels``.
        MetricUndefinedError: empty input, or no label occurs.
    """
    check_pairs(golds, preds, "macro_f1")
    names = _labels(labels, set(golds), "macro_f1")
    known = set(names)
    counts = {n: {"tp": 0, "fp": 0, "fn": 0} for n in names}
    for i, (g, p) in enumerate(zip(golds, preds)):
        if g not in known:
            raise ValueError(f"macro_f1: gold label {g!r} of item {i} is not in labels {names}")
        if p == g:
            counts[g]["tp"] += 1
            continue
        counts[g]["fn"] += 1
        if p in known:
            counts[p]["fp"] += 1
    table = _f1_table(counts)
    if not table:
        raise MetricUndefinedError("macro_f1: no label occurs in golds or predictions")
    return table


def macro_f1(golds: list[str], preds: list[str | None], labels: list[str] | None = None) -> float:
    """Single-label macro-F1 (see the module docstring for the conventions).

    Args:
        golds: gold label per item.
        preds: predicted label per item (already mapped, e.g. by :func:`map_answer_to_label`); a
            prediction outside ``labels`` (or None) counts as wrong: a false negative of the gold
            class and a false positive of no class.
        labels: the label set; default the sorted set of ``golds``.

    Returns:
        Mean per-label F1 over the labels occurring in golds or predictions.

    Raises:
        ValueError: lengths differ, duplicate labels, or a gold label outside ``labels``.
        MetricUndefinedError: empty input.

    Example:
        golds ``[a, a, b, c]``, preds ``[a, b, b, None]``: F1(a) = 2/(2+0+1) = 2/3,
        F1(b) = 2/(2+1+0) = 2/3, F1(c) = 0/(0+0+1) = 0 -> macro = 4/9.
    """
    table = per_label_f1(golds, preds, labels)
    return sum(table.values()) / len(table)


def multilabel_macro_f1(
    golds: list[set[str]], preds: list[set[str]], labels: list[str] | None = None
) -> float:
    """Multi-label macro-F1: per label, TP/FP/FN over items, then the mean over labels.

    Args:
        golds: gold label set per item (each label must be in ``labels``).
        preds: predicted label set per item; labels outside ``labels`` are ignored.
        labels: the label set; default the sorted union of ``golds``.

    Returns:
        Mean per-label F1 over the labels occurring in golds or predictions.

    Raises:
        ValueError: lengths differ, duplicate labels, or a gold label outside ``labels``.
        MetricUndefinedError: empty input, or no label occurs anywhere.

    Example:
        golds ``[{a, b}, {b}]``, preds ``[{a}, {b, c}]`` (labels a, b): F1(a) = 1, F1(b): TP 1,
        FN 1 -> 2/3; c ignored -> macro = 5/6.
    """
    check_pairs(golds, preds, "multilabel_macro_f1")
    names = _labels(labels, set().union(*golds), "multilabel_macro_f1")
    known = set(names)
    counts = {n: {"tp": 0, "fp": 0, "fn": 0} for n in names}
    for i, (g, p) in enumerate(zip(golds, preds)):
        if not set(g) <= known:
            raise ValueError(
                f"multilabel_macro_f1: gold labels {sorted(set(g) - known)} of item {i} are not in labels"
            )
        for n in known & (set(g) | set(p)):
            key = "tp" if (n in g and n in p) else ("fn" if n in g else "fp")
            counts[n][key] += 1
    table = _f1_table(counts)
    if not table:
        raise MetricUndefinedError("multilabel_macro_f1: no label occurs in golds or predictions")
    return sum(table.values()) / len(table)


def accuracy(golds: Sequence[str], preds: Sequence[str | None]) -> float:
    """Share of items whose prediction equals the gold (None is wrong).

    Raises:
        ValueError: lengths differ.
        MetricUndefinedError: empty input.
    """
    n = check_pairs(golds, preds, "accuracy")
    return sum(p is not None and p == g for g, p in zip(golds, preds)) / n


# ---------------------------------------------------------------------------------------------
# free text -> label
# ---------------------------------------------------------------------------------------------


def _phrase_table(labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Normalised phrase -> label; raises when two labels share a phrase."""
    unknown = set(synonyms or {}) - set(labels)
    if unknown:
        raise ValueError(f"synonyms given for labels not in labels: {sorted(unknown)}")
    table: dict[str, str] = {}
    for label in labels:
        for phrase in (label, *(synonyms or {}).get(label, ())):
            key = _norm(phrase)
            if not key:
                raise ValueError(f"label/synonym {phrase!r} of {label!r} has no letter or digit")
            if table.setdefault(key, label) != label:
                raise ValueError(f"phrase {phrase!r} names two labels: {table[key]!r} and {label!r}")
    return table


def _negated(clause_words: list[str], start: int) -> bool:
    return any(w in _NEGATIONS for w in clause_words[max(0, start - _NEG_WINDOW) : start])


def _mentions(text: str, table: Mapping[str, str]) -> set[str]:
    """Labels mentioned (outermost, non-negated) anywhere in ``text``."""
    found: set[str] = set()
    for clause in _CLAUSE_PUNCT.split(_CLAUSE_WORDS.sub(".", text.casefold())):
        words = _norm(clause).split()
        spans = []
        for phrase, label in table.items():
            p = phrase.split()
            spans += [
                (i, i + len(p), label) for i in range(len(words) - len(p) + 1) if words[i : i + len(p)] == p
            ]
        for a, b, label in spans:
            inside = any(a2 <= a and b <= b2 and (b2 - a2) > (b - a) for a2, b2, _ in spans)
            if not inside and not _negated(words, a):
                found.add(label)
    return found


def map_answer_to_labels(
    text: str | None, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
) -> set[str]:
    """Every label a free-text answer asserts (multi-label answers), by the rule of :func:`map_answer_to_label`.

    Returns:
        The set of labels mentioned and not negated (empty for None or no mention).
    """
    if text is None:
        return set()
    table = _phrase_table(labels, synonyms)
    key = _norm(text)
    if key in table:
        return {table[key]}
    return _mentions(text, table)


def map_answer_to_label(
    text: str | None, labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """Map a free-text answer to one label, or None (unmappable; scored as wrong).

    Rule, in order (case-insensitive; every run of non-alphanumeric characters counts as a space):

    1. the whole answer equals a label or one of its synonyms -> that label;
    2. otherwise the labels/synonyms found as whole-word phrases, clause by clause (clauses cut at
       ``. , ; : ! ? ( )`` and "but", "however", "whereas", "although", "though", "while",
       "instead"), dropping a phrase inside a longer found phrase ("basal cell carcinoma" hides
       "carcinoma") and a phrase with a negation word (no, not, without, nor, neither, negative,
       absent, excluded) among the 3 words before it in its clause;
    3. exactly one distinct label remains -> that label; none or several -> None.

    Args:
        text: the model's answer (None -> None).
        labels: the label vocabulary.
        synonyms: label -> extra phrases naming it (e.g. ``{"effusion": ["fluid"]}``).

    Returns:
        The label, or None.

    Raises:
        ValueError: a synonym key not in ``labels``, or one phrase naming two labels.

    Example:
        >>> map_answer_to_label("No pneumonia; likely pleural effusion.", ["pneumonia", "pleural effusion"])
        'pleural effusion'
    """
    found = map_answer_to_labels(text, labels, synonyms)
    return next(iter(found)) if len(found) == 1 else None
