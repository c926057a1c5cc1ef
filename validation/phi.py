"""PHI-like text patterns for the ``phi_free`` data-quality check.

Instruction prompts and answers must not carry protected health information. The patterns below
flag the three PHI families a generated or imported corpus is most likely to leak (HIPAA Safe
Harbor identifiers, 45 CFR 164.514(b)(2)): personal names, record numbers and other long
identifiers, and calendar dates. They are Python regular expressions that Great Expectations
applies with ``pandas.Series.str.contains`` (``re.search`` semantics), one expectation per family.

The patterns are tuned against clinical text so that false positives stay low: TNM stages
(``T2N1M0``), durations (``14 months``), roman stages (``stage IV``), blood pressure (``120/80``)
and InternVL box coordinates (``[[120, 340, 560, 780]]``) do not match; ``tests/unit/validation``
holds both lists.

Example:
    >>> find_phi("Seen by Dr. Hale on 2023-04-01.")
    [('name', 'Dr. Hale'), ('date', '2023-04-01')]
"""

from __future__ import annotations

import re

__all__ = ["PHI_PATTERNS", "find_phi", "mask"]

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MON_NUM = r"(?:0?[1-9]|1[0-2])"
_YEAR4 = r"(?:19|20)\d{2}"
# A capitalised word that is not a sentence fragment such as "The" (two letters at least).
_CAP = r"[A-Z][a-z]+"

#: PHI family -> regular expressions. Case-insensitive parts use scoped ``(?i:...)`` groups so
#: that capitalisation still separates names ("Ms Hale") from abbreviations ("MS lesions").
PHI_PATTERNS: dict[str, tuple[str, ...]] = {
    "name": (
        # Title + surname: "Mr. Smith", "Mrs Jones", "Dr. O'Neil".
        rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+{_CAP}(?:['-]{_CAP})?\b",
        # An explicit name field: "Patient name: ...", "Pt name = ...". A question such as "what is
        # the patient's name?" (guardrail prompts) has no field separator and does not match.
        r"\b(?i:patient|pt)(?:'s)?\s+(?i:name)\s*[:=]",
        # A capitalised first/last name pair after "patient"/"name": "patient John Smith",
        # "Name: Jane Doe", "the patient is Mary Brown".
        rf"\b(?i:patient|name)\b\s*[:,-]?\s*(?:(?i:is|called|named)\s+)?{_CAP}\s+{_CAP}\b",
    ),
    "identifier": (
        # MRN / medical record number followed by a number: "MRN 0012345", "MRN: AB12345".
        r"(?i:\bMRN\b|\bmedical\s+record\s+(?:number|no\b\.?|#))\s*[:#.-]?\s*[A-Z]{0,3}\d{3,}",
        # Any run of seven or more digits (record, account, phone numbers without separators).
        r"(?<!\d)\d{7,}(?!\d)",
        # US social-security and phone-number layouts.
        r"\b\d{3}-\d{2}-\d{4}\b",
        r"\b\d{3}[-.]\d{3}[-.]\d{4}\b",
    ),
    "date": (
        # ISO: 2023-04-01, 2023/04/01.
        rf"\b{_YEAR4}[-/]{_MON_NUM}[-/]{_DAY}\b",
        # Numeric day/month/year: 04/01/2023, 4/1/23, 01-04-2023.
        rf"\b{_DAY}/{_DAY}/(?:{_YEAR4}|\d{{2}})\b",
        rf"\b{_DAY}[-.]{_DAY}[-.]{_YEAR4}\b",
        # Spelled month: "1 April 2023", "1st Apr. 2023", "April 1, 2023", "April 2023".
        rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+{_YEAR4}\b",
        rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+{_YEAR4}\b",
        rf"\b{_MONTH}\.?\s+{_YEAR4}\b",
    ),
}

_COMPILED = {family: tuple(re.compile(p) for p in pats) for family, pats in PHI_PATTERNS.items()}


def find_phi(text: str) -> list[tuple[str, str]]:
    """Every PHI-like match in ``text`` as ``(family, matched text)``, in pattern order.

    Args:
        text: a prompt or an answer.

    Returns:
        The matches; an empty list means the text looks PHI-free.
    """
    out: list[tuple[str, str]] = []
    for family, patterns in _COMPILED.items():
        for pattern in patterns:
            out.extend((family, m.group(0)) for m in pattern.finditer(text))
    return out


def mask(text: str) -> str:
    """``text`` with letters replaced by ``X``/``x`` and digits by ``#``: the shape of a PHI match
    for a failure report, without its content (``mask("Dr. Hale") == "Xx. Xxxx"``)."""
    return re.sub(r"[A-Za-z0-9]", lambda m: "#" if m[0].isdigit() else "X" if m[0].isupper() else "x", text)
