"""Guardrail metrics: does the model refuse to locate a region/finding that is absent, and only then?

The curated guardrail answer is :data:`model.data.curation.REFUSAL` ("Sorry, I cannot find the
{region} in the image."), asked with exactly the ``region_detection`` prompts
(``model/data/templates.yaml``), so only the answer tells a refusal from a localisation.

Refusal rule (:func:`is_refusal`): the answer holds **no** ``<box>`` and, case-insensitively, one of

* a cannot-verb: "cannot / can not / can't / could not / couldn't / unable to / not able to" followed
  within two words by "find / locate / see / identify / detect / visualise / visualize";
* an absence statement: "not (present / visible / seen / found / shown / identified)" or
  "(is / are) absent", or "there is no" / "no ... (is / are) (visible / present / seen)";
* "sorry" together with "not" / "no" (an apology that declines).

An answer with a box is never a refusal (it localises something). Scores (:func:`guardrail_scores`):
``refusal_accuracy`` = share of refusals among items whose region is absent (``should_refuse``),
``non_refusal_accuracy`` = share of non-refusals among items whose region is present, ``accuracy`` =
share of items answered the right way overall.
"""

from __future__ import annotations

import re

from validation.metrics._common import check_pairs

__all__ = ["guardrail_scores", "is_refusal"]

_BOX = re.compile(r"<box>", re.IGNORECASE)
_REFUSALS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        (
            r"\b(?:cannot|can ?not|can't|can’t|could ?not|couldn't|couldn’t|unable to|not able to)\s+"
            r"(?:\w+\s+){0,2}?(?:find|locate|see|identify|detect|visuali[sz]e)\b"
        ),
        r"\bnot\s+(?:present|visible|seen|found|shown|identified)\b",
        r"\b(?:is|are)\s+absent\b",
        r"\bthere\s+(?:is|are)\s+no\b",
        r"\bno\b[^.]*\b(?:is|are)\s+(?:visible|present|seen)\b",
        r"\bsorry\b[^.]*\b(?:not|no|cannot)\b",
    )
]


def is_refusal(text: str | None) -> bool:
    """Whether an answer declines to locate the asked region (rule in the module docstring).

    Args:
        text: the model's answer; None (no answer) is not a refusal.

    Example:
        >>> is_refusal("Sorry, I cannot find the spleen in the image.")
        True
        >>> is_refusal("<ref>spleen</ref><box>[[10, 20, 30, 40]]</box>")
        False
    """
    if text is None or _BOX.search(text):
        return False
    return any(rx.search(text) for rx in _REFUSALS)


def guardrail_scores(should_refuse: list[bool], refused: list[bool]) -> dict[str, float]:
    """Refusal accuracy when the region is absent, non-refusal accuracy when present, overall accuracy.

    Args:
        should_refuse: per item, True when the asked region/finding is absent from the image.
        refused: per item, whether the model refused (e.g. :func:`is_refusal` of its answer).

    Returns:
        ``accuracy`` always; ``refusal_accuracy`` when some item should be refused;
        ``non_refusal_accuracy`` when some item should be answered (a key whose denominator is
        empty is left out, never 0).

    Raises:
        ValueError: lengths differ.
        MetricUndefinedError: empty input.

    Example:
        should_refuse [T, T, F, F], refused [T, F, F, T] -> refusal 1/2, non-refusal 1/2, overall 2/4.
    """
    n = check_pairs(should_refuse, refused, "guardrail_scores")
    absent = [r for s, r in zip(should_refuse, refused) if s]
    present = [r for s, r in zip(should_refuse, refused) if not s]
    out = {"accuracy": sum(bool(s) == bool(r) for s, r in zip(should_refuse, refused)) / n}
    if absent:
        out["refusal_accuracy"] = sum(map(bool, absent)) / len(absent)
    if present:
        out["non_refusal_accuracy"] = sum(not r for r in present) / len(present)
    return out
