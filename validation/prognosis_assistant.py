"""The assistant and the frozen vision encoder as competitors of the prognostic studies.

* :func:`assistant_score_fn`: the assistant is asked the curated landmark question (the same
  templates and clinical text as the training prompts, :func:`model.data.curation.prognosis_prompt`)
  with the patient's images acquired before the landmark; the score is ``P(yes)`` from its yes/no
  next-token probabilities (:func:`model.generation.batched_yes_no_probability`). Per-patient
  studies ask once with all visits; per-image studies (``nsclc``) ask once per slice and average
  per patient.
* :func:`vision_feature_fn`: frozen vision-encoder features (grid tokens mean-pooled after the
  projector's input, i.e. the vision tower output) for the task-specific linear competitor
  (FMCIB-style).

Both load the checkpoint once and return plain callables, so :mod:`validation.survival` stays free
of model code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from model.data.curation import DEFAULT_LANDMARKS, TemplatePicker, clinical_text, image_head, load_templates
from model.data.curation import prognosis_prompt as _prompt_text
from model.data.io import iter_parquet_rows
from model.data.schema import PatientRecord

__all__ = ["assistant_score_fn", "load_assistant", "run_prognosis_study", "study_metrics", "vision_feature_fn"]


def load_assistant(checkpoint: str | os.PathLike):
    """``(model, processor)`` of a checkpoint folder, in eval mode, float32 on CPU."""
    from model.pretrained import load_pretrained_vlm
    from model.vlm import XMedProcessor

    model, tok = load_pretrained_vlm(checkpoint, dtype="float32")
    return model.eval(), XMedProcessor.for_model(tok, model.config)


def _patients(root: Path) -> dict[str, PatientRecord]:
    path = root / "manifest" / "patients.parquet"
    return {
        r["patient_id"]: PatientRecord.from_dict(r, f"{path}: patient {r.get('patient_id')}")
        for r in iter_parquet_rows(path)
    }


def _prompts(cohort, root: Path, seed: int) -> tuple[list[str], list[list[Path]], list[str]]:
    """(prompt, images, patient_id) per question: one per patient, or one per image for per-image cohorts."""
    landmark = DEFAULT_LANDMARKS[cohort.name]
    picker = TemplatePicker(load_templates(), seed)
    patients = _patients(root)
    prompts, images, owners = [], [], []
    for pid, rows in cohort.images.sort_values(["patient_id", "visit_index"]).groupby("patient_id", sort=False):
        if pid not in patients:
            raise KeyError(f"{root}/manifest/patients.parquet: no patient {pid} (cohort {cohort.name})")
        clinical = clinical_text(patients[pid])
        groups = [[r] for r in rows.itertuples()] if cohort.per == "image" else [list(rows.itertuples())]
        for group in groups:
            _, text = _prompt_text([r.visit_month for r in group], clinical, landmark, picker, f"{pid}:prognosis")
            prompts.append(image_head(len(group)) + text)
            images.append([Path(r.path) for r in group])
            owners.append(pid)
    return prompts, images, owners


def assistant_score_fn(
    model, processor, cohort, *, root: str | os.PathLike, batch_size: int = 16, seed: int = 0
) -> Callable[[Sequence[str]], np.ndarray]:
    """``score_fn(patient_ids) -> P(event-free beyond the landmark)`` of the assistant for a cohort.

    All questions of the cohort are asked once, up front (batched); the callable then looks the
    patients up. A patient without an image before the landmark has no score and raises KeyError.
    """
    from model.generation import batched_yes_no_probability

    prompts, images, owners = _prompts(cohort, Path(root), seed)
    enc = [processor.encode_generation(p, imgs) for p, imgs in zip(prompts, images)]
    probs = batched_yes_no_probability(model, processor, enc, batch_size=batch_size)
    sums: dict[str, list[float]] = {}
    for pid, p in zip(owners, probs):
        sums.setdefault(pid, []).append(p)
    per_patient = {pid: float(np.mean(v)) for pid, v in sums.items()}

    def score(patient_ids: Sequence[str]) -> np.ndarray:
        missing = [p for p in patient_ids if p not in per_patient]
        if missing:
            raise KeyError(f"cohort {cohort.name}: no image before the landmark for patients {missing[:5]}")
        return np.array([per_patient[p] for p in patient_ids], dtype=float)

    return score


def vision_feature_fn(model, processor, *, batch_size: int = 64) -> Callable[[Sequence[str]], np.ndarray]:
    """``feature_fn(image paths) -> (n, d)``: mean-pooled vision-tower tokens of the frozen model."""

    @torch.no_grad()
    def features(paths: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(paths), batch_size):
            pixels = processor.pixel_values([Path(p) for p in paths[start : start + batch_size]])
            out.append(model.vision_tower(pixels.to(model.dtype)).mean(dim=1).float().numpy())
        if not out:
            raise ValueError("vision_feature_fn: no image paths given")
        return np.concatenate(out)

    return features


def run_prognosis_study(
    study: str,
    *,
    data_root: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    n_boot: int = 2000,
    seed: int = 0,
):
    """One prognostic study with its three competitors; the report goes to ``out_dir/<study>/``.

    Imaging studies (``lung_tki``, ``nsclc``, ``gbm``) use the assistant at ``checkpoint`` and its
    frozen vision tower for the task-specific model; ``ncctg`` (clinical only) needs no checkpoint.

    Returns:
        ``(StudyResult, ReportFiles)``.
    """
    from validation.survival import load_demo_cohort, mean_pixel_features, run_study_set

    score_fns, feature_fn = {}, mean_pixel_features
    if study != "ncctg":
        if checkpoint is None:
            raise ValueError(f"study {study!r} compares the assistant: give the checkpoint to evaluate")
        model, processor = load_assistant(checkpoint)
        cohort = load_demo_cohort(data_root, study)
        score_fns[study] = assistant_score_fn(model, processor, cohort, root=data_root, seed=seed)
        feature_fn = vision_feature_fn(model, processor)
    return run_study_set(
        root=data_root, out_dir=out_dir, studies=[study], feature_fn=feature_fn, score_fns=score_fns,
        n_boot=n_boot, seed=seed,
    )[study]


_SCALARS = ("auc", "auc_low", "auc_high", "accuracy", "delong_p", "logrank_p", "c_index", "brier")


def study_metrics(results: dict) -> dict[str, float]:
    """Flat ``prognosis/<study>/<cohort>/<competitor>/<stat>`` metrics of a ``results.json`` dict.

    Statistics that could not be computed (None, with a warning in the report) are left out.
    """
    out = {}
    for cohort, summary in results["cohorts"].items():
        out[f"prognosis/{results['study']}/{cohort}/n"] = float(summary["n"])
        for comp, stats in summary["competitors"].items():
            for key in _SCALARS:
                if stats.get(key) is not None:
                    out[f"prognosis/{results['study']}/{cohort}/{comp}/{key}"] = float(stats[key])
    return out
