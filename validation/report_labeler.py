"""A rule-based CheXpert-style report labeler and the report F1 scores built on it (our own code).

It follows the CheXpert labeler's three phases (Irvin et al., AAAI 2019, arXiv:1901.07031;
https://github.com/stanfordmlgroup/chexpert-labeler) with regular expressions instead of a
dependency parse:

1. **Mention extraction.** Each :class:`Observation` lists mention phrases (lower-case regular
   expressions matched at word boundaries). A phrase inside a longer phrase of another
   observation is dropped ("basal cell carcinoma" is not also "carcinoma", "lymphocytic
   infiltrate" not "infiltrate"). ``requires`` / ``excludes`` anatomy words, looked up in the
   mention's context (its clause, cut at the neighbouring mentions), keep one word for several
   organs apart: "mass in the liver" is an Abdominal Mass, not a Lung Lesion. ``negative_phrases``
   state the absence outright ("cardiac silhouette is normal" -> Cardiomegaly 0).
2. **Classification of each mention**, CheXpert's order: a *pre-negation uncertainty* cue in scope
   ("cannot be excluded", "not ruled out") -> uncertain (-1); else a *negation* cue in scope ("no",
   "without", "negative for", "free of", "ruled out", "resolved", "is not seen") -> negative (0);
   else an *uncertainty* cue in scope ("may", "possible", "likely", "suspicious for", "cannot
   exclude") -> uncertain (-1); else positive (1). A cue's scope: the same clause (cut at ``;``,
   ``:``, "but", "however", "although", "except", "there is/are", ...), up to the next cue, within
   the cue's word window: forward (``pre``) for "no effusion", backward (``post``) for "effusion
   is not seen", where a backward cue reaches the nearest mention and the mentions listed with it
   ("nodule and effusion are not seen"). Pseudo-cues ("no change", "no increase") only block.
3. **Aggregation** per observation over all its mentions: positive > uncertain > negative (a
   positive mention anywhere wins over negation elsewhere); no mention -> None. ``No Finding`` is
   1 when the report has text and no other observation (Support Devices aside) is 1 or -1, else
   None (CheXpert's rule, applied to every observation of the vocabulary including the extras).

Vocabulary: the 14 CheXpert observations (:data:`CHEXPERT_OBSERVATIONS`) plus the demo corpus'
lesion types of every modality (``model.data.synth.MODALITY_SPECS``): chest types map onto CheXpert
(nodule, mass -> Lung Lesion; effusion -> Pleural Effusion; consolidation, pneumothorax,
cardiomegaly), the others are extra observations (Glioma, Hemorrhage, Cerebral Edema, Exudate,
Drusen, ..., Abdominal Mass). :attr:`Observation.corpus_types` records the mapping; extend with
``DEFAULT_VOCABULARY.extend(Observation(...))``. Sentences without anatomy context fall back to
the chest reading ("No edema is seen." -> Edema 0): this is a chest labeler that also knows the
other modalities' findings.

Scores: :func:`report_f1` (one report pair) and :func:`chexpert_f1` (corpus micro / macro F1 on
positive labels, CheXpert's uncertain-as-positive "U-ones" convention by default). A score that
cannot be computed raises :class:`MetricUndefinedError`. :func:`extract_step5` reads the final
report of a 5-step reasoning answer (:mod:`model.reasoning`).

Example:
    >>> labels = label_report("Small left pleural effusion. No pneumothorax. Possible atelectasis.")
    >>> labels["Pleural Effusion"], labels["Pneumothorax"], labels["Atelectasis"], labels["Edema"]
    (1, 0, -1, None)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from model.reasoning import ReasoningFormatError, step5_report

__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "COMPETITION_OBSERVATIONS",
    "DEFAULT_CUES",
    "DEFAULT_VOCABULARY",
    "Cue",
    "MetricUndefinedError",
    "Observation",
    "ReasoningFormatError",
    "Vocabulary",
    "chexpert_f1",
    "extract_step5",
    "extract_step5_or_none",
    "label_report",
    "report_f1",
    "score_reasoning_output",
]

Labels = Mapping[str, "int | None"]

#: The 14 CheXpert observations, in CheXpert's column order.
CHEXPERT_OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: The 5 CheXpert competition observations.
COMPETITION_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)
_LABELS = (1, 0, -1, None)


class MetricUndefinedError(ValueError):
    """A score cannot be computed (no positive label anywhere, no report); never replaced by a number."""


# ---------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One labelled observation.

    Attributes:
        name: the label name (a CheXpert column or an extra observation).
        phrases: mention regexes (lower case, matched at word boundaries).
        negative_phrases: regexes stating the observation's absence (label 0 whatever the cues).
        requires: context regexes; when given, a mention counts only if one occurs in its context.
        excludes: context regexes; a mention does not count if one occurs in its context.
        corpus_types: demo-corpus lesion types (``model.data.synth``) reported as this observation.
    """

    name: str
    phrases: tuple[str, ...]
    negative_phrases: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    corpus_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cue:
    """A negation / uncertainty cue: regex, kind and word windows.

    ``kind`` is ``negation``, ``uncertain``, ``pre_negation_uncertain`` or ``pseudo`` (blocks other
    cues, labels nothing). ``pre`` / ``post``: most words between the cue and a mention after / before
    it (0: that direction is off). Alternatives inside one pattern are tried left to right: list the
    longer ones first ("no evidence of|no").
    """

    pattern: str
    kind: str
    pre: int
    post: int


