"""Per-item terms of a benchmark metric (:class:`ItemScores`), what the bootstrap resamples.

Three forms, one per kind of metric:

* **ratio** (a mean, a share of a subset, a pooled ratio): per-item numerator and denominator,
  value = ``sum(num) / sum(den)``. A plain mean has ``den = 1``; ``closed_accuracy`` has ``den = 1``
  on closed questions only; ``recall_at_05`` pools matched / gold boxes. Resampling is a
  vectorised numpy sum.
* **stats** (BLEU-4): per-item additive statistics (clipped n-gram matches, n-gram totals, lengths)
  and a vectorised function of their sums, which is exactly NLTK's ``corpus_bleu`` with method-1
  smoothing (:func:`bleu4_from_stats`).
* **corpus** (macro-F1, CheXpert-F1, Med-GRIT per-modality means, balanced accuracy): per-item
  payloads (mapped / labelled / scored once) and the corpus function, recomputed on each resample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from validation.benchmarks.items import BenchmarkItem
from validation.metrics import MetricUndefinedError, report_tokens

__all__ = ["ItemScores", "bleu4_from_stats", "bleu_stats", "corpus_scores", "mean_scores", "ratio_scores"]


@dataclass(frozen=True)
class ItemScores:
    """One metric's value on a benchmark with its per-item terms, in one of three forms.

    * ratio: ``num``, ``den`` (per item); value = ``sum(num) / sum(den)``;
    * stats: ``stats`` ``(n, k)`` additive per-item statistics and ``from_stats`` mapping summed
      statistics ``(B, k)`` to values ``(B,)`` (BLEU-4: n-gram matches, totals, lengths);
    * corpus: ``payloads`` (per item) and ``corpus`` recomputing the metric on a list of them.

    ``value`` is always the official :mod:`validation.metrics` result on all items.
    """

    metric: str
    value: float
    num: np.ndarray | None = None
    den: np.ndarray | None = None
    stats: np.ndarray | None = None
    from_stats: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    payloads: tuple | None = None
    corpus: Callable[[Sequence[Any]], float] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """``ratio``, ``stats`` or ``corpus``."""
        return "ratio" if self.num is not None else "stats" if self.stats is not None else "corpus"

    @property
    def n(self) -> int:
        """Number of items."""
        terms = {"ratio": self.num, "stats": self.stats, "corpus": self.payloads}[self.kind]
        return len(terms)

    def resampled(self, idx: np.ndarray) -> np.ndarray:
        """The metric on each row of resampled item indices ``idx`` ``(B, n)``; NaN where undefined."""
        if self.kind == "ratio":
            den = self.den[idx].sum(axis=1)
            num = self.num[idx].sum(axis=1)
            return np.divide(num, den, out=np.full(len(idx), np.nan), where=den > 0)
        if self.kind == "stats":
            return self.from_stats(self.stats[idx].sum(axis=1))
        out = np.full(len(idx), np.nan)
        for b, row in enumerate(idx):
            try:
                out[b] = self.corpus([self.payloads[i] for i in row])
            except MetricUndefinedError:
                pass  # this resample has no defined value (e.g. no positive label): left out
        return out

    def by_group(self, items: Sequence[BenchmarkItem]) -> dict[str, dict[str, float]]:
        """Ratio metrics per value of each group field (groups with an empty denominator left out)."""
        if self.kind != "ratio":
            return {}
        out: dict[str, dict[str, float]] = {}
        for name in sorted({k for it in items for k in it.groups}):
            keys = np.array([str(it.groups.get(name, "")) for it in items])
            vals = {}
            for key in sorted(set(keys) - {""}):
                den = self.den[keys == key].sum()
                if den > 0:
                    vals[key] = float(self.num[keys == key].sum() / den)
            out[name] = vals
        return out


def ratio_scores(metric: str, num: Sequence[float], den: Sequence[float]) -> ItemScores:
    """Ratio terms; raises :class:`MetricUndefinedError` when every denominator is 0."""
    n, d = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if d.sum() <= 0:
        raise MetricUndefinedError(f"{metric}: no item in the denominator (e.g. no question of that kind)")
    return ItemScores(metric, float(n.sum() / d.sum()), num=n, den=d)


def corpus_scores(metric: str, payloads: Sequence[Any], fn: Callable[[Sequence[Any]], float]) -> ItemScores:
    """Corpus terms; the value is ``fn`` on all payloads."""
    return ItemScores(metric, float(fn(list(payloads))), payloads=tuple(payloads), corpus=fn)


def mean_scores(metric: str, values: Sequence[float]) -> ItemScores:
    """Ratio terms of a plain mean (``den = 1``)."""
    return ratio_scores(metric, values, [1.0] * len(values))


_BLEU_N = 4
_BLEU_EPS = 0.1  # NLTK SmoothingFunction().method1 epsilon


def bleu_stats(ref: str, hyp: str) -> list[float]:
    """NLTK ``corpus_bleu``'s additive terms of one pair: clipped matches and totals (max 1) per order, lengths."""
    r, h = report_tokens(ref), report_tokens(hyp)
    matches, totals = [], []
    for n in range(1, _BLEU_N + 1):
        hyp_ngrams = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
        ref_ngrams = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
        matches.append(sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items()))
        totals.append(max(1, sum(hyp_ngrams.values())))
    return [*matches, *totals, len(h), len(r)]


def bleu4_from_stats(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 (NLTK ``corpus_bleu``, method1 smoothing) from summed :func:`bleu_stats` rows ``(B, 10)``.

    ``p_n = m_n / d_n`` (``eps / d_n`` when ``m_n = 0``); BLEU = ``BP * exp(mean log p_n)``, 0 when no
    unigram matches; ``BP = 1`` if ``c > r``, 0 if ``c = 0``, else ``exp(1 - r / c)``.
    """
    m, d = stats[:, :_BLEU_N], stats[:, _BLEU_N : 2 * _BLEU_N]
    c, r = stats[:, 2 * _BLEU_N], stats[:, 2 * _BLEU_N + 1]
    p = np.where(m > 0, m, _BLEU_EPS) / d
    with np.errstate(divide="ignore"):
        bp = np.where(c > r, 1.0, np.where(c > 0, np.exp(1 - r / np.where(c > 0, c, 1)), 0.0))
    return np.where(m[:, 0] > 0, bp * np.exp(np.log(p).mean(axis=1)), 0.0)
