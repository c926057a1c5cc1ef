"""The ingest stage end to end on hand-written sources (generator raw layout, MedMNIST, VinDr)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from model.data.dicom_io import write_dicom
from model.data.ingest import IngestError, ingest, load_params, main
from model.data.io import iter_parquet_rows, sha256_file
from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA, ImageRecord, PatientRecord, SchemaError

N_INTERNAL, N_EXTERNAL = 30, 4
PARAMS = {"val_fraction": 0.15, "test_fraction": 0.15, "split_salt": "xmed-v1", "dicom_png_size": 16}


def _record(image_id, patient, site, role, path, size, visit, **extra):
    return {
        "image_id": image_id,
        "source": "xmed_synth",
        "patient_id": patient,
        "visit_index": visit,
        "visit_month": 6.0 * visit,
        "site": site,
        "site_role": role,
        "modality": "ct",
        "body_part": "chest",
        "image_path": path,
        "width": size,
        "height": size,
        "pixel_spacing_mm": 1.0,
        "diagnosis": "nodule",
        "findings": [],
        "regions": [{"name": "right_lung", "x1": 2, "y1": 2, "x2": size - 2, "y2": size - 2}],
        "lesions": [],
        "report_findings": None,
        "report_impression": None,
        "vqa": [],
        "mcq": [],
        "spoken_queries": [],
        "prior_image_id": f"{patient}_v{visit - 1}" if visit else None,
        **extra,
    }


def _patient(patient, site, role):
    return {
        "patient_id": patient,
        "site": site,
        "site_role": role,
        "cohort": "nsclc",
        "age": 61.0,
        "sex": "F",
        "smoking": "former",
        "tnm_stage": "II",
        "mutation": "EGFR",
        "treatment": "chemo",
        "os_months": 20.5,
        "os_event": 1,
        "pfs_months": 9.0,
        "pfs_event": 1,
        "chief_complaint": None,
        "history": None,
    }


@pytest.fixture()
def data_root(tmp_path):
    """``raw/`` in the generator's layout: internal PNG patients with two visits, external DICOM patients."""
    root = tmp_path / "data" / "ci"
    records, patients = [], []
    for i in range(N_INTERNAL + N_EXTERNAL):
        pid = f"P{i:06d}"
        internal = i < N_INTERNAL
        site, role = ("hospital_a", "internal") if internal else ("site_c", "external")
        patients.append(_patient(pid, site, role))
        for v in range(2 if internal else 1):
            iid = f"{pid}_v{v}"
            if internal:
                rel = f"raw/images/{site}/{pid}/{iid}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (16, 16), color=i).save(root / rel)
                records.append(_record(iid, pid, site, role, rel, 16, v))
            else:
                rel = f"raw/dicom/{site}/{pid}/{iid}.dcm"
                write_dicom(
                    root / rel,
                    np.full((32, 32), float(i)),
                    patient_id=pid,
                    window=(16, 32),
                    pixel_spacing_mm=(0.5, 0.5),
                )
                records.append(_record(iid, pid, site, role, rel, 32, v))
    (root / "raw/records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "raw/patients.jsonl").write_text("".join(json.dumps(p) + "\n" for p in patients))
    return root


def _extra_sources(root):
    """A tiny MedMNIST file (PNGs are written into the manifest) and a VinDr CSV with its PNGs."""
    np.savez_compressed(
        root / "breastmnist.npz",
        train_images=np.zeros((2, 8, 8), np.uint8),
        train_labels=np.array([[0], [1]]),
        test_images=np.ones((1, 8, 8), np.uint8),
        test_labels=np.array([[1]]),
    )
    (root / "vindr/png").mkdir(parents=True)
    Image.new("L", (20, 20)).save(root / "vindr/png/v1.png")
    (root / "vindr/ann.csv").write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\nv1,R1,Nodule/Mass,1,1,5,5\n"
    )
    return [
        {"kind": "xmed_raw", "path": "raw"},
        {
            "kind": "medmnist",
            "path": "breastmnist.npz",
            "flavour": "breastmnist",
            "label_names": {"0": "malignant", "1": "normal"},
        },
        {"kind": "vindr", "path": "vindr/ann.csv", "images_dir": "vindr/png"},
    ]


