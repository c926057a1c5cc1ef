"""Study runner, cohorts, competitors and the report, on a small generated corpus and on NCCTG.

The corpus (built here, ~1 s): cohorts ``gbm`` (OS > 12 months, visits pooled per patient) and
``nsclc`` (OS > 24 months, per-image predictions) at two internal hospitals and one external
site. A latent risk ``r ~ N(0, 1)`` drives the hazard (``OS ~ Exp(mean 16 exp(-r))``), the image
brightness and age, so a model that learns from the pixels must beat chance; censoring is
uniform on (4, 60) months.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model.data.io import sha256_file
from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA, ImageRecord, SchemaError
from validation.survival import (
    AssistantScorer,
    CoxClinicalScorer,
    SurvivalInputError,
    demo_competitors,
    landmark_labels,
    load_demo_cohort,
    load_ncctg_cohort,
    mean_pixel_features,
    ncctg_competitors,
    power_check,
    run_study,
    split_institutions,
)
from validation.survival.studies import main

SITES = (("hospital_a", "internal", 40), ("hospital_b", "internal", 40), ("site_c", "external", 36))
RISK: dict[str, float] = {}  # patient_id -> latent risk (the "oracle" assistant reads it)


def _patient_rows(cohort: str, rng: np.random.Generator) -> list[dict]:
    rows = []
    for site, role, n in SITES:
        for i in range(n):
            pid = f"{cohort[:2].upper()}{site[-1]}{i:03d}"
            r = float(rng.normal())
            RISK[pid] = r
            t_event = rng.exponential(16.0 * np.exp(-r))
            t_cens = rng.uniform(4.0, 60.0)
            split = "external" if role == "external" else ("train", "train", "train", "val", "test")[i % 5]
            rows.append(
                {
                    "patient_id": pid,
                    "site": site,
                    "site_role": role,
                    "split": split,
                    "cohort": cohort,
                    "age": float(np.clip(60 + 8 * r + rng.normal(0, 5), 20, 90)),
                    "sex": "FM"[i % 2],
                    "smoking": ("never", "former", "current")[i % 3],
                    "tnm_stage": ("I", "II", "III", "IV")[int(np.clip(2 + r, 0, 3))],
                    "mutation": "none",
                    "treatment": ("chemo", "surgery")[i % 2],
                    "os_months": float(min(t_event, t_cens)),
                    "os_event": int(t_event <= t_cens),
                    "pfs_months": None,
                    "pfs_event": None,
                    "chief_complaint": None,
                    "history": None,
                }
            )
    return rows


def _image_rows(root: Path, patients: list[dict], rng: np.random.Generator) -> list[dict]:
    rows = []
    for p in patients:
        months = [0.0, 3.0, 30.0] if p["patient_id"].endswith("000") else [0.0, 3.0]  # 30: after landmarks
        for v, month in enumerate(months):
            rel = f"raw/images/{p['site']}/{p['patient_id']}/{p['patient_id']}_v{v}.png"
            level = 128 + 35 * RISK[p["patient_id"]] + 10 * v
            pixels = np.clip(rng.normal(level, 20, size=(16, 16)), 0, 255).astype(np.uint8)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(root / rel)
            rec = ImageRecord.from_dict(
                {
                    "image_id": f"{p['patient_id']}_v{v}",
                    "source": "synthetic",
                    "patient_id": p["patient_id"],
                    "visit_index": v,
                    "visit_month": month,
                    "site": p["site"],
                    "site_role": p["site_role"],
                    "split": p["split"],
                    "modality": "mri" if p["cohort"] == "gbm" else "ct",
                    "body_part": "brain",
                    "image_path": rel,
                    "width": 16,
                    "height": 16,
                    "image_sha256": sha256_file(root / rel),
                }
            )
            rows.append(rec.to_dict())
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("survival") / "data"
    rng = np.random.default_rng(0)
    patients = _patient_rows("gbm", rng) + _patient_rows("nsclc", rng)
    images = _image_rows(root, patients, rng)
    (root / "manifest" / "images").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(patients, schema=PATIENT_SCHEMA), root / "manifest" / "patients.parquet"
    )
    pq.write_table(
        pa.Table.from_pylist(images, schema=IMAGE_SCHEMA), root / "manifest/images/part-00000.parquet"
    )
    return root


def _oracle(ids: list[str]) -> np.ndarray:
    """A stand-in for the assistant: a (noisy-free) function of the latent risk."""
    return 1.0 / (1.0 + np.exp(2.0 * np.array([RISK[i] for i in ids]) + 1.0))


# ---------------------------------------------------------------------------------------------


def test_load_demo_cohort_keeps_images_before_the_landmark(corpus):
    c = load_demo_cohort(corpus, "gbm")
    assert len(c.patients) == 116 and c.landmark == 12.0 and c.per == "patient" and c.time_unit == "months"
    assert set(c.patients["split"]) == {"train", "val", "test", "external"}
    assert (c.images["visit_month"] < 12.0).all()
    assert len(c.images) == 2 * 116  # the month-30 images of the *000 patients were dropped
    assert all(Path(p).is_absolute() and Path(p).exists() for p in c.images["path"])
    assert load_demo_cohort(corpus, "nsclc").per == "image"
    with pytest.raises(KeyError, match="unknown study"):
        load_demo_cohort(corpus, "melanoma")


def test_load_demo_cohort_names_a_patient_with_a_bad_outcome(corpus, tmp_path):
    bad = tmp_path / "bad"
    (bad / "manifest").mkdir(parents=True)
    frame = pd.read_parquet(corpus / "manifest" / "patients.parquet")
    frame.loc[frame["patient_id"] == "GBa005", "os_months"] = -2.0
    frame.to_parquet(bad / "manifest" / "patients.parquet")
    (bad / "manifest" / "images").symlink_to(corpus / "manifest" / "images")
    with pytest.raises(SchemaError, match=r"patient GBa005: duration is -2\.0"):
        load_demo_cohort(bad, "gbm")


def test_run_study_with_three_competitors(corpus):
    cohort = load_demo_cohort(corpus, "gbm")
    comps = demo_competitors(cohort, feature_fn=mean_pixel_features, score_fn=_oracle)
    assert list(comps) == ["assistant", "task_specific", "clinical_cox"]
    res = run_study(cohort, comps, reference="assistant", n_boot=300, seed=1)
    assert list(res.cohorts) == ["internal_test", "external_site_c"]
    ext = res.cohorts["external_site_c"]
    assert ext.n == 36 and ext.included + ext.excluded_censored == ext.n
    assert ext.included == ext.events_by_landmark + ext.event_free_beyond
    frame = cohort.patients[cohort.patients["site"] == "site_c"]
    labels, included = landmark_labels(frame["duration"], frame["event"], 12.0)
    assert ext.excluded_censored == int((~included).sum())
    # the oracle assistant and the pixel model learn the latent risk; scores are probabilities
    a, t = ext.competitors["assistant"], ext.competitors["task_specific"]
    assert a.auc > 0.8 and t.auc > 0.65 and a.auc_low <= a.auc <= a.auc_high
    assert (
        a.delong_p is None and t.delong_p is not None and ext.competitors["clinical_cox"].delong_p is not None
    )
    # the frozen threshold chosen on internal val is applied unchanged on the external site
    th = res.thresholds["task_specific"]
    scores = res.scores["task_specific"].loc[frame["patient_id"]].to_numpy()
    assert t.accuracy == pytest.approx(th.accuracy(labels[included], scores[included]))
    assert sum(t.risk_groups.values()) == 36
    assert 0.5 < a.c_index <= 1 and 0 <= a.brier < 0.25


def test_small_cohorts_give_warnings_not_crashes(corpus):
    cohort = load_demo_cohort(corpus, "nsclc")  # OS > 24 months: few event-free patients
    comps = {"clinical_cox": CoxClinicalScorer(cohort.numeric, cohort.categorical)}
    res = run_study(cohort, comps, reference="clinical_cox", n_boot=100, min_patients=30, min_per_class=10)
    check = power_check(res)
    assert not check.passed and check.n_warnings == len(res.warnings) > 0
    assert any(
        w.cohort == "internal_test" and w.statistic == "cohort" and w.kind == "underpowered"
        for w in res.warnings
    )  # 16 internal test patients < 30
    json.dumps(res.to_dict())  # every number is JSON-able


def test_a_competitor_that_cannot_be_trained_is_a_warning(corpus):
    cohort = load_demo_cohort(corpus, "gbm")
    p = cohort.patients.copy()
    train = p["split"] == "train"
    p.loc[train, "duration"], p.loc[train, "event"] = 3.0, 1  # every training patient dies early
    cohort = dataclasses.replace(cohort, patients=p)
    comps = demo_competitors(cohort, feature_fn=mean_pixel_features, score_fn=_oracle)
    res = run_study(cohort, comps, reference="task_specific", n_boot=50)
    assert list(res.thresholds) == ["assistant", "clinical_cox"]
    assert any(w.statistic == "fit" and w.competitor == "task_specific" for w in res.warnings)
    assert "task_specific" not in res.cohorts["external_site_c"].competitors
    assert res.cohorts["external_site_c"].competitors["assistant"].auc > 0.8
    assert any(w.statistic == "delong" and "not fitted" in w.message for w in res.warnings)


def test_missing_validation_split_leaves_thresholds_unset(corpus):
    cohort = load_demo_cohort(corpus, "gbm")
    p = cohort.patients.copy()
    p.loc[p["split"] == "val", "split"] = "train"
    cohort = dataclasses.replace(cohort, patients=p)
    res = run_study(cohort, {"assistant": AssistantScorer(_oracle)}, reference="assistant", n_boot=50)
    assert res.thresholds == {"assistant": None}
    st = res.cohorts["external_site_c"].competitors["assistant"]
    assert st.accuracy is None and st.logrank_p is None and st.auc is not None
    assert not power_check(res).passed


def test_assistant_output_is_checked():
    patients = pd.DataFrame({"patient_id": ["a", "b"]})
    with pytest.raises(SurvivalInputError, match="returned 1 probabilities for 2 patients"):
        AssistantScorer(lambda ids: [0.5]).predict(patients)
    with pytest.raises(SurvivalInputError, match=r"score_fn output\[1\] is 1\.2"):
        AssistantScorer(lambda ids: [0.5, 1.2]).predict(patients)
    with pytest.raises(ValueError, match="must be one of the competitors"):
        run_study(None, {"a": AssistantScorer(lambda ids: ids)}, reference="b")  # type: ignore[arg-type]


def test_split_institutions_rule():
    counts = pd.Series({1: 36, 12: 23, 13: 20, 3: 19, 2: 5, 4: 5})  # total 108
    assert split_institutions(counts, 0.5) == {1, 12}  # 59 >= 54
    assert split_institutions(counts, 0.9) == {1, 12, 13, 3}  # 98 >= 97.2
    assert split_institutions(counts, 0.95) == {1, 12, 13, 3, 2}  # 103 >= 102.6; tie 2 vs 4 -> lower code


def test_ncctg_study_exercises_every_statistic():
    cohort = load_ncctg_cohort()
    assert cohort.notes["dropped_incomplete"] == 16 and len(cohort.patients) == 212
    assert cohort.notes["internal_institutions"] == [1, 3, 6, 11, 12, 13, 22]
    res = run_study(cohort, ncctg_competitors(cohort), reference="clinical_cox", n_boot=200)
    assert list(res.cohorts) == ["internal_test", "external_all"]
    ext = res.cohorts["external_all"]
    assert ext.n == int((cohort.patients["site_role"] == "external").sum())
    for name, st in ext.competitors.items():
        assert 0 < st.auc < 1 and st.c_index is not None and st.brier is not None and st.logrank_p is not None
        assert (st.delong_p is None) == (name == "clinical_cox")


def test_cli_writes_the_report_atomically(corpus, tmp_path):
    out = tmp_path / "reports"
    main(["--root", str(corpus), "--out", str(out), "--studies", "gbm", "--n-boot", "50"])
    folder = out / "gbm"
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == [
        "figures/calibration.png",
        "figures/km_clinical_cox.png",
        "figures/km_task_specific.png",
        "report.md",
        "results.json",
    ]
    data = json.loads((folder / "results.json").read_text())
    auc = data["cohorts"]["external_site_c"]["competitors"]["task_specific"]["auc"]
    text = (folder / "report.md").read_text()
    assert f"{auc:.3f} [" in text and "DeLong P vs clinical_cox" in text
    assert not list(out.glob(".gbm.tmp-*"))


def test_failed_report_keeps_the_previous_one(tmp_path, monkeypatch):
    from validation.survival import report, write_study_report

    cohort = load_ncctg_cohort()
    res = run_study(cohort, ncctg_competitors(cohort), reference="clinical_cox", n_boot=50)
    monkeypatch.setattr(report, "_km_figure", lambda *a, **k: None)  # skip the slow figures here
    files = write_study_report(res, tmp_path / "ncctg")
    before = files.json.read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_calibration_figure", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_study_report(res, tmp_path / "ncctg")
    assert files.json.read_text() == before and files.markdown.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ncctg"]