_BRAIN = (
    r"brain",
    r"cerebr\w*",
    r"cerebell\w*",
    r"frontal",
    r"temporal",
    r"occipital",
    r"parietal",
    r"intracranial",
    r"periventricular",
    r"white matter",
)
_ABDOMEN = (
    r"liver",
    r"hepatic",
    r"kidneys?",
    r"renal",
    r"gallbladder",
    r"pancrea\w*",
    r"spleen",
    r"splenic",
    r"adrenal",
    r"abdomen",
    r"abdominal",
    r"bowel",
    r"colon\w*",
)
_SKIN = (r"skin", r"cutaneous", r"dermal")
_SEVERITY = r"(?:mildly |moderately |severely |markedly |slightly )?"
_HEART = r"(?:heart size|heart|cardiac silhouette|cardiac size)"
_MEDIASTINUM = (
    r"(?:mediastinum|mediastinal contours?|mediastinal silhouette|cardiomediastinal (?:silhouette|contours?))"
)

_CHEXPERT = (
    Observation("No Finding", ()),
    Observation(
        "Enlarged Cardiomediastinum",
        (
            r"enlarged cardiomediastin\w*",
            r"widened mediastinum",
            r"mediastinal (?:widening|enlargement)",
            r"widening of the mediastinum",
            rf"{_MEDIASTINUM} (?:is|are) {_SEVERITY}(?:widened|enlarged)",
            r"enlarged (?:mediastinum|cardiomediastinal silhouette)",
            r"cardiomediastinal enlargement",
        ),
        negative_phrases=(
            rf"{_MEDIASTINUM} (?:is|are|appears?) (?:normal|unremarkable|within normal limits)",
            rf"(?:normal|unremarkable) {_MEDIASTINUM}",
        ),
    ),
    Observation(
        "Cardiomegaly",
        (
            r"cardiomegaly",
            r"cardiac enlargement",
            r"enlarged (?:heart|cardiac silhouette)",
            rf"{_HEART} (?:is|appears) {_SEVERITY}(?:enlarged|increased)",
            r"enlargement of the cardiac silhouette",
        ),
        negative_phrases=(
            rf"{_HEART} (?:is|appears|remains) (?:normal|within normal limits|unremarkable|not enlarged)",
            rf"normal {_HEART}",
        ),
        corpus_types=("cardiomegaly",),
    ),
    Observation(
        "Lung Opacity",
        (
            r"opacit(?:y|ies)",
            r"opacification",
            r"opacified",
            r"air-?space (?:disease|opacit(?:y|ies))",
            r"infiltrates?",
            r"infiltration",
            r"densit(?:y|ies)",
        ),
    ),
    Observation(
        "Lung Lesion",
        (r"nodules?", r"nodular", r"mass(?:es)?", r"lesions?", r"tumou?rs?", r"neoplasms?"),
        excludes=(*_ABDOMEN, *_BRAIN, *_SKIN),
        corpus_types=("nodule", "mass"),
    ),
    Observation(
        "Edema",
        (r"o?edema", r"pulmonary (?:vascular )?congestion", r"vascular congestion", r"fluid overload"),
        excludes=_BRAIN,
    ),
    Observation("Consolidation", (r"consolidations?", r"consolidative"), corpus_types=("consolidation",)),
    Observation("Pneumonia", (r"pneumonias?", r"bronchopneumonia", r"pneumonitis", r"infectious process")),
    Observation(
        "Atelectasis",
        (
            r"atelecta(?:sis|ses|tic)",
            r"(?:lung|lobar|lobe) collapse",
            r"collapsed? (?:lung|lobe)",
            r"volume loss",
        ),
    ),
    Observation("Pneumothorax", (r"pneumothora(?:x|ces)",), corpus_types=("pneumothorax",)),
    Observation(
        "Pleural Effusion",
        (r"(?:pleural )?effusions?", r"pleural fluid", r"hydrothorax", r"fluid in the pleural space"),
        corpus_types=("effusion",),
    ),
    Observation(
        "Pleural Other", (r"pleural (?:thickening|scarring|plaques?|calcifications?)", r"fibrothorax")
    ),
    Observation("Fracture", (r"fractures?", r"fractured", r"broken ribs?")),
    Observation(
        "Support Devices",
        (
            r"(?:endotracheal|et|nasogastric|ng|chest|feeding|tracheostomy|enteric) tubes?",
            r"catheters?",
            r"central (?:venous )?line",
            r"picc(?: line)?",
            r"pacemaker",
            r"pacer",
            r"defibrillator",
            r"sternotomy wires",
            r"surgical clips",
            r"support devices?",
            r"stents?",
        ),
    ),
)
_EXTRAS = (
    Observation("Glioma", (r"gliomas?", r"glioblastomas?", r"astrocytomas?"), corpus_types=("glioma",)),
    Observation("Hemorrhage", (r"ha?emorrhages?", r"ha?emorrhagic"), corpus_types=("hemorrhage",)),
    Observation("Cerebral Edema", (r"o?edema",), requires=_BRAIN, corpus_types=("edema",)),
    Observation("Exudate", (r"exudates?",), corpus_types=("exudate",)),
    Observation("Drusen", (r"drusen",), corpus_types=("drusen",)),
    Observation("Cotton Wool Spot", (r"cotton[- ]wool spots?",), corpus_types=("cotton wool spot",)),
    Observation("Carcinoma", (r"carcinomas?", r"adenocarcinomas?"), corpus_types=("carcinoma",)),
    Observation("Necrosis", (r"necrosis", r"necrotic"), corpus_types=("necrosis",)),
    Observation(
        "Lymphocytic Infiltrate",
        (r"lymphocytic infiltra(?:tes?|tion)",),
        corpus_types=("lymphocytic infiltrate",),
    ),
    Observation("Melanoma", (r"melanomas?",), corpus_types=("melanoma",)),
    Observation("Nevus", (r"n(?:ae|e)v(?:us|i)",), corpus_types=("nevus",)),
    Observation(
        "Seborrheic Keratosis", (r"seborrh?o?eic keratos[ie]s",), corpus_types=("seborrheic keratosis",)
    ),
    Observation("Basal Cell Carcinoma", (r"basal cell carcinomas?",), corpus_types=("basal cell carcinoma",)),
    Observation("Cyst", (r"cysts?", r"cystic lesions?"), corpus_types=("cyst",)),
    Observation(
        "Abdominal Mass",
        (r"mass(?:es)?", r"lesions?", r"tumou?rs?"),
        requires=_ABDOMEN,
        corpus_types=("mass",),
    ),
    Observation(
        "Stone",
        (r"stones?", r"calcul(?:us|i)", r"gallstones?", r"(?:nephro|chole)lithiasis"),
        corpus_types=("stone",),
    ),
    Observation("Polyp", (r"polyps?", r"polypoid"), corpus_types=("polyp",)),
    Observation("Ulcer", (r"ulcers?", r"ulceration"), corpus_types=("ulcer",)),
    Observation("Bleeding", (r"bleeding", r"active bleed"), corpus_types=("bleeding",)),
)

