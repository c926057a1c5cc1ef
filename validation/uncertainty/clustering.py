"""Greedy bidirectional-equivalence clustering of sampled answers (Farquhar et al., Nature 2024).

Answers are visited in order; an answer joins the first existing cluster whose **first member**
(its representative) is equivalent to it in **both directions** (``equivalent(a, rep)`` and
``equivalent(rep, a)``), else it opens a new cluster. Cluster ids are 0, 1, 2, ... in order of first
appearance. As in the reference code (github.com/jlko/semantic_uncertainty, ``get_semantic_ids``)
answers are compared with cluster representatives, not with every member; with a non-transitive
back-end the first matching cluster wins here, so the result never depends on later answers.

``equivalent`` is any callable ``(a, b) -> bool`` read as "a entails / means b"
(:mod:`validation.uncertainty.equivalence` has the back-ends); a symmetric one is simply asked twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Equivalence", "semantic_clusters"]


class Equivalence(Protocol):
    """A directional equivalence test: does answer ``a`` entail (mean at least) answer ``b``?"""

    def __call__(self, a: str, b: str) -> bool:
        """True when ``a`` entails ``b``."""
        ...


def semantic_clusters(
    answers: Sequence[str], equivalent: Equivalence | Callable[[str, str], bool]
) -> list[int]:
    """Cluster id of each answer by greedy bidirectional equivalence.

    Args:
        answers: the M sampled answers.
        equivalent: directional equivalence test (called with both argument orders).

    Returns:
        One cluster id per answer, numbered from 0 in order of first appearance.

    Raises:
        TypeError: an answer is not a string.

    Example:
        >>> semantic_clusters(["Yes.", "yes", "No", "no."], lambda a, b: a.lower().strip(".") == b.lower().strip("."))
        [0, 0, 1, 1]
    """
    reps: list[str] = []
    ids: list[int] = []
    for i, a in enumerate(answers):
        if not isinstance(a, str):
            raise TypeError(f"answer {i} is {type(a).__name__}, not a string")
        for cid, rep in enumerate(reps):
            if equivalent(a, rep) and equivalent(rep, a):
                ids.append(cid)
                break
        else:
            reps.append(a)
            ids.append(len(reps) - 1)
    return ids
