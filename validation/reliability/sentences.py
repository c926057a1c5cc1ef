"""Report sentences and the yes/no questions that probe them (the sentence-level reliability index).

* :func:`split_sentences`: a report's sentences. Section headers at the start of a line
  ("Findings:", "Impression:", "Final report:") are dropped; sentences end at ``.``, ``!`` or ``?``
  followed by white space, at a line break, and at ``;`` (impressions list one finding per clause).
  Periods inside numbers ("1.0 mm") do not split.
* :func:`sentence_findings`: what the rule-based labeler (:func:`validation.report_labeler.label_report`)
  reads in one sentence: every observation it labels (``No Finding`` aside) with its label
  (1 positive, 0 negative, -1 uncertain), the words that mention it ("pleural effusion"), and, when
  the sentence names them, the place ("in the left lung") and the severity ("moderate").
* :class:`RuleQuestionWriter`: yes/no questions per sentence, in this order: one **presence**
  question per finding ("Is there a nodule in this image?"), one **location** question per finding
  with a place ("Is there a nodule in the left lung?"), one **severity** question per positive
  finding with a severity ("Is the nodule moderate?"), then paraphrases of the presence and location
  questions until ``max_questions`` (a finding has at least four paraphrases, so a sentence with a
  finding always gets at least five questions). The wording follows the curated closed VQA questions
  (``model.data.synth``), so a model trained on them understands it. The expected answer is "yes"
  for a positive or uncertain finding (the sentence asserts it, or its possibility) and "no" for a
  negated one; severity is asked only of positive findings.
* :class:`QuestionWriter`: the protocol any writer follows, e.g. :class:`PromptedQuestionWriter`
  (an LLM prompted to write ``Q: ... A: yes|no`` lines; the LLM is any ``str -> str`` callable).

A sentence the labeler reads no observation in gets no question (it cannot be probed or scored).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from validation.report_labeler import DEFAULT_VOCABULARY, Vocabulary, label_report

__all__ = [
    "PROMPT",
    "PromptedQuestionWriter",
    "Question",
    "QuestionWriter",
    "RuleQuestionWriter",
    "SentenceFinding",
    "sentence_findings",
    "split_sentences",
]

_HEADER = re.compile(
    r"^\s*(?:findings|impression|conclusions?|report|final report)\s*:\s*", re.IGNORECASE | re.MULTILINE
)
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+|;")
_SEVERITY = re.compile(r"\b(mild|moderate|severe|small|large|trace|minimal|marked)\b")
_PLACE = re.compile(
    r"\b(?:in|of|at|within|involving) the ([a-z][a-z ]*?)"
    r"(?=\s*(?:[,.;:()]|$)|\s+(?:measuring|with|has|have|had|is|are|was|were|and|or|which|that|since|on)\b)"
)
#: Findings named without an article ("Is there pleural effusion ...?"), as in the curated questions.
_MASS_NOUNS = frozenset(
    {
        "pleural effusion", "effusion", "pleural fluid", "edema", "oedema", "pulmonary edema", "hemorrhage",
        "haemorrhage", "consolidation", "pneumothorax", "cardiomegaly", "necrosis", "lymphocytic infiltrate",
        "bleeding", "drusen", "exudate", "atelectasis", "pneumonia", "volume loss", "opacification",
    }
)  # fmt: skip


def split_sentences(report: str) -> list[str]:
    """The sentences (and ``;`` clauses) of a report, headers dropped, stripped, empties removed.

    Raises:
        TypeError: ``report`` is not a string.

    Example:
        >>> split_sentences("Findings: A nodule. No effusion.\\nImpression: Nodule; small effusion.")
        ['A nodule.', 'No effusion.', 'Nodule', 'small effusion.']
    """
    if not isinstance(report, str):
        raise TypeError(f"split_sentences needs a string, got {type(report).__name__}")
    parts = _SPLIT.split(_HEADER.sub("", report))
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class SentenceFinding:
    """One observation the labeler reads in a sentence.

    Attributes:
        observation: the vocabulary name ("Lung Lesion", "Pleural Effusion").
        label: 1 positive, 0 negative, -1 uncertain.
        phrase: the words of the sentence that mention it ("nodule").
        place: the place named after it ("left lung"), or None.
        severity: the severity word in the sentence ("moderate"), or None.
    """

    observation: str
    label: int
    phrase: str
    place: str | None = None
    severity: str | None = None


def _mention(text: str, phrases: tuple[str, ...]) -> re.Match | None:
    pats = sorted(phrases, key=len, reverse=True)
    return re.search(r"\b(?:" + "|".join(pats) + r")\b", text) if pats else None


def sentence_findings(sentence: str, *, vocabulary: Vocabulary | None = None) -> list[SentenceFinding]:
    """The observations the labeler reads in ``sentence`` (vocabulary order), with phrase, place, severity.

    Example:
        >>> sentence_findings("There is a moderate nodule in the left lung, measuring 53 mm.")[0]
        SentenceFinding(observation='Lung Lesion', label=1, phrase='nodule', place='left lung', severity='moderate')
    """
    vocab = vocabulary or DEFAULT_VOCABULARY
    labels = label_report(sentence, vocabulary=vocab)
    text = sentence.lower()
    severity = _SEVERITY.search(text)
    out = []
    for obs in vocab.observations:
        label = labels.get(obs.name)
        if label is None or obs.name == "No Finding":
            continue
        m = _mention(text, obs.phrases)
        phrase = m.group(0) if m else obs.name.lower()  # a negative phrase ("heart is normal"): the name
        place = _PLACE.search(text, m.end()) if m else None
        out.append(
            SentenceFinding(
                observation=obs.name,
                label=int(label),
                phrase=phrase,
                place=place.group(1).strip() if place else None,
                severity=severity.group(1) if severity and label == 1 else None,
            )
        )
    return out


@dataclass(frozen=True)
class Question:
    """A yes/no question about one sentence.

    Attributes:
        text: the question.
        expected: the answer that agrees with the sentence ("yes" or "no").
        kind: "presence", "location", "severity", "paraphrase" (rule writer) or "llm".
        observation: the vocabulary name of the finding asked about.
    """

    text: str
    expected: str
    kind: str
    observation: str

    def __post_init__(self) -> None:
        if self.expected not in ("yes", "no"):
            raise ValueError(
                f"question {self.text!r}: expected answer must be 'yes' or 'no', got {self.expected!r}"
            )


@runtime_checkable
class QuestionWriter(Protocol):
    """Writes up to ``max_questions`` yes/no questions probing one report sentence."""

    def write(self, sentence: str, *, max_questions: int) -> list[Question]:
        """The questions, most informative first (callers take prefixes)."""
        ...


def _plural(phrase: str) -> bool:
    return phrase.endswith("s") and not phrase.endswith(("ss", "us", "is", "x")) and phrase not in _MASS_NOUNS


def _there(phrase: str) -> str:
    """'Is there a nodule' / 'Is there an exudate'... / 'Are there nodules' / 'Is there pleural effusion'."""
    if _plural(phrase):
        return f"Are there {phrase}"
    if phrase in _MASS_NOUNS:
        return f"Is there {phrase}"
    return f"Is there {'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _article(phrase: str) -> str:
    if _plural(phrase) or phrase in _MASS_NOUNS:
        return phrase
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _paraphrases(f: SentenceFinding, expected: str) -> list[Question]:
    a = _article(f.phrase)
    texts = [f"Does this image show {a}?", f"Can {a} be seen in the image?"]
    if f.place:
        texts.append(f"Does the {f.place} contain {a}?")
    texts += [f"Is {a} present in this image?", f"Is {a} visible in this image?"]
    return [Question(t, expected, "paraphrase", f.observation) for t in texts]


class RuleQuestionWriter:
    """Rule-based yes/no questions from the labeler's reading of a sentence (order in the module docstring).

    Args:
        vocabulary: the labeler vocabulary (default :data:`~validation.report_labeler.DEFAULT_VOCABULARY`).
    """

    def __init__(self, vocabulary: Vocabulary | None = None) -> None:
        self.vocabulary = vocabulary or DEFAULT_VOCABULARY

    def write(self, sentence: str, *, max_questions: int) -> list[Question]:
        """Up to ``max_questions`` questions (none when the sentence has no labelled finding).

        Raises:
            ValueError: ``max_questions < 1``.
        """
        if max_questions < 1:
            raise ValueError(f"max_questions must be >= 1, got {max_questions}")
        findings = sentence_findings(sentence, vocabulary=self.vocabulary)
        exp = {f.observation: "no" if f.label == 0 else "yes" for f in findings}
        presence = [
            Question(f"{_there(f.phrase)} in this image?", exp[f.observation], "presence", f.observation)
            for f in findings
        ]
        location = [
            Question(f"{_there(f.phrase)} in the {f.place}?", exp[f.observation], "location", f.observation)
            for f in findings
            if f.place
        ]
        severity = [
            Question(f"{'Are' if _plural(f.phrase) else 'Is'} the {f.phrase} {f.severity}?", "yes", "severity",
                     f.observation)
            for f in findings
            if f.severity
        ]  # fmt: skip
        per_finding = [_paraphrases(f, exp[f.observation]) for f in findings]
        paraphrases = [
            p[i] for i in range(max(map(len, per_finding), default=0)) for p in per_finding if i < len(p)
        ]
        return (presence + location + severity + paraphrases)[:max_questions]


_LINE = re.compile(
    r"^\s*(?:\d+[.)]\s*)?Q:\s*(?P<q>.+?\?)\s*A:\s*(?P<a>yes|no)\b", re.IGNORECASE | re.MULTILINE
)
#: Default prompt of :class:`PromptedQuestionWriter` (``{n}``: number of questions, ``{sentence}``).
PROMPT = (
    "Write {n} yes/no questions that check the following sentence of a radiology report against the "
    "image: whether its finding is present, where it is, and how severe it is. One per line, as "
    "'Q: <question>? A: <yes|no>', where the answer is the one the sentence implies.\nSentence: {sentence}"
)


class PromptedQuestionWriter:
    """Questions written by a language model prompted with :data:`PROMPT` (``Q: ...? A: yes|no`` lines).

    Args:
        generate: any ``prompt -> text`` callable (a local LLM, a served endpoint's client).
        prompt: the template (``{n}`` and ``{sentence}`` are filled in).

    Lines that do not parse are ignored; :meth:`write` raises when none parses.
    """

    def __init__(self, generate: Callable[[str], str], *, prompt: str = PROMPT) -> None:
        self.generate = generate
        self.prompt = prompt

    def write(self, sentence: str, *, max_questions: int) -> list[Question]:
        """Up to ``max_questions`` parsed questions (``kind="llm"``, ``observation=""``).

        Raises:
            ValueError: ``max_questions < 1``, or the model's text holds no parsable question.
        """
        if max_questions < 1:
            raise ValueError(f"max_questions must be >= 1, got {max_questions}")
        text = self.generate(self.prompt.format(n=max_questions, sentence=sentence))
        qs = [Question(m["q"].strip(), m["a"].lower(), "llm", "") for m in _LINE.finditer(text)]
        if not qs:
            raise ValueError(
                f"question writer output has no 'Q: ...? A: yes|no' line for {sentence!r}: {text[:200]!r}"
            )
        return qs[:max_questions]
