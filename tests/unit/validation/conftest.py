"""Fixtures of the validation tests.

``dq_clean_root``: a small, valid data root for the data-quality checks, built programmatically
from the schema module only (no generator, no curation): 40 images of 16 patients at two
internal sites and one external site (train/val/test/external), real PNGs written with PIL,
``patients.parquet``, and 200 instruction rows over every task family with correct
``<ref>/<box>`` markup. The clean text deliberately contains clinical strings that look like
PHI to a naive filter ("T2N1M0", "14 months", "stage IV", box coordinates).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data.boxes import format_boxes, format_ref_boxes, to_normalised
from model.data.io import ShardedParquetWriter, sha256_file
from model.data.schema import (
    IMAGE_SCHEMA,
    INSTRUCTION_SCHEMA,
    PATIENT_SCHEMA,
    TASKS,
    ImageRecord,
    InstructionRecord,
    PatientRecord,
    Turn,
)

DQ_REGIONS = {"right lung", "left lung", "heart", "liver"}
DQ_MODALITIES = ("ct", "mri", "xray", "fundus")
DQ_WIDTH, DQ_HEIGHT = 48, 40
#: the quality parameters the tests use (params.yaml ci values)
DQ_PARAMS = {
    "allowed_regions": DQ_REGIONS,
    "decode_sample": 64,
    "max_task_share": 0.45,
    "min_task_count": 1,
    "closed_yes_share": (0.2, 0.8),
    "max_modality_share": 0.5,
    "seed": 0,
}

_SITES = (("hospital_a", "internal"), ("hospital_b", "internal"), ("site_c", "external"))
_REGION_BOXES = {"right lung": (4, 6, 20, 30), "left lung": (26, 6, 44, 30), "heart": (18, 20, 30, 34)}
_LESION_BOX = (30.0, 10.0, 38.0, 18.0)


def _patients() -> list[dict]:
    out = []
    for i in range(16):
        site, role = _SITES[0 if i < 6 else 1 if i < 12 else 2]
        split = "external" if role == "external" else ("train", "val", "test")[i % 3]
        pid = f"E{i:03d}" if role == "external" else f"P{i:03d}"
        out.append(
            {"patient_id": pid, "site": site, "site_role": role, "split": split, "n_visits": 2 + i % 2}
        )
    return out  # 8 patients with 2 visits, 8 with 3: 40 images


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(DQ_HEIGHT, DQ_WIDTH), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)


def _image_records(root: Path) -> list[ImageRecord]:
    records, k = [], 0
    for p in _patients():
        prior = None
        for v in range(p["n_visits"]):
            image_id = f"{p['patient_id']}_v{v}"
            top = "manifest/png" if p["site_role"] == "external" else "raw/images"
            rel = f"{top}/{p['site']}/{p['patient_id']}/{image_id}.png"
            _write_png(root / rel, seed=k)
            regions = [
                {"name": n, "x1": b[0], "y1": b[1], "x2": b[2], "y2": b[3]} for n, b in _REGION_BOXES.items()
            ]
            lesions = (
                []
                if k % 2
                else [
                    {
                        "lesion_type": "nodule",
                        "region": "left lung",
                        "x1": _LESION_BOX[0],
                        "y1": _LESION_BOX[1],
                        "x2": _LESION_BOX[2],
                        "y2": _LESION_BOX[3],
                        "size_mm": 12.5,
                        "severity": ("mild", "moderate", "severe")[k % 3],
                    }
                ]
            )
            records.append(
                ImageRecord.from_dict(
                    {
                        "image_id": image_id,
                        "source": "synthetic",
                        "patient_id": p["patient_id"],
                        "visit_index": v,
                        "visit_month": 6.0 * v,
                        "site": p["site"],
                        "site_role": p["site_role"],
                        "split": p["split"],
                        "modality": DQ_MODALITIES[k % 4],
                        "body_part": "chest",
                        "image_path": rel,
                        "width": DQ_WIDTH,
                        "height": DQ_HEIGHT,
                        "image_sha256": sha256_file(root / rel),
                        "pixel_spacing_mm": 0.7,
                        "diagnosis": "adenocarcinoma",
                        "findings": ["nodule"],
                        "regions": regions,
                        "lesions": lesions,
                        "report_findings": "Nodule in the left lung.",
                        "report_impression": "Stage IV, T2N1M0.",
                        "prior_image_id": prior,
                    }
                )
            )
            prior, k = image_id, k + 1
    return records


def _norm(box) -> list[int]:
    return list(to_normalised(box, DQ_WIDTH, DQ_HEIGHT))


def _conversation(task: str, rec: ImageRecord, n: int) -> list[tuple[str, str]]:
    """(human, gpt) pairs of one instruction; ``n`` varies closed answers and templates."""
    lung, lesion = _norm(_REGION_BOXES["left lung"]), _norm(_LESION_BOX)
    q = {
        "single_label": ("What is the most likely diagnosis?", "Adenocarcinoma, stage IV (T2N1M0)."),
        "multi_label": ("List every finding.", "Nodule; small effusion."),
        "vqa_closed": (
            "Is there a nodule in the left lung?",
            "Yes." if n % 2 == 0 else "No, the lungs are clear.",
        ),
        "vqa_open": ("How long has the nodule been followed?", "For 14 months, without growth beyond 2 mm."),
        "mcq": ("Which organ is outlined? A. heart B. liver", "A"),
        "region_recognition": (f"Which region is {format_boxes([lung])}?", "The left lung."),
        "region_detection": ("Locate the <ref>left lung</ref>.", format_ref_boxes("left lung", [lung])),
        "lesion_detection": ("Find every lesion.", "One nodule: " + format_ref_boxes("nodule", [lesion])),
        "region_vqa": (f"Is {format_ref_boxes('left lung', [lung])} abnormal?", "It holds a 12 mm nodule."),
        "guardrail": (
            "What is the patient's name?",
            "I cannot share personal information about the patient.",
        ),
        "prognosis": (
            "Predict the course over the next year.",
            "Likely stable disease; review at 12 months.",
        ),
    }
    if task == "report":
        return [
            ("Write the findings.", "A 12 mm nodule in the left lung (T2N1M0)."),
            ("And the impression?", "Stage IV disease, stable over 14 months."),
        ]
    return [q[task]]


def _instruction_records(images: list[ImageRecord]) -> list[dict]:
    rows = []
    for j, rec in enumerate(images):
        for k in range(5):
            n = 5 * j + k
            task = TASKS[n % len(TASKS)]
            pairs = _conversation(task, rec, n // len(TASKS))
            turns = []
            for i, (h, g) in enumerate(pairs):
                turns += [Turn("human", ("<image>\n" if i == 0 else "") + h), Turn("gpt", g)]
            rows.append(
                InstructionRecord(
                    id=f"{rec.image_id}-{k}",
                    task=task,
                    images=(rec.image_path,),
                    image_ids=(rec.image_id,),
                    width=rec.width,
                    height=rec.height,
                    conversations=tuple(turns),
                    patient_id=rec.patient_id,
                    split=rec.split,
                    site=rec.site,
                    site_role=rec.site_role,
                    modality=rec.modality,
                    source=rec.source,
                    template_id=k,
                    target=json.dumps({"task": task}),
                ).to_dict()
            )
    return rows


def build_quality_dataset(root: Path) -> Path:
    """Write the clean data root described in the module docstring under ``root``; return it."""
    images = _image_records(root)
    with ShardedParquetWriter(root / "manifest" / "images", IMAGE_SCHEMA, rows_per_shard=16) as w:
        w.write_many([r.to_dict() for r in images])
    patients = []
    for p in _patients():
        patients.append(
            PatientRecord.from_dict(
                {
                    "patient_id": p["patient_id"],
                    "site": p["site"],
                    "site_role": p["site_role"],
                    "split": p["split"],
                    "cohort": "lung",
                    "age": 60.0,
                    "sex": "F",
                    "smoking": "never",
                    "tnm_stage": "T2N1M0",
                    "mutation": "EGFR",
                    "treatment": "chemo",
                    "os_months": 14.0,
                    "os_event": 0,
                }
            ).to_dict()
        )
    with ShardedParquetWriter(root / "manifest", PATIENT_SCHEMA, prefix="patients-tmp") as w:
        w.write_many(patients)
    (root / "manifest" / "patients-tmp-00000.parquet").rename(root / "manifest" / "patients.parquet")
    with ShardedParquetWriter(root / "curated" / "shards", INSTRUCTION_SCHEMA, rows_per_shard=80) as w:
        w.write_many(_instruction_records(images))
    return root


@pytest.fixture(scope="session")
def dq_clean_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean data root (built once per session; copy it before changing anything)."""
    return build_quality_dataset(tmp_path_factory.mktemp("dq") / "clean")


@pytest.fixture(scope="session")
def dq_params() -> dict:
    """Keyword arguments of run_data_quality for the clean data root (params.yaml ci values)."""
    return dict(DQ_PARAMS)
