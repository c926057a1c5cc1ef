"""InternVL grounding format: ``<ref>name</ref><box>[[x1, y1, x2, y2], ...]</box>``.

Coordinates in text are integers normalised to ``0..scale`` (InternVL uses 1000); pixel boxes are
converted with the image size. The parser accepts several boxes per reference and several
references per text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BoxFormatError", "TextBox", "format_boxes", "format_ref_boxes", "parse_boxes", "to_normalised", "to_pixels"]

_REF_BOX = re.compile(r"(?:<ref>(?P<name>.*?)</ref>)?\s*<box>(?P<body>.*?)</box>", re.DOTALL)
_ONE = re.compile(r"\[\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\]")


class BoxFormatError(ValueError):
    """A ``<box>`` in text is malformed or out of range."""


@dataclass(frozen=True)
class TextBox:
    """A box parsed from text: its reference name (or None) and normalised integer coordinates."""

    name: str | None
    x1: int
    y1: int
    x2: int
    y2: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)


def to_normalised(
    box: Sequence[float], width: int, height: int, scale: int = 1000
) -> tuple[int, int, int, int]:
    """Pixel box -> integer box on ``0..scale`` (rounded, clipped, kept non-empty)."""
    x1, y1, x2, y2 = box
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    nx1 = min(max(round(x1 / width * scale), 0), scale - 1)
    ny1 = min(max(round(y1 / height * scale), 0), scale - 1)
    nx2 = min(max(round(x2 / width * scale), nx1 + 1), scale)
    ny2 = min(max(round(y2 / height * scale), ny1 + 1), scale)
    return nx1, ny1, nx2, ny2


def to_pixels(box: Sequence[int], width: int, height: int, scale: int = 1000) -> tuple[float, float, float, float]:
    """Normalised box -> pixel box."""
    x1, y1, x2, y2 = box
    return (x1 * width / scale, y1 * height / scale, x2 * width / scale, y2 * height / scale)


def format_boxes(boxes: Sequence[Sequence[int]]) -> str:
    """``<box>[[x1, y1, x2, y2], ...]</box>`` for already-normalised integer boxes."""
    if not boxes:
        raise ValueError("format_boxes needs at least one box")
    inner = ", ".join(f"[{b[0]}, {b[1]}, {b[2]}, {b[3]}]" for b in boxes)
    return f"<box>[{inner}]</box>"


def format_ref_boxes(name: str, boxes: Sequence[Sequence[int]]) -> str:
    """``<ref>name</ref><box>[[...], ...]</box>`` for already-normalised integer boxes."""
    return f"<ref>{name}</ref>{format_boxes(boxes)}"


def parse_boxes(text: str, scale: int = 1000, *, strict: bool = True) -> list[TextBox]:
    """All boxes in ``text``, in order, each tagged with the preceding ``<ref>`` name if any.

    Args:
        text: model output or instruction text.
        scale: the normalisation scale; coordinates must lie in ``0..scale``.
        strict: raise :class:`BoxFormatError` on a malformed or impossible box; when False,
            such boxes are skipped (use for scoring free-form model output).
    """
    out: list[TextBox] = []
    for m in _REF_BOX.finditer(text):
        body = m.group("body")
        coords = _ONE.findall(body)
        if not coords:
            if strict:
                raise BoxFormatError(f"malformed <box> content {body!r}")
            continue
        for c in coords:
            x1, y1, x2, y2 = (int(v) for v in c)
            ok = 0 <= x1 < x2 <= scale and 0 <= y1 < y2 <= scale
            if not ok:
                if strict:
                    raise BoxFormatError(
                        f"box [{x1}, {y1}, {x2}, {y2}] is impossible or outside 0..{scale}"
                    )
                continue
            name = m.group("name")
            out.append(TextBox(name.strip() if name else None, x1, y1, x2, y2))
    return out
