"""Flat views of a reliability-index result: MLflow metrics and the completeness check."""

from __future__ import annotations

import math

__all__ = ["missing_aurocs", "uncertainty_metrics"]


def uncertainty_metrics(result: dict) -> dict[str, float]:
    """``uncertainty/vqa/<estimator>/auroc_m<M>`` (and prr) and ``uncertainty/sentence/<estimator>/auroc_q<k>``."""
    out = {}
    for kind in ("auroc", "prr"):
        for est, by_m in result["vqa"][kind].items():
            out.update({f"uncertainty/vqa/{est}/{kind}_m{m}": v for m, v in by_m.items() if v is not None})
    for est, by_k in result["sentences"]["auroc"].items():
        out.update({f"uncertainty/sentence/{est}/auroc_q{k}": v for k, v in by_k.items() if v is not None})
    return out


def missing_aurocs(result: dict) -> list[str]:
    """Every (experiment, estimator, M or k) without a finite AUROC."""
    missing = []
    for part in ("vqa", "sentences"):
        for est, values in result[part]["auroc"].items():
            missing += [f"{part}/{est}/{k}" for k, v in values.items() if v is None or not math.isfinite(v)]
    return missing