def test_ingest_end_to_end(data_root):
    out = data_root / "manifest"
    summary = ingest(_extra_sources(data_root), data_root=data_root, out_dir=out, **PARAMS)
    rows = list(iter_parquet_rows(out / "images"))
    n_raw = 2 * N_INTERNAL + N_EXTERNAL
    assert len(rows) == summary["n_images"] == n_raw + 3 + 1
    assert pq.read_schema(next((out / "images").glob("part-*.parquet"))).equals(
        IMAGE_SCHEMA, check_metadata=False
    )
    splits_of: dict[str, set[str]] = {}
    for row in rows:
        rec = ImageRecord.from_dict(row)
        assert rec.image_sha256 == sha256_file(data_root / rec.image_path)  # paths resolve after the rename
        splits_of.setdefault(rec.patient_id, set()).add(rec.split)
        assert (rec.split == "external") == (rec.site_role == "external")
    assert all(len(s) == 1 for s in splits_of.values())  # no patient in two splits
    assert {s for (s,) in splits_of.values()} == {"train", "val", "test", "external"}
    dcm = next(r for r in rows if r["site_role"] == "external")
    assert dcm["image_path"].startswith("manifest/png/site_c/") and (dcm["width"], dcm["height"]) == (16, 16)
    assert dcm["regions"][0]["x2"] == pytest.approx(15.0)  # 30 px at 32 -> 15 px at 16
    assert any(r["image_path"].startswith("manifest/png/medmnist/breastmnist/") for r in rows)

    patients = pq.read_table(out / "patients.parquet")
    assert patients.schema.equals(PATIENT_SCHEMA, check_metadata=False)
    assert patients.num_rows == summary["n_patients"] == N_INTERNAL + N_EXTERNAL
    for p in patients.to_pylist():
        PatientRecord.from_dict(p)
        assert splits_of[p["patient_id"]] == {p["split"]}

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["images_by_split"]["external"] == N_EXTERNAL
    assert summary["images_by_source"] == {"breastmnist": 3, "vindr_cxr": 1, "xmed_synth": n_raw}
    assert summary["images_by_modality"] == {"ct": n_raw, "ultrasound": 3, "xray": 1}
    assert [s["n_images"] for s in summary["sources"]] == [n_raw, 3, 1]
    assert not [p for p in data_root.iterdir() if p.name.startswith(".manifest")]


def test_malformed_record_leaves_no_manifest(data_root):
    lines = (data_root / "raw/records.jsonl").read_text().splitlines()
    bad = json.loads(lines[5])
    bad["regions"][0]["x2"] = 99  # outside the 16x16 image
    lines[5] = json.dumps(bad)
    (data_root / "raw/records.jsonl").write_text("\n".join(lines) + "\n")
    out = data_root / "manifest"
    with pytest.raises(
        SchemaError, match=r"source 0 \(xmed_raw .*raw\): record 6 .* lies outside the 16x16 image"
    ):
        ingest([{"kind": "xmed_raw", "path": "raw"}], data_root=data_root, out_dir=out, **PARAMS)
    assert not out.exists()
    assert not [p for p in data_root.iterdir() if p.name.startswith(".manifest")]


def test_failure_keeps_the_previous_manifest(data_root):
    out = data_root / "manifest"
    ingest([{"kind": "xmed_raw", "path": "raw"}], data_root=data_root, out_dir=out, **PARAMS)
    before = (out / "summary.json").read_text()
    with open(data_root / "raw/records.jsonl", "a") as fh:
        fh.write("{broken\n")
    with pytest.raises(ValueError, match=r"records\.jsonl:\d+: invalid JSON"):
        ingest([{"kind": "xmed_raw", "path": "raw"}], data_root=data_root, out_dir=out, **PARAMS)
    assert (out / "summary.json").read_text() == before