#: Cues, CheXpert-style (see the module docstring for scope and precedence).
DEFAULT_CUES: tuple[Cue, ...] = (
    Cue(
        r"no evidence of|no signs? of|without(?: evidence of)?|negative for|free of|absence of|"
        r"resolution of|clear of|no",
        "negation",
        pre=8,
        post=0,
    ),
    Cue(r"not|never", "negation", pre=4, post=0),
    Cue(r"(?:has |have |had )?(?:been )?(?:resolved|ruled out)", "negation", pre=3, post=5),
    Cue(
        r"(?:is |are |was |were )?not (?:seen|identified|visuali[sz]ed|present|demonstrated|appreciated|"
        r"evident)|"
        r"(?:is |are )?absent|(?:has |have )?disappeared|(?:has |have )been excluded|is excluded|"
        r"(?:has |have |had )been removed|(?:was|were) removed|"
        r"no longer (?:seen|visible|present|identified|evident)",
        "negation",
        pre=0,
        post=5,
    ),
    Cue(
        r"cannot exclude|can ?not exclude|cannot rule out|can ?not rule out|not exclude",
        "pre_negation_uncertain",
        pre=6,
        post=0,
    ),
    Cue(
        r"(?:cannot|can ?not|could not|may not) be (?:excluded|ruled out)|"
        r"(?:is |are )?not (?:excluded|ruled out)",
        "pre_negation_uncertain",
        pre=0,
        post=5,
    ),
    Cue(
        r"may (?:represent|reflect|indicate)|could represent|suspicious for|suspicion for|concerning for|"
        r"worrisome for|suggestive of|suggests?|suggesting|differential (?:diagnosis )?(?:includes?|of)|"
        r"rule out|question of",
        "uncertain",
        pre=6,
        post=0,
    ),
    Cue(
        r"possible|possibly|probable|probably|likely|questionable|suspected|presumed|equivocal|borderline|"
        r"may|might|could",
        "uncertain",
        pre=6,
        post=4,
    ),
    Cue(
        r"no (?:significant |interval )?(?:change|increase|decrease)|"
        r"without (?:significant |interval )?change|"
        r"not only",
        "pseudo",
        pre=0,
        post=0,
    ),
)
_CUE_KINDS = ("negation", "uncertain", "pre_negation_uncertain", "pseudo")
_CLAUSE_BREAK = re.compile(
    r";|:|\b(?:but|however|although|though|except|whereas|while|yet|apart from|aside from|"
    r"there (?:is|are|was|were|has been|have been))\b"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+")
#: Words allowed between two mentions of one list ("nodule, small effusion and edema are not seen").
_LIST_WORDS = frozenset(
    {"and", "or", "nor", "a", "an", "left", "right", "bilateral", "small", "large", "mild", "moderate"}
    | {"severe", "trace", "tiny", "minimal", "focal", "new"}
)


def _rx(patterns: Iterable[str], where: str) -> re.Pattern | None:
    pats = sorted(patterns, key=len, reverse=True)  # longest first: alternation is first-match
    if not pats:
        return None
    try:
        return re.compile(r"\b(?:" + "|".join(pats) + r")\b")
    except re.error as e:
        raise ValueError(f"{where}: bad regular expression in {pats}: {e}") from e


class _Compiled(NamedTuple):
    name: str
    mentions: re.Pattern | None
    negatives: re.Pattern | None
    requires: re.Pattern | None
    excludes: re.Pattern | None


class Vocabulary:
    """Compiled observations and cues. Names are unique; ``No Finding`` is derived, not matched.

    Raises:
        ValueError: a duplicate name, an observation (other than No Finding) without phrases, a
            bad cue kind/window, or a regex that does not compile (the message names it).
    """

    def __init__(self, observations: Sequence[Observation], cues: Sequence[Cue] = DEFAULT_CUES) -> None:
        names = [o.name for o in observations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate observation name(s) {dup}")
        self.observations = tuple(observations)
        self.cues = tuple(cues)
        self._compiled: list[_Compiled] = []
        for o in self.observations:
            if o.name != "No Finding" and not o.phrases:
                raise ValueError(f"observation {o.name!r} needs at least one mention phrase")
            where = f"observation {o.name!r}"
            self._compiled.append(
                _Compiled(
                    o.name,
                    _rx(o.phrases, where),
                    _rx(o.negative_phrases, where),
                    _rx(o.requires, where),
                    _rx(o.excludes, where),
                )
            )
        for c in self.cues:
            if c.kind not in _CUE_KINDS or c.pre < 0 or c.post < 0:
                raise ValueError(f"cue {c.pattern!r}: kind must be one of {_CUE_KINDS}, windows >= 0")
        self._cues = [(c, _rx([c.pattern], f"cue {c.pattern!r}")) for c in self.cues]

    @property
    def names(self) -> tuple[str, ...]:
        """Every observation name, in vocabulary order."""
        return tuple(o.name for o in self.observations)

    def extend(self, *observations: Observation) -> Vocabulary:
        """A new vocabulary with ``observations`` appended (same cues)."""
        return Vocabulary([*self.observations, *observations], self.cues)


#: The 14 CheXpert observations followed by the demo corpus' other lesion types.
DEFAULT_VOCABULARY = Vocabulary([*_CHEXPERT, *_EXTRAS])


# ---------------------------------------------------------------------------------------------
# labelling
# ---------------------------------------------------------------------------------------------


class _Span(NamedTuple):
    start: int
    end: int
    name: str  # observation name (mentions) or cue kind (cues)
    fixed: int | None = None  # mentions: 0 for a negative phrase
    pre: int = 0
    post: int = 0


def _outermost(spans: list[_Span]) -> list[_Span]:
    """Drop spans strictly inside a longer span (equal spans of different names are all kept)."""
    return [
        s
        for s in spans
        if not any(o.start <= s.start and s.end <= o.end and o.end - o.start > s.end - s.start for o in spans)
    ]


class _Sentence:
    """One lower-case sentence: its clause breaks, mentions and cues."""

    def __init__(self, text: str, vocab: Vocabulary) -> None:
        self.text = text
        self.breaks = [(m.start(), m.end()) for m in _CLAUSE_BREAK.finditer(text)]
        self.mentions = self._mentions(vocab)
        self.spans = sorted({(m.start, m.end) for m in self.mentions})  # distinct mention spans
        raw = [
            _Span(m.start(), m.end(), c.kind, None, c.pre, c.post)
            for c, rx in vocab._cues
            for m in rx.finditer(text)
        ]
        self.cues = [
            c
            for c in _outermost(raw)
            if not any(m.start <= c.start and c.end <= m.end for m in self.mentions)
        ]

    def clause(self, pos: int) -> int:
        return sum(1 for _, b in self.breaks if b <= pos)

    def words(self, a: int, b: int) -> list[str]:
        return _WORD.findall(self.text[a:b])

    def _context(self, s: _Span, spans: list[tuple[int, int]]) -> str:
        """The mention's clause, cut at the neighbouring mentions."""
        lo = max(
            [b for a, b in self.breaks if b <= s.start] + [e for b, e in spans if e <= s.start], default=0
        )
        hi = min(
            [a for a, b in self.breaks if a >= s.end] + [b for b, e in spans if b >= s.end],
            default=len(self.text),
        )
        return self.text[lo:hi]

    def _mentions(self, vocab: Vocabulary) -> list[_Span]:
        raw = [
            _Span(m.start(), m.end(), c.name, fixed)
            for c in vocab._compiled
            for pattern, fixed in ((c.mentions, None), (c.negatives, 0))
            if pattern is not None
            for m in pattern.finditer(self.text)
        ]
        kept = sorted(_outermost(raw))
        spans = sorted({(s.start, s.end) for s in kept})
        by_name = {c.name: c for c in vocab._compiled}
        out = []
        for s in kept:
            req, exc = by_name[s.name].requires, by_name[s.name].excludes
            ctx = self._context(s, spans) if (req or exc) else ""
            if (req is None or req.search(ctx)) and (exc is None or not exc.search(ctx)):
                out.append(s)
        return out

    def in_scope(self, cue: _Span, m: _Span) -> bool:
        """Whether ``cue`` governs mention ``m`` (same clause, window, no cue in between, list chain)."""
        if self.clause(cue.start) != self.clause(m.start):
            return False
        if cue.end <= m.start:  # forward: "no effusion"
            return (
                cue.pre > 0
                and len(self.words(cue.end, m.start)) <= cue.pre
                and not any(cue.end <= c.start < m.start for c in self.cues)
            )
        if m.end > cue.start or cue.post == 0:
            return False
        # backward: "effusion is not seen" reaches the nearest mention and the mentions listed with it
        before = [s for s in self.spans if s[1] <= cue.start and self.clause(s[0]) == self.clause(cue.start)]
        if not before:
            return False
        nearest = before[-1]
        if len(self.words(nearest[1], cue.start)) > cue.post or any(
            nearest[1] <= c.start < cue.start for c in self.cues
        ):
            return False
        chain = [nearest]
        for s in reversed(before[:-1]):
            if not set(self.words(s[1], chain[-1][0])) <= _LIST_WORDS:
                break
            chain.append(s)
        return (m.start, m.end) in chain

    def labels(self) -> list[tuple[str, int]]:
        """``(observation, label)`` per mention: pre-negation uncertainty, negation, uncertainty, positive."""
        out = []
        for m in self.mentions:
            if m.fixed is not None:
                out.append((m.name, m.fixed))
                continue
            kinds = {c.name for c in self.cues if self.in_scope(c, m)}
            if "pre_negation_uncertain" in kinds:
                out.append((m.name, -1))
            elif "negation" in kinds:
                out.append((m.name, 0))
            else:
                out.append((m.name, -1 if "uncertain" in kinds else 1))
        return out


_RANK = {1: 3, -1: 2, 0: 1}  # aggregation: positive > uncertain > negative


def label_report(text: str, *, vocabulary: Vocabulary | None = None) -> dict[str, int | None]:
    """CheXpert-style labels of one free-text report.

    Args:
        text: the report (findings and/or impression; any case; sentences end with ``.!?`` or a
            newline).
        vocabulary: observations and cues (default :data:`DEFAULT_VOCABULARY`).

    Returns:
        Observation name -> 1 (positive), 0 (negative), -1 (uncertain) or None (not mentioned), for
        every observation of the vocabulary, in vocabulary order.

    Example:
        >>> label_report("No pneumothorax or pleural effusion. The heart is enlarged.")["Cardiomegaly"]
        1
    """
    vocab = vocabulary or DEFAULT_VOCABULARY
    if not isinstance(text, str):
        raise TypeError(f"label_report needs a string, got {type(text).__name__}")
    found: dict[str, int] = {}
    for raw in _SENTENCE.split(text.lower()):
        if raw.strip():
            for name, label in _Sentence(raw.strip(), vocab).labels():
                if name not in found or _RANK[label] > _RANK[found[name]]:
                    found[name] = label
    labels: dict[str, int | None] = {name: found.get(name) for name in vocab.names}
    if "No Finding" in labels:
        abnormal = any(v in (1, -1) for k, v in labels.items() if k not in ("No Finding", "Support Devices"))
        labels["No Finding"] = 1 if (_WORD.search(text.lower()) and not abnormal) else None
    return labels


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------


def _positives(labels: Labels, names: Sequence[str], uncertain_as_positive: bool, what: str) -> set[str]:
    out = set()
    for name in names:
        if name not in labels:
            raise ValueError(f"{what} has no label for observation {name!r}")
        v = labels[name]
        if v not in _LABELS:
            raise ValueError(f"{what}: label of {name!r} is {v!r}; allowed: 1, 0, -1, None")
        if v == 1 or (uncertain_as_positive and v == -1):
            out.add(name)
    return out


def report_f1(
    pred: Labels,
    ref: Labels,
    *,
    observations: Sequence[str] | None = None,
    uncertain_as_positive: bool = True,
) -> float:
    """F1 of the positive labels of one predicted report against its reference.

    ``F1 = 2 |P & R| / (|P| + |R|)`` with P, R the observations labelled positive (and uncertain,
    when ``uncertain_as_positive``) in the prediction and the reference. **Both empty -> 1.0**: the
    prediction agrees that nothing is positive (with the default vocabulary a non-empty report
    without findings has ``No Finding = 1``, so this case arises only for label subsets).

    Args:
        pred: labels of the generated report (:func:`label_report`).
        ref: labels of the reference report.
        observations: the labels scored; default every key (both dicts must have the same keys).
        uncertain_as_positive: count -1 as positive (CheXpert "U-ones"); else as not positive.

    Returns:
        F1 in [0, 1].

    Raises:
        ValueError: the dicts' keys differ (default observations), a label is missing or not in
            {1, 0, -1, None}.

    Example:
        ref {Edema, Pleural Effusion} vs pred {Edema, Cardiomegaly}: 2 * 1 / (2 + 2) = 0.5.
    """
    if observations is None:
        if set(pred) != set(ref):
            raise ValueError(f"pred and ref label different observations: {sorted(set(pred) ^ set(ref))}")
        observations = list(ref)
    p = _positives(pred, observations, uncertain_as_positive, "pred")
    r = _positives(ref, observations, uncertain_as_positive, "ref")
    if not p and not r:
        return 1.0
    return 2 * len(p & r) / (len(p) + len(r))


def _subset(subset: str, refs: Sequence[Labels]) -> tuple[str, ...]:
    if subset == "all14":
        return CHEXPERT_OBSERVATIONS
    if subset == "competition5":
        return COMPETITION_OBSERVATIONS
    if subset == "all":
        return tuple(refs[0])
    raise ValueError(f"subset must be 'all14', 'competition5' or 'all', got {subset!r}")


def chexpert_f1(
    preds: Sequence[Labels | None],
    refs: Sequence[Labels],
    *,
    subset: str = "all14",
    uncertain_as_positive: bool = True,
) -> dict[str, Any]:
    """Corpus-level CheXpert F1 on positive labels: micro, macro and per label.

    Per label, over reports: TP / FP / FN of "positive" (1, and -1 when ``uncertain_as_positive``);
    ``F1_label = 2 TP / (2 TP + FP + FN)``, None when the label has no positive in refs or preds.
    **micro** = ``2 sum(TP) / (2 sum(TP) + sum(FP) + sum(FN))`` over the subset's labels;
    **macro** = mean of ``F1_label`` over the labels with at least one positive in refs or preds.
    A prediction of None (no parsable report, e.g. no step 5) has no positive label.

    Worked example (subset ``competition5``, three reports)::

        report  reference positives      predicted positives
        1       Edema                    Edema, Cardiomegaly
        2       Pleural Effusion         (none)
        3       Cardiomegaly             Cardiomegaly

        Edema:            TP 1, FP 0, FN 0 -> F1 1.0
        Cardiomegaly:     TP 1, FP 1, FN 0 -> F1 2/3
        Pleural Effusion: TP 0, FP 0, FN 1 -> F1 0.0
        Atelectasis, Consolidation: no positive -> None, not in the macro mean
        micro = 2*2 / (2*2 + 1 + 1) = 4/6 = 0.6667
        macro = (1 + 2/3 + 0) / 3 = 0.5556

    Args:
        preds: labels of the generated reports (None where no report could be read).
        refs: labels of the reference reports, same order and length.
        subset: ``all14`` (CheXpert's 14), ``competition5`` (Atelectasis, Cardiomegaly,
            Consolidation, Edema, Pleural Effusion) or ``all`` (every label of the references).
        uncertain_as_positive: count -1 as positive.

    Returns:
        ``{"micro_f1", "macro_f1", "per_label": {label: {"f1", "tp", "fp", "fn"}}, "labels",
        "macro_labels", "n_reports", "subset", "uncertain_as_positive"}``.

    Raises:
        MetricUndefinedError: no report, or no positive label of the subset in refs or preds.
        ValueError: different lengths, an unknown subset, a missing or invalid label.
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not refs:
        raise MetricUndefinedError("chexpert_f1 needs at least one report")
    names = _subset(subset, refs)
    counts = {n: {"tp": 0, "fp": 0, "fn": 0} for n in names}
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        r = _positives(ref, names, uncertain_as_positive, f"refs[{i}]")
        p = set() if pred is None else _positives(pred, names, uncertain_as_positive, f"preds[{i}]")
        for n in names:
            c = counts[n]
            c["tp"] += n in p and n in r
            c["fp"] += n in p and n not in r
            c["fn"] += n in r and n not in p
    per_label = {}
    for n, c in counts.items():
        denom = 2 * c["tp"] + c["fp"] + c["fn"]
        per_label[n] = {"f1": 2 * c["tp"] / denom if denom else None, **c}
    scored = [n for n in names if per_label[n]["f1"] is not None]
    if not scored:
        raise MetricUndefinedError(
            f"no label of subset {subset!r} is positive in any reference or prediction; F1 is undefined"
        )
    tp, fp, fn = (sum(counts[n][k] for n in names) for k in ("tp", "fp", "fn"))
    return {
        "micro_f1": 2 * tp / (2 * tp + fp + fn),
        "macro_f1": sum(per_label[n]["f1"] for n in scored) / len(scored),
        "per_label": per_label,
        "labels": list(names),
        "macro_labels": scored,
        "n_reports": len(refs),
        "subset": subset,
        "uncertain_as_positive": uncertain_as_positive,
    }


# ---------------------------------------------------------------------------------------------
# 5-step reasoning answers
# ---------------------------------------------------------------------------------------------


def extract_step5(text: str) -> str:
    """The final report of a 5-step reasoning answer (step 5 without its ``Final report:`` label).

    Raises:
        ReasoningFormatError: there is no ``Step 5:`` header, it appears twice, or it is empty
            (the message says which).
    """
    return step5_report(text)


def extract_step5_or_none(text: str) -> str | None:
    """:func:`extract_step5`, or None when the answer has no usable step 5 (for free model output)."""
    try:
        return step5_report(text)
    except ReasoningFormatError:
        return None


def score_reasoning_output(
    output: str,
    reference_report: str,
    *,
    observations: Sequence[str] | None = None,
    uncertain_as_positive: bool = True,
    vocabulary: Vocabulary | None = None,
) -> float:
    """Report F1 of a model's reasoning answer against the reference report.

    The answer's step 5 is labelled and scored with :func:`report_f1`; an answer without a usable
    step 5 scores 0.0 (a failed answer, never the empty-vs-empty 1.0).
    """
    step5 = extract_step5_or_none(output)
    if step5 is None:
        return 0.0
    return report_f1(
        label_report(step5, vocabulary=vocabulary),
        label_report(reference_report, vocabulary=vocabulary),
        observations=observations,
        uncertain_as_positive=uncertain_as_positive,
    )
