"""Tests of the corpus generator (model/data/synth.py) and the survival hazard (model/data/hazard.py)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tracemalloc
import wave
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest
from PIL import Image

from model.data.catalogue import load_region_catalogue
from model.data.hazard import BASELINE_SCALE_MONTHS, WEIBULL_SHAPE, linear_predictor, sample_outcomes
from model.data.io import assign_split, iter_parquet_rows
from model.data.schema import ImageRecord, PatientRecord
from model.data.synth import MODALITY_SPECS, GenerateParams, generate_corpus, generate_manifest_only, main

CATALOGUE = load_region_catalogue()
TINY = {
    "seed": 5,
    "n_patients": 12,
    "image_size": 32,
    "external_fraction": 0.25,
    "max_visits": 3,
    "spoken_queries": 4,
}


class FakeTTS:
    """Writes a tiny deterministic WAV whose samples encode the text."""

    def synthesize(self, text: str, path: Path) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(text.encode()[:64].ljust(64, b"\0"))


class BrokenTTS:
    def synthesize(self, text: str, path: Path) -> None:
        raise RuntimeError("speech backend crashed")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(raw: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (raw / "records.jsonl").read_text().splitlines()]
    patients = [json.loads(line) for line in (raw / "patients.jsonl").read_text().splitlines()]
    return records, patients


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, list[dict], list[dict]]:
    root = tmp_path_factory.mktemp("tiny")
    summary = generate_corpus(root / "raw", **TINY, tts=FakeTTS())
    return root, summary, *_read(root / "raw")


# ---------------------------------------------------------------------------------------------
# full generator
# ---------------------------------------------------------------------------------------------


def test_same_params_give_byte_identical_files(corpus, tmp_path):
    root, *_ = corpus
    generate_corpus(tmp_path / "raw", **TINY, tts=FakeTTS())
    first, second = _hashes(root / "raw"), _hashes(tmp_path / "raw")
    assert first == second
    assert any(k.endswith(".dcm") for k in first) and any(k.endswith(".wav") for k in first)
    generate_corpus(tmp_path / "other", **{**TINY, "seed": 6}, tts=FakeTTS())
    assert _hashes(tmp_path / "other")["records.jsonl"] != first["records.jsonl"]


def test_layout_counts_and_generator_json(corpus):
    root, summary, records, patients = corpus
    raw = root / "raw"
    assert summary["patients"] == len(patients) == 12 and summary["images"] == len(records)
    assert sorted(p.name for p in raw.iterdir()) == [
        "audio",
        "dicom",
        "generator.json",
        "images",
        "masks",
        "patients.jsonl",
        "records.jsonl",
    ]
    gen = json.loads((raw / "generator.json").read_text())
    assert gen["params"] == TINY and gen["counts"]["images"] == len(records)
    assert (
        gen["hazard"]["coefficients"]["size_cm_over_4"] > 0 and gen["sites"]["site_d"]["role"] == "external"
    )
    assert not list(root.glob(".raw.tmp-*"))


def test_every_record_and_patient_validates(corpus):
    root, _, records, patients = corpus
    for rec in records:
        split = "external" if rec["site_role"] == "external" else "train"
        r = ImageRecord.from_dict({**rec, "split": split, "image_sha256": "x"})
        assert (root / r.image_path).is_file() and r.image_path.startswith("raw/")
        assert r.diagnosis == (max(r.lesions, key=lambda x: x.size_mm).lesion_type if r.lesions else "normal")
        assert list(r.findings) == (list(dict.fromkeys(x.lesion_type for x in r.lesions)) or ["normal"])
        assert [g.name for g in r.regions] == [e.name for e in CATALOGUE.for_modality(r.modality)]
        assert 1 <= len(r.mcq) <= 2 and all(m.options[ord(m.answer) - 65] for m in r.mcq)
        assert {v.answer_type for v in r.vqa} == {"closed", "open"}
    for p in patients:
        rec = PatientRecord.from_dict({**p, "split": "train"})
        assert (rec.pfs_months is not None) == (rec.cohort == "lung_tki")
        text = f"{rec.history} {rec.chief_complaint}"
        assert rec.patient_id not in text and not any(
            ch.isdigit() for ch in text.replace(str(int(rec.age)), "")
        )


def test_patient_rows_are_consecutive_with_linked_visits(corpus):
    _, _, records, patients = corpus
    order = [r["patient_id"] for r in records]
    assert order == sorted(order) and list(dict.fromkeys(order)) == [p["patient_id"] for p in patients]
    by_patient = defaultdict(list)
    for r in records:
        by_patient[r["patient_id"]].append(r)
    for visits in by_patient.values():
        assert [v["visit_index"] for v in visits] == list(range(len(visits)))
        months = [v["visit_month"] for v in visits]
        assert months == sorted(months) and len(set(months)) == len(months)
        assert visits[0]["prior_image_id"] is None
        assert all(b["prior_image_id"] == a["image_id"] for a, b in itertools.pairwise(visits))


def test_images_have_the_recorded_size_mode_and_site_resolution(corpus):
    root, _, records, _ = corpus
    for r in records:
        external = r["site_role"] == "external"
        assert r["site"] in (("site_c", "site_d") if external else ("hospital_a", "hospital_b"))
        if external:
            assert r["image_path"].endswith(".dcm") and r["modality"] in ("ct", "mri", "xray")
            assert r["width"] == {"site_c": 48, "site_d": 24}[r["site"]]
            continue
        img = Image.open(root / r["image_path"])
        assert r["image_path"].endswith(".png") and img.size == (32, 32) == (r["width"], r["height"])
        assert img.mode == ("L" if r["modality"] in ("ct", "mri", "xray", "ultrasound") else "RGB")


def test_external_sites_export_windowed_16_bit_dicom(corpus):
    root, _, records, _ = corpus
    external = [r for r in records if r["site_role"] == "external"]
    assert external and not list((root / "raw" / "images").glob("site_*"))
    for r in external:
        ds = pydicom.dcmread(root / r["image_path"])
        assert ds.Modality == {"ct": "CT", "mri": "MR", "xray": "DX"}[r["modality"]]
        assert ds.PatientID == r["patient_id"] and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 0)
        assert (ds.Rows, ds.Columns) == (r["height"], r["width"])
        assert float(ds.PixelSpacing[0]) == pytest.approx(r["pixel_spacing_mm"], rel=1e-3)
        assert float(ds.WindowWidth) > 0 and "WindowCenter" in ds
        real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        lo = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
        windowed = (real - lo) / float(ds.WindowWidth)  # back to the rendered [0, 1] scale
        assert windowed.min() >= -1e-6 and windowed.max() <= 1 + 1e-6 and windowed.std() > 0.05
        assert ds.SOPInstanceUID.startswith("1.2.826.0.1.3680043.8.498.")  # pydicom root, seed-derived


def test_boxes_lie_inside_images_and_masks_inside_their_box(corpus):
    root, _, records, _ = corpus
    n_lesions = 0
    for r in records:
        regions = {g["name"]: g for g in r["regions"]}
        for les in r["lesions"]:
            n_lesions += 1
            mask = np.array(Image.open(root / les["mask_path"])) > 0
            assert mask.shape == (r["height"], r["width"])
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
                les["x1"],
                les["y1"],
                les["x2"],
                les["y2"],
            )
            g = regions[les["region"]]
            assert g["x1"] - 1 <= les["x1"] and les["x2"] <= g["x2"] + 1
            assert g["y1"] - 1 <= les["y1"] and les["y2"] <= g["y2"] + 1
            assert les["region"] in MODALITY_SPECS[r["modality"]].lesions[les["lesion_type"]]
    assert n_lesions >= 5


def test_lesions_grow_or_shrink_in_place_across_visits(corpus):
    _, _, records, _ = corpus
    by_patient = defaultdict(list)
    for r in records:
        by_patient[r["patient_id"]].append(r)
    followed = 0
    for visits in by_patient.values():
        if len(visits) < 2 or not visits[0]["lesions"]:
            continue
        followed += 1
        first, second = visits[0]["lesions"], visits[1]["lesions"]
        assert [(x["lesion_type"], x["region"]) for x in first] == [
            (x["lesion_type"], x["region"]) for x in second
        ]
        assert any(a["size_mm"] != b["size_mm"] for a, b in zip(first, second))
        assert "Compared with the prior study" in visits[1]["report_impression"]
    assert followed >= 2


def test_reports_questions_and_spoken_queries(corpus):
    root, _, records, _ = corpus
    answers = Counter(v["answer"] for r in records for v in r["vqa"] if v["answer_type"] == "closed")
    assert answers["yes"] == answers["no"] > 0 and set(answers) == {"yes", "no"}
    for r in records:
        sentences = r["report_findings"].split(". ")
        assert len(sentences) >= len(
            MODALITY_SPECS[r["modality"]].lesions
        )  # one per finding (present or negated)
        for les in r["lesions"]:
            assert (
                f"{les['severity']} " in r["report_findings"]
                and f"in the {les['region']}" in r["report_findings"]
            )
    spoken = [q for r in records for q in r["spoken_queries"]]
    assert len(spoken) == TINY["spoken_queries"]
    for r in records:
        for q in r["spoken_queries"]:
            assert (root / q["audio_path"]).is_file()
            assert {"question": q["text"], "answer": q["answer"]}.items() <= next(
                v for v in r["vqa"] if v["question"] == q["text"]
            ).items()


def test_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="crashed"):
        generate_corpus(tmp_path / "raw", **TINY, tts=BrokenTTS())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="image_size"):
        generate_corpus(tmp_path / "raw", **{**TINY, "image_size": 4}, tts=FakeTTS())


def test_cli_reads_one_profile(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    block = {**TINY, "spoken_queries": 0, "n_patients": 3}
    params.write_text(json.dumps({"data": {"tiny": {"generate": block, "ingest": {}}}}))
    assert main(["--params", str(params), "--profile", "tiny", "--out", str(tmp_path / "raw")]) == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 3
    params.write_text(json.dumps({"data": {"tiny": {"generate": {"seed": 1}}}}))
    with pytest.raises(ValueError, match=r"params.yaml: data.tiny.generate needs exactly"):
        GenerateParams.from_file(params, "tiny")
    with pytest.raises(ValueError, match="no data.nope.generate"):
        GenerateParams.from_file(params, "nope")


def test_shipped_profiles_load():
    root = Path(__file__).resolve().parents[4]
    for profile in ("ci", "demo"):
        p = GenerateParams.from_file(root / "params.yaml", profile)
        assert p.n_patients > 0 and p.image_size >= 16


# ---------------------------------------------------------------------------------------------
# manifest-only mode
# ---------------------------------------------------------------------------------------------


def test_manifest_rows_validate_and_match_the_full_generator(tmp_path, corpus):
    _, _, _, patients = corpus
    summary = generate_manifest_only(
        tmp_path / "m",
        n_rows=600,
        seed=TINY["seed"],
        image_size=32,
        external_fraction=TINY["external_fraction"],
        max_visits=TINY["max_visits"],
        rows_per_shard=250,
    )
    assert summary["rows"] == 600 and summary["shards"] == 3
    assert sorted(p.name for p in (tmp_path / "m" / "images").iterdir()) == [
        f"part-0000{i}.parquet" for i in range(3)
    ]
    split_of = {}
    for row in iter_parquet_rows(tmp_path / "m" / "patients.parquet"):
        p = PatientRecord.from_dict(row)
        assert p.split == assign_split(p.patient_id, p.site_role, val=0.15, test=0.15, salt="xmed-v1")
        split_of[p.patient_id] = p.split
    n = 0
    for row in iter_parquet_rows(tmp_path / "m" / "images"):
        r = ImageRecord.from_dict(row)
        assert (
            r.split == split_of[r.patient_id] and len(r.image_sha256) == 64 and int(r.image_sha256, 16) >= 0
        )
        assert not (tmp_path / r.image_path).exists() and r.report_findings and r.vqa and r.mcq
        n += 1
    assert n == 600
    # the same plan stream as the full generator: the first patients are identical
    manifest_patients = pq.read_table(tmp_path / "m" / "patients.parquet").to_pylist()[: len(patients)]
    for full, man in zip(patients, manifest_patients):
        for k, v in full.items():
            assert man[k] == (pytest.approx(v, abs=1e-4) if isinstance(v, float) else v), k


def test_manifest_lesion_positions_vary(tmp_path):
    generate_manifest_only(tmp_path / "m", n_rows=1500, seed=1)
    centres = defaultdict(list)
    for row in iter_parquet_rows(tmp_path / "m" / "images", columns=["modality", "width", "lesions"]):
        for les in row["lesions"]:
            centres[(row["modality"], les["region"])].append(
                ((les["x1"] + les["x2"]) / 2 / row["width"], (les["y1"] + les["y2"]) / 2 / row["width"])
            )
    ct_lung = np.array(centres[("ct", "right lung")])
    assert len(ct_lung) > 20 and ct_lung.std(axis=0).min() > 0.03


def _manifest_peaks(tmp_path: Path, sizes: tuple[int, int], row_group_size: int) -> list[int]:
    kwargs = {"seed": 1, "row_group_size": row_group_size, "rows_per_shard": 1000}
    generate_manifest_only(tmp_path / "warm", n_rows=300, **kwargs)  # first-call imports and caches
    peaks = []
    for n in sizes:
        tracemalloc.start()
        generate_manifest_only(tmp_path / f"m{n}", n_rows=n, **kwargs)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return peaks


def test_manifest_memory_does_not_grow_with_rows(tmp_path):
    """4x the rows, the same peak (a generator that kept its rows would grow by ~2.5 kB per row)."""
    small, large = _manifest_peaks(tmp_path, (250, 1000), row_group_size=32)
    assert large < 1.25 * small + 100_000, (small, large)


@pytest.mark.slow
def test_manifest_memory_at_scale(tmp_path):
    small, large = _manifest_peaks(tmp_path, (5_000, 20_000), row_group_size=2_048)
    assert large < 1.2 * small, (small, large)


def test_manifest_cli(tmp_path, capsys):
    assert main(["manifest-only", "--rows", "40", "--seed", "3", "--out", str(tmp_path / "m")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 40
    assert pq.read_metadata(tmp_path / "m" / "images" / "part-00000.parquet").num_rows == 40


# ---------------------------------------------------------------------------------------------
# survival hazard
# ---------------------------------------------------------------------------------------------


def test_linear_predictor_matches_hand_computation():
    """eta = 0.25*(70-60)/10 + 1.3 (IV) + 0.35 (current) - 0.10 + 0.20 - 0.90 (EGFR+ x TKI)
    + 0.30*(6-4) + 1.5*0.2."""
    eta = linear_predictor(
        age=70, tnm_stage="IV", smoking="current", mutation="EGFR+", treatment="TKI", size_cm=6.0, growth=0.2
    )
    assert eta == pytest.approx(0.25 + 1.3 + 0.35 - 0.10 + 0.20 - 0.90 + 0.60 + 0.30)
    no_imaging = linear_predictor(
        age=60, tnm_stage="I", smoking="never", mutation="none", treatment="none", size_cm=0.0, growth=0.5
    )
    assert no_imaging == 0.0
    with pytest.raises(ValueError, match="tnm_stage"):
        linear_predictor(
            age=60, tnm_stage="V", smoking="never", mutation="none", treatment="none", size_cm=0, growth=0
        )


def test_weibull_median_survives_censoring():
    """Kaplan-Meier median of censored draws at eta=0 equals the Weibull median scale * ln(2)**(1/shape)."""
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(0)
    draws = [sample_outcomes(rng, cohort="lung_tki", eta=0.0) for _ in range(4000)]
    km = KaplanMeierFitter().fit([d["os_months"] for d in draws], [d["os_event"] for d in draws])
    expected = BASELINE_SCALE_MONTHS["lung_tki"]["os"] * math.log(2) ** (1 / WEIBULL_SHAPE)
    assert km.median_survival_time_ == pytest.approx(expected, rel=0.06)
    assert 0.05 < 1 - np.mean([d["os_event"] for d in draws]) < 0.6  # some, not most, are censored
    assert all(d["pfs_months"] <= d["os_months"] for d in draws)


def test_imaging_biomarkers_improve_the_c_index(tmp_path):
    """Cox models fit on half the imaging cohorts: adding baseline size and growth (read from the lesion
    records, as a model would) raises the held-out C-index over clinical covariates alone."""
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    generate_manifest_only(tmp_path / "m", n_rows=3000, seed=2)
    burden = defaultdict(dict)
    for r in iter_parquet_rows(
        tmp_path / "m" / "images", columns=["patient_id", "visit_index", "visit_month", "lesions"]
    ):
        burden[r["patient_id"]][r["visit_index"]] = (
            r["visit_month"],
            sum(x["size_mm"] for x in r["lesions"]),
        )
    pat = pd.read_parquet(tmp_path / "m" / "patients.parquet")
    pat = pat[pat.cohort.isin(["lung_tki", "nsclc", "gbm"])].reset_index(drop=True)

    def imaging(pid: str) -> tuple[float, float]:
        (m0, d0), nxt = burden[pid][0], burden[pid].get(1)
        return d0 / 10, (math.log(nxt[1] / d0) / ((nxt[0] - m0) / 3) if nxt else 0.0)

    size, growth = zip(*(imaging(p) for p in pat.patient_id))
    df = pd.DataFrame(
        {
            "T": pat.os_months,
            "E": pat.os_event,
            "age": pat.age,
            "stage": pat.tnm_stage.map({"I": 0, "II": 1, "III": 2, "IV": 3}),
            "current": (pat.smoking == "current") * 1,
            "former": (pat.smoking == "former") * 1,
            "egfr": (pat.mutation == "EGFR+") * 1,
            "tki": (pat.treatment == "TKI") * 1,
            "idh": (pat.mutation == "IDH-mutant") * 1,
            "gbm": (pat.cohort == "gbm") * 1,
            "size_cm": size,
            "growth": growth,
        }
    )
    df["egfr_tki"] = df.egfr * df.tki
    order = np.random.default_rng(0).permutation(len(df))
    train, test = df.iloc[order[: len(df) // 2]], df.iloc[order[len(df) // 2 :]]
    clinical = ["age", "stage", "current", "former", "egfr", "tki", "egfr_tki", "idh", "gbm"]
    c_index = {}
    for name, cols in (("clinical", clinical), ("imaging", clinical + ["size_cm", "growth"])):
        cph = CoxPHFitter(penalizer=0.01).fit(train[cols + ["T", "E"]], "T", "E")
        c_index[name] = concordance_index(test["T"], -cph.predict_partial_hazard(test[cols]), test["E"])
    assert len(df) > 400
    assert cph.summary.loc["size_cm", "coef"] > 0.15 and cph.summary.loc["size_cm", "p"] < 0.01
    assert c_index["imaging"] > c_index["clinical"] + 0.03, c_index