def test_duplicate_image_id_names_both_sources(data_root):
    (data_root / "raw2").mkdir()
    first = (data_root / "raw/records.jsonl").read_text().splitlines()[0]
    (data_root / "raw2/records.jsonl").write_text(first + "\n")
    (data_root / "raw2/patients.jsonl").write_text("")
    sources = [{"kind": "xmed_raw", "path": "raw"}, {"kind": "xmed_raw", "path": "raw2"}]
    with pytest.raises(
        IngestError,
        match=r"source 1 .*raw2\): record 1 .*duplicate image_id 'P000000_v0', "
        r"already read from source 0 \(xmed_raw .*raw\)",
    ):
        ingest(sources, data_root=data_root, out_dir=data_root / "manifest", **PARAMS)


def test_bad_sources_and_inconsistent_inputs(data_root):
    kw = dict(data_root=data_root, out_dir=data_root / "manifest", **PARAMS)
    with pytest.raises(IngestError, match=r"unknown option\(s\) \['flavor'\]"):
        ingest([{"kind": "medmnist", "path": "x.npz", "flavor": "pathmnist"}], **kw)
    with pytest.raises(IngestError, match="source 0: need"):
        ingest([{"kind": "tcia", "path": "x"}], **kw)
    with pytest.raises(IngestError, match="must lie inside data_root"):
        ingest([{"kind": "xmed_raw", "path": "raw"}], **{**kw, "out_dir": data_root.parent / "elsewhere"})
    (data_root / "empty").mkdir()
    (data_root / "empty/records.jsonl").write_text("\n")
    with pytest.raises(IngestError, match="no image records in any source"):
        ingest([{"kind": "xmed_raw", "path": "empty"}], **kw)
    with pytest.raises(ValueError, match="split fractions"):
        ingest([{"kind": "xmed_raw", "path": "raw"}], **{**kw, "val_fraction": 0.6, "test_fraction": 0.5})
    # a record that carries its own split breaks the contract
    lines = (data_root / "raw/records.jsonl").read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "split": "test"})
    (data_root / "raw/records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestError, match="record 1 .*field 'split' is assigned at ingest"):
        ingest([{"kind": "xmed_raw", "path": "raw"}], **kw)


def test_patient_without_record_and_image_size_mismatch(data_root):
    kw = dict(data_root=data_root, out_dir=data_root / "manifest", **PARAMS)
    patients = (data_root / "raw/patients.jsonl").read_text().splitlines()
    (data_root / "raw/patients.jsonl").write_text("\n".join(patients[1:]) + "\n")
    with pytest.raises(
        IngestError, match=r"1 patient\(s\) have images but no patient record, e.g. \['P000000'\]"
    ):
        ingest([{"kind": "xmed_raw", "path": "raw"}], **kw)
    Image.new("L", (17, 16)).save(data_root / "raw/images/hospital_a/P000000/P000000_v0.png")
    with pytest.raises(IngestError, match="record 1 .*is 17x16, record says 16x16"):
        ingest([{"kind": "xmed_raw", "path": "raw"}], **kw)
    assert not (data_root / "manifest").exists()


def test_cli_uses_params_yaml(data_root, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "data:\n  ci:\n    ingest:\n      val_fraction: 0.15\n      test_fraction: 0.15\n"
        "      split_salt: xmed-v1\n      dicom_png_size: 8\n"
    )
    assert main(["--params", str(params), "--profile", "ci", "--root", str(data_root)]) == 0
    summary = json.loads((data_root / "manifest/summary.json").read_text())
    assert summary["params"]["dicom_png_size"] == 8
    assert summary["n_images"] == 2 * N_INTERNAL + N_EXTERNAL
    with pytest.raises(ValueError, match="no data.demo.ingest block"):
        load_params(params, "demo")


def test_repository_params_yaml_parses():
    from pathlib import Path

    p = load_params(Path(__file__).resolve().parents[4] / "params.yaml", "ci")
    assert p.sources == ({"kind": "xmed_raw", "path": "raw"},)
    assert 0 < p.val_fraction < 1 and p.dicom_png_size and p.dicom_png_size > 0
