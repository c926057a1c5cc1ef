"""Tests of model.data.curation: every task builder, prognosis, the streaming stage and its CLI."""

from __future__ import annotations

import copy
import json
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from model.data import curation as cur
from model.data.boxes import parse_boxes
from model.data.io import ShardedParquetWriter, iter_parquet_rows, sha256_file
from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA, TASKS, ImageRecord, InstructionRecord, SchemaError

# ---------------------------------------------------------------------------------------------
# hand-made records
# ---------------------------------------------------------------------------------------------

#: A 200 x 100 pathology tile with two glands (two boxes of one name), stroma and one lesion.
RECORD = {
    "image_id": "img1",
    "source": "synthetic",
    "patient_id": "P1",
    "visit_index": 0,
    "visit_month": 0.0,
    "site": "hospital_a",
    "site_role": "internal",
    "split": "train",
    "modality": "pathology",
    "body_part": "colon",
    "image_path": "raw/images/hospital_a/P1/img1.png",
    "width": 200,
    "height": 100,
    "image_sha256": "0" * 64,
    "diagnosis": "adenocarcinoma",
    "findings": ["gland distortion", "necrosis"],
    "regions": [
        {"name": "gland", "x1": 10, "y1": 20, "x2": 50, "y2": 60},
        {"name": "gland", "x1": 120, "y1": 5, "x2": 180, "y2": 45},
        {"name": "stroma", "x1": 60, "y1": 50, "x2": 110, "y2": 95},
    ],
    "lesions": [
        {
            "lesion_type": "tumour nest",
            "region": "gland",
            "x1": 15,
            "y1": 25,
            "x2": 40,
            "y2": 55,
            "size_mm": 1.2,
            "severity": "severe",
            "mask_path": None,
        },
    ],
    "report_findings": "Distorted glands with necrosis.",
    "report_impression": "Adenocarcinoma.",
    "vqa": [
        {"question": "Is there necrosis?", "answer": "yes", "answer_type": "closed"},
        {"question": "What tissue is shown?", "answer": "colon mucosa", "answer_type": "open"},
    ],
    "mcq": [
        {
            "question": "What is the diagnosis?",
            "options": ["normal", "adenocarcinoma", "adenoma"],
            "answer": "B",
        }
    ],
}
CATALOGUE = {
    "pathology": ["epithelium", "gland", "stroma"],
    "ultrasound": ["liver", "gallbladder", "right kidney"],
}


@pytest.fixture(scope="module")
def picker() -> cur.TemplatePicker:
    return cur.TemplatePicker(cur.load_templates(), seed=7)


def rec(**changes) -> ImageRecord:
    d = copy.deepcopy(RECORD)
    d.update(changes)
    return ImageRecord.from_dict(d)


def typed(rows: list[dict]) -> list[InstructionRecord]:
    """Validate builder rows into typed records (fails on any schema violation)."""
    return [InstructionRecord.from_dict(r) for r in rows]


def typed1(row: dict | None) -> InstructionRecord | None:
    return None if row is None else InstructionRecord.from_dict(row)


def human(inst: InstructionRecord) -> str:
    return inst.conversations[0].value


def gpt(inst: InstructionRecord) -> str:
    return inst.conversations[1].value


def expected_prompt(picker, key, rid, **fields) -> str:
    return "<image>\n" + picker.render(key, rid, **fields)[1]


# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def test_region_detection_two_boxes_exact_text(picker):
    """Two glands in a 200 x 100 image; x scales by 1000/200 = 5, y by 1000/100 = 10:

    gland (10, 20, 50, 60)   -> [10*5, 20*10, 50*5, 60*10]   = [50, 200, 250, 600]
    gland (120, 5, 180, 45)  -> [120*5, 5*10, 180*5, 45*10]  = [600, 50, 900, 450]
    stroma (60, 50, 110, 95) -> [300, 500, 550, 950]
    """
    out = typed(cur.build_region_detection(rec(), picker))
    assert [i.id for i in out] == ["img1:region_detection:0", "img1:region_detection:1"]
    assert gpt(out[0]) == "<ref>gland</ref><box>[[50, 200, 250, 600], [600, 50, 900, 450]]</box>"
    assert gpt(out[1]) == "<ref>stroma</ref><box>[[300, 500, 550, 950]]</box>"
    assert json.loads(out[0].target) == {
        "label": "gland",
        "boxes": [[50, 200, 250, 600], [600, 50, 900, 450]],
    }
    tid, text = picker.render("region_detection", "img1:region_detection:0", region="gland")
    assert human(out[0]) == "<image>\n" + text and out[0].template_id == tid and "gland" in text


def test_region_recognition_box_to_name(picker):
    out = typed(cur.build_region_recognition(rec(), picker))
    assert [gpt(i) for i in out] == ["gland", "gland", "stroma"]
    assert "<box>[[600, 50, 900, 450]]</box>" in human(out[1])
    assert "<ref>" not in human(out[1])  # the name must not leak into the question
    assert json.loads(out[2].target) == {"label": "stroma", "box": [300, 500, 550, 950]}


def test_lesion_detection_groups_lesions_of_one_type(picker):
    """Lesions (15, 25, 40, 55) -> [75, 250, 200, 550]; (150, 10, 170, 30) -> [750, 100, 850, 300]."""
    d = copy.deepcopy(RECORD)
    d["lesions"].append({**d["lesions"][0], "x1": 150, "y1": 10, "x2": 170, "y2": 30})
    (out,) = typed(cur.build_lesion_detection(ImageRecord.from_dict(d), picker))
    assert gpt(out) == "<ref>tumour nest</ref><box>[[75, 250, 200, 550], [750, 100, 850, 300]]</box>"
    assert human(out) == expected_prompt(
        picker, "lesion_detection", out.id, lesion="tumour nest", modality="pathology", body_part="colon"
    )


def test_single_label_modality_body_part_diagnosis(picker):
    out = typed(cur.build_single_label(rec(), picker))
    assert [(json.loads(i.target)["kind"], gpt(i)) for i in out] == [
        ("modality", "histopathology"),
        ("body_part", "colon"),
        ("diagnosis", "adenocarcinoma"),
    ]
    assert json.loads(out[0].target) == {"kind": "modality", "label": "pathology"}
    assert human(out[0]) == expected_prompt(picker, "single_label.modality", "img1:single_label:modality")
    assert len(typed(cur.build_single_label(rec(diagnosis=None), picker))) == 2


def test_multi_label_vqa_mcq_report(picker):
    (ml,) = typed(cur.build_multi_label(rec(), picker))
    assert gpt(ml) == "gland distortion, necrosis" and json.loads(ml.target) == {
        "labels": ["gland distortion", "necrosis"]
    }
    assert typed(cur.build_multi_label(rec(findings=[]), picker)) == []
    closed, open_ = typed(cur.build_vqa(rec(), picker))
    assert (closed.task, gpt(closed), json.loads(closed.target)["answer"]) == ("vqa_closed", "Yes", "yes")
    assert (open_.task, gpt(open_)) == ("vqa_open", "colon mucosa")
    assert "Is there necrosis?" in human(closed) and "What tissue is shown?" in human(open_)
    (mcq,) = typed(cur.build_mcq(rec(), picker))
    assert "A. normal\nB. adenocarcinoma\nC. adenoma" in human(mcq) and gpt(mcq) == "B"
    assert json.loads(mcq.target)["option"] == "adenocarcinoma"
    (rep,) = typed(cur.build_report(rec(), picker))
    assert gpt(rep) == "Findings: Distorted glands with necrosis.\nImpression: Adenocarcinoma."
    assert gpt(typed(cur.build_report(rec(report_findings=None), picker))[0]) == "Impression: Adenocarcinoma."


def test_closed_vqa_with_a_non_yes_no_answer_raises(picker):
    bad = rec(vqa=[{"question": "Is it?", "answer": "maybe", "answer_type": "closed"}])
    with pytest.raises(SchemaError, match=r"img1: vqa\[0\].*'maybe'"):
        cur.build_vqa(bad, picker)


def test_region_vqa_presence_and_abnormality(picker):
    out = typed(cur.build_region_vqa(rec(), picker))
    assert [gpt(i) for i in out[:2]] == ["Yes", "No"]  # the lesion lies in the gland, not the stroma
    assert "<ref>gland</ref><box>[[50, 200, 250, 600], [600, 50, 900, 450]]</box>" in human(out[0])
    abn = out[2]
    assert (
        "<box>[[75, 250, 200, 550]]</box>" in human(abn)
        and "tumour nest" in gpt(abn)
        and "severe" in gpt(abn)
    )
    assert json.loads(abn.target) == {
        "kind": "abnormality",
        "label": "tumour nest",
        "severity": "severe",
        "size_mm": 1.2,
        "region": "gland",
        "box": [75, 250, 200, 550],
    }


def test_guardrail_refuses_a_catalogue_region_absent_from_the_image(picker):
    us = rec(
        modality="ultrasound",
        body_part="abdomen",
        lesions=[],
        regions=[
            {"name": "liver", "x1": 10, "y1": 10, "x2": 90, "y2": 60},
            {"name": "gallbladder", "x1": 100, "y1": 40, "x2": 140, "y2": 80},
        ],
    )
    (g,) = typed(cur.build_guardrail(us, picker, region_names=CATALOGUE["ultrasound"], per_image=3))
    assert gpt(g) == "Sorry, I cannot find the right kidney in the image."
    assert json.loads(g.target) == {"label": "absent", "region": "right kidney", "boxes": []}
    # same prompts as a positive detection request: the prompt gives nothing away
    assert human(g)[len("<image>\n") :] in [
        t.format(region="right kidney") for t in cur.load_templates()["region_detection"]
    ]
    assert (
        typed(cur.build_guardrail(rec(regions=[]), picker, region_names=CATALOGUE["pathology"], per_image=1))
        == []
    )
    (g2,) = typed(cur.build_guardrail(rec(), picker, region_names=CATALOGUE["pathology"], per_image=2))
    assert gpt(g2) == "Sorry, I cannot find the epithelium in the image."


SMALL_CATALOGUE = {
    "ct": ["right lung", "left lung", "heart", "liver"],
    "xray": ["right lung", "trachea"],
    "ultrasound": ["liver", "right kidney"],
    "mri": ["cerebellum"],
    "fundus": ["macula"],
}


def test_guardrail_fallback_pools_skip_overlapping_anatomy():
    """ct overlaps xray (right lung) and ultrasound (liver); xray and ultrasound share nothing."""
    pools = cur.guardrail_fallbacks(SMALL_CATALOGUE)
    assert pools["ct"] == ("cerebellum",)
    assert pools["xray"] == ("cerebellum", "right kidney")  # not liver: a CT (overlapping) name
    assert pools["ultrasound"] == ("cerebellum", "trachea")
    assert pools["fundus"] == (
        "right lung",
        "left lung",
        "heart",
        "liver",
        "cerebellum",
        "trachea",
        "right kidney",
    )
    assert "macula" not in pools["ct"]  # generic/non-organ modalities never feed the pool


def test_guardrail_uses_the_fallback_when_every_region_of_the_modality_is_present(picker):
    boxes = [{"name": n, "x1": 10, "y1": 10, "x2": 60, "y2": 60} for n in SMALL_CATALOGUE["ct"]]
    ct = rec(modality="ct", body_part="chest", regions=boxes, lesions=[])
    pools = cur.guardrail_fallbacks(SMALL_CATALOGUE)
    (g,) = typed(
        cur.build_guardrail(
            ct, picker, region_names=SMALL_CATALOGUE["ct"], per_image=2, fallback_names=pools["ct"]
        )
    )
    assert gpt(g) == "Sorry, I cannot find the cerebellum in the image."
    assert typed(cur.build_guardrail(ct, picker, region_names=SMALL_CATALOGUE["ct"], per_image=2)) == []


def test_all_image_instructions_share_the_image_fields_and_parse(picker):
    out = typed(
        cur.build_image_instructions(
            rec(split="test"), picker, region_names=CATALOGUE["pathology"], guardrail_per_image=1
        )
    )
    assert {i.task for i in out} == set(TASKS) - {"prognosis"}
    assert len({i.id for i in out}) == len(out)
    for i in out:
        assert human(i).startswith("<image>\n") and human(i).count("<image>") == 1
        assert (i.split, i.patient_id, i.site_role, i.modality, i.images) == (
            "test",
            "P1",
            "internal",
            "pathology",
            (RECORD["image_path"],),
        )
        target = json.loads(i.target)
        boxes = [b.as_tuple() for b in parse_boxes(gpt(i))]
        if i.task in ("region_detection", "lesion_detection"):
            assert boxes == [tuple(b) for b in target["boxes"]]
        for text in (human(i), gpt(i)):
            parse_boxes(text)  # strict: raises on any malformed box


def test_template_choice_is_stored_and_deterministic():
    a = typed(
        cur.build_image_instructions(
            rec(), cur.TemplatePicker(cur.load_templates(), 7), region_names=[], guardrail_per_image=0
        )
    )
    b = typed(
        cur.build_image_instructions(
            rec(), cur.TemplatePicker(cur.load_templates(), 7), region_names=[], guardrail_per_image=0
        )
    )
    assert a == b
    templates = cur.load_templates()
    for i in a:
        key = {
            "single_label": f"single_label.{json.loads(i.target).get('kind')}",
            "region_vqa": f"region_vqa.{json.loads(i.target).get('kind')}",
        }.get(i.task, i.task)
        assert 0 <= i.template_id < len(templates[key])


# ---------------------------------------------------------------------------------------------
# prognosis
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "event", "label"),
    [(20, 0, "yes"), (20, 1, "yes"), (14, 1, "no"), (3, 1, "no"), (10, 0, None), (14, 0, None)],
)
def test_survival_label(months, event, label):
    assert cur.survival_label(months, event, 14.0) == label


def test_build_prognosis_multi_visit_prompt(picker):
    v0, v1 = (
        rec(image_id="v0", image_path="a/v0.png"),
        rec(image_id="v1", image_path="a/v1.png", visit_index=1, visit_month=3.0),
    )
    p = cur.PrognosisPatient("lung_tki", "train", "63-year-old male.", 20.0, 1)
    inst = typed1(cur.build_prognosis([v0, v1], p, cur.DEFAULT_LANDMARKS["lung_tki"], picker))
    assert (
        human(inst).startswith("Image-1: <image>\nImage-2: <image>\n") and human(inst).count("<image>") == 2
    )
    assert (
        "14 months" in human(inst) and "63-year-old male." in human(inst) and "months 0 and 3" in human(inst)
    )
    assert "progression" in human(inst)
    assert (inst.images, inst.image_ids, gpt(inst), inst.id) == (
        ("a/v0.png", "a/v1.png"),
        ("v0", "v1"),
        "Yes",
        "P1:prognosis",
    )
    assert json.loads(inst.target) == {
        "cohort": "lung_tki",
        "endpoint": "pfs",
        "landmark_months": 14.0,
        "label": "yes",
        "time_months": 20.0,
        "event": 1,
    }
    assert (
        typed1(
            cur.build_prognosis(
                [v0], p._replace(months=9.0, event=0), cur.DEFAULT_LANDMARKS["lung_tki"], picker
            )
        )
        is None
    )


# ---------------------------------------------------------------------------------------------
# a synthetic manifest
# ---------------------------------------------------------------------------------------------

COHORTS = ("lung_tki", "nsclc", "gbm", "general")


def image_row(i: int, patient: int, visit: int, *, external: bool, split: str, rich: bool = True) -> dict:
    d = copy.deepcopy(RECORD) if rich else {k: RECORD[k] for k in list(RECORD)[:14]}
    site = "site_c" if external else "hospital_a"
    d.update(
        image_id=f"I{i:07d}",
        patient_id=f"P{patient:06d}",
        visit_index=visit,
        visit_month=6.0 * visit,
        site=site,
        site_role="external" if external else "internal",
        split=split,
        image_path=f"raw/images/{site}/P{patient:06d}/I{i:07d}.png",
    )
    return d


def patient_row(patient: int, *, external: bool, split: str) -> dict:
    cohort = COHORTS[patient % 4]
    months, event = (30.0, 0) if patient % 3 == 0 else ((5.0, 0) if patient % 3 == 1 else (8.0, 1))
    return {
        "patient_id": f"P{patient:06d}",
        "site": "site_c" if external else "hospital_a",
        "site_role": "external" if external else "internal",
        "split": split,
        "cohort": cohort,
        "age": 60.0 + patient % 20,
        "sex": "FM"[patient % 2],
        "smoking": "former",
        "tnm_stage": "III",
        "mutation": "EGFR+",
        "treatment": "TKI",
        "os_months": months,
        "os_event": event,
        "pfs_months": months if cohort == "lung_tki" else None,
        "pfs_event": event if cohort == "lung_tki" else None,
        "history": "hypertension",
    }


def make_manifest(
    root: Path, n_images: int, *, visits: int = 2, rich: bool = True, mutate=None, rows_per_file: int = 4096
) -> Path:
    """``root/manifest`` with ``n_images`` images of ``n_images // visits`` patients (1 in 5 external).

    Patient p: cohort COHORTS[p % 4]; p % 3 == 0 -> event-free at 30 months, 1 -> censored at
    5 months (excluded from prognosis), 2 -> event at 8 months. Visits at months 0, 6, 12, ...
    """
    manifest = root / "manifest"
    splits = ("train", "train", "val", "test")
    with (
        ShardedParquetWriter(manifest / "images", IMAGE_SCHEMA, rows_per_shard=rows_per_file) as w,
        ShardedParquetWriter(manifest / "pat", PATIENT_SCHEMA, rows_per_shard=10**9) as wp,
    ):
        for p in range(n_images // visits):
            external = p % 5 == 4
            split = "external" if external else splits[p % 4]
            wp.write(patient_row(p, external=external, split=split))
            for v in range(visits):
                row = image_row(p * visits + v, p, v, external=external, split=split, rich=rich)
                w.write(mutate(row) if mutate else row)
    (manifest / "pat" / "part-00000.parquet").rename(manifest / "patients.parquet")
    (manifest / "pat").rmdir()
    return manifest


def run_curate(manifest: Path, out: Path, **kw) -> dict:
    args = {"seed": 7, "rows_per_shard": 500, "guardrail_per_image": 1, "region_names_by_modality": CATALOGUE}
    return cur.curate(manifest, out_dir=out, **{**args, **kw})


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("data")
    summary = run_curate(make_manifest(root, 80), root / "curated")
    return root / "curated", summary


def test_curate_writes_every_task_and_consistent_manifest(curated):
    out, summary = curated
    rows = list(iter_parquet_rows(out / "shards"))
    assert summary["num_instructions"] == len(rows) == sum(s["rows"] for s in summary["shards"])
    assert len(summary["shards"]) == -(-len(rows) // 500)
    for s in summary["shards"]:
        assert sha256_file(out / s["path"]) == s["sha256"]
        assert pq.ParquetFile(out / s["path"]).metadata.num_rows == s["rows"]
    for task in TASKS:
        assert summary["by_task"][task] == sum(r["task"] == task for r in rows) > 0, task
    assert summary["by_task_split"]["report"]["external"] == sum(
        r["task"] == "report" and r["split"] == "external" for r in rows
    )
    assert json.loads((out / "manifest.json").read_text()) == summary
    assert summary["templates"]["sha256"] == sha256_file(cur.TEMPLATES_PATH)
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows[:300]:
        InstructionRecord.from_dict(r)
    internvl = out / "internvl"
    for split, n in summary["by_split"].items():
        lines = (internvl / f"{split}.jsonl").read_text().splitlines() if n else []
        assert len(lines) == n == summary["internvl"]["files"].get(split, {"rows": 0})["rows"]
    meta = json.loads((internvl / "meta.json").read_text())
    assert meta["xmed_train"]["annotation"] == str(
        out / "internvl" / "train.jsonl"
    )  # the final path, not the temp
    assert meta["xmed_train"]["root"] == str(out.parent)


def test_curate_carries_splits_external_never_in_training(curated):
    out, _ = curated
    rows = list(iter_parquet_rows(out / "shards", columns=["site", "site_role", "split", "patient_id"]))
    assert {r["split"] for r in rows if r["site_role"] == "external"} == {"external"}
    assert {r["site_role"] for r in rows if r["split"] == "train"} == {"internal"}
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())


def test_curate_prognosis_counts_and_exclusions(curated):
    """40 patients (2 visits at months 0 and 6); cohort p % 4, outcome p % 3 (see make_manifest).

    lung_tki p in {0,4,...,36}: p%3==1 censored at 5 months -> {4,16,28} excluded; 7 prompts (per patient).
    nsclc    p in {1,5,...,37}: censored {1,13,25,37} excluded; 6 patients x 2 images = 12 prompts.
    gbm      p in {2,6,...,38}: censored {10,22,34} excluded; 7 prompts.
    """
    out, summary = curated
    prog = summary["prognosis"]
    assert prog["instructions_by_cohort"] == {"lung_tki": 7, "nsclc": 12, "gbm": 7}
    assert prog["excluded_patients"] == {
        c: {"censored_before_landmark": n} for c, n in (("lung_tki", 3), ("nsclc", 4), ("gbm", 3))
    }
    rows = [r for r in iter_parquet_rows(out / "shards") if r["task"] == "prognosis"]
    assert {r["patient_id"] for r in rows}.isdisjoint(
        {f"P{p:06d}" for p in (4, 16, 28, 1, 13, 25, 37, 10, 22, 34)}
    )
    lung = [r for r in rows if json.loads(r["target"])["cohort"] == "lung_tki"]
    assert all(
        len(r["images"]) == 2
        and r["conversations"][0]["value"].startswith("Image-1: <image>\nImage-2: <image>\n")
        for r in lung
    )
    nsclc = [r for r in rows if json.loads(r["target"])["cohort"] == "nsclc"]
    assert all(
        len(r["images"]) == 1 and r["conversations"][0]["value"].startswith("<image>\n") for r in nsclc
    )
    labels = {r["patient_id"]: r["conversations"][1]["value"] for r in lung}
    assert labels["P000000"] == "Yes" and labels["P000008"] == "No"  # 30 months event-free; event at 8


def test_prognosis_never_shows_images_from_or_after_the_landmark(tmp_path):
    """Visits at months 0, 6, 12: gbm (landmark 12) keeps 2 images, lung_tki (landmark 14) keeps 3."""
    run_curate(make_manifest(tmp_path, 36, visits=3, rich=False), tmp_path / "out")
    rows = [r for r in iter_parquet_rows(tmp_path / "out" / "shards") if r["task"] == "prognosis"]
    n_images = {json.loads(r["target"])["cohort"]: len(r["images"]) for r in rows}
    assert n_images == {"lung_tki": 3, "gbm": 2, "nsclc": 1}
    # nsclc patients 1, 5, 9: 1 is censored at 5 months; 5 and 9 give one prompt per image (months 0, 6, 12 < 24)
    assert sum(json.loads(r["target"])["cohort"] == "nsclc" for r in rows) == 2 * 3


def rewrite(manifest: Path, rows: list[dict], dest: Path) -> Path:
    """A copy of ``manifest`` (same patients.parquet) whose images are ``rows``."""
    with ShardedParquetWriter(dest / "images", IMAGE_SCHEMA) as w:
        w.write_many(rows)
    (dest / "patients.parquet").write_bytes((manifest / "patients.parquet").read_bytes())
    return dest


def test_prognosis_rows_of_a_patient_must_be_consecutive_and_in_visit_order(tmp_path):
    manifest = make_manifest(tmp_path, 8, rich=False)
    rows = list(iter_parquet_rows(manifest / "images"))
    interleaved = rewrite(manifest, [rows[0], rows[2], rows[1], *rows[3:]], tmp_path / "m2")
    with pytest.raises(SchemaError, match="patient P000000 are not consecutive"):
        run_curate(interleaved, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    swapped = rewrite(manifest, [rows[1], rows[0], *rows[2:]], tmp_path / "m3")
    with pytest.raises(SchemaError, match="patient P000000 visit_index 0 follows visit 1"):
        run_curate(swapped, tmp_path / "out")


def test_prognosis_slices_of_one_visit_and_patients_without_images(tmp_path):
    """P000000 (lung_tki, one prompt per patient) gets a second slice at visit 0: both slices and
    visit 1 enter its prompt, in manifest order. P000002 (gbm) is removed from the images, so it
    counts as ``no_images``.
    """
    manifest = make_manifest(tmp_path, 8, rich=False)
    rows = list(iter_parquet_rows(manifest / "images"))
    slice_b = {**rows[0], "image_id": "I_slice_b", "image_path": "raw/images/x/I_slice_b.png"}
    kept = [rows[0], slice_b, rows[1], rows[2], rows[3], rows[6], rows[7]]  # rows 4, 5: P000002
    summary = run_curate(rewrite(manifest, kept, tmp_path / "m2"), tmp_path / "out")
    prog = [r for r in iter_parquet_rows(tmp_path / "out" / "shards") if r["task"] == "prognosis"]
    p0 = next(r for r in prog if r["patient_id"] == "P000000")
    assert p0["image_ids"] == ["I0000000", "I_slice_b", "I0000001"]
    assert summary["prognosis"]["excluded_patients"]["gbm"] == {"no_images": 1}


# ---------------------------------------------------------------------------------------------
# errors, atomicity, streaming
# ---------------------------------------------------------------------------------------------


def test_external_site_with_a_training_split_raises(tmp_path):
    def leak(row):
        return {**row, "split": "train"} if row["site_role"] == "external" else row

    with pytest.raises(
        SchemaError,
        match=r"part-00000\.parquet: row 8 \(image I0000008\): site_role 'external' with split 'train'",
    ):
        run_curate(make_manifest(tmp_path, 20, rich=False, mutate=leak), tmp_path / "out", landmarks={})
    assert not (tmp_path / "out").exists()


def test_bad_row_raises_and_leaves_the_previous_output_untouched(tmp_path):
    out = tmp_path / "curated"
    out.mkdir()
    (out / "marker").write_text("previous version")

    def bad_box(row):
        if row["image_id"] == "I0000011":
            row["regions"][0]["x2"] = 999.0  # outside the 200-pixel-wide image
        return row

    with pytest.raises(
        SchemaError, match=r"row 11 \(image I0000011\): regions\[0\]: box .* outside the 200x100 image"
    ):
        run_curate(make_manifest(tmp_path, 20, mutate=bad_box), out)
    assert [p.name for p in out.iterdir()] == ["marker"] and (
        out / "marker"
    ).read_text() == "previous version"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


def _peak_bytes(tmp_path: Path, n_images: int) -> tuple[int, int]:
    # 5 instructions per image (3 single-label, multi-label, report); files of 500 rows (under one
    # read batch) and 1000-row shards: the small run already fills a whole read batch and a whole
    # row group, so any further growth could only be state kept per row
    def lean(row):
        keep = ("diagnosis", "findings", "report_impression")
        return {k: v for k, v in row.items() if k in keep or k in list(RECORD)[:14]}

    manifest = make_manifest(tmp_path / str(n_images), n_images, mutate=lean, rows_per_file=500)
    tracemalloc.start()
    summary = run_curate(manifest, tmp_path / f"out{n_images}", rows_per_shard=1000, landmarks={})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, summary["num_instructions"]


def test_streaming_memory_does_not_grow_with_the_dataset(tmp_path):
    """5k vs 20k instruction rows (1k vs 4k images): the traced peak stays the same."""
    small, n_small = _peak_bytes(tmp_path, 1_000)
    large, n_large = _peak_bytes(tmp_path, 4_000)
    assert (n_small, n_large) == (5_000, 20_000)
    assert large < 1.25 * small, (small, large)


def test_prognosis_lookup_keeps_only_cohort_patients(tmp_path):
    manifest = make_manifest(tmp_path, 40, rich=False)
    lookup = cur.load_prognosis_patients(manifest / "patients.parquet", cur.DEFAULT_LANDMARKS)
    assert sorted(lookup) == [f"P{p:06d}" for p in range(20) if p % 4 != 3]  # not the 'general' cohort
    assert lookup["P000000"] == cur.PrognosisPatient(
        "lung_tki",
        "train",
        "60-year-old female; smoking: former; TNM stage: III; mutation: EGFR+; treatment: TKI; "
        "history: hypertension.",
        30.0,
        0,
    )


# ---------------------------------------------------------------------------------------------
# CLI and throughput
# ---------------------------------------------------------------------------------------------


def test_cli_reads_the_profile_params_and_writes_curated(tmp_path, capsys):
    make_manifest(tmp_path / "data", 20)
    params = {"data": {"ci": {"curate": {"seed": 3, "rows_per_shard": 100, "guardrail_per_image": 2}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert (
        cur.main(
            ["--params", str(tmp_path / "params.yaml"), "--profile", "ci", "--root", str(tmp_path / "data")]
        )
        == 0
    )
    summary = json.loads((tmp_path / "data" / "curated" / "manifest.json").read_text())
    assert summary["seed"] == 3 and summary["guardrail_per_image"] == 2 and summary["rows_per_shard"] == 100
    meta = json.loads((tmp_path / "data" / "curated" / "internvl" / "meta.json").read_text())
    assert meta["xmed_train"]["root"] == str(tmp_path / "data")
    assert json.loads(capsys.readouterr().out)["num_instructions"] == summary["num_instructions"]
    params["data"]["ci"]["curate"]["typo"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"data\.ci\.curate: unknown keys \['typo'\]"):
        cur.main(
            ["--params", str(tmp_path / "params.yaml"), "--profile", "ci", "--root", str(tmp_path / "data")]
        )


@pytest.mark.slow
def test_throughput_tens_of_thousands_of_pairs_per_second(tmp_path):
    """CPU time of the whole stage (validation, 12 task families, shards, InternVL export, hashes)."""
    manifest = make_manifest(tmp_path, 10_000)
    t0 = time.process_time()
    summary = run_curate(manifest, tmp_path / "out", rows_per_shard=100_000)
    rate = summary["num_instructions"] / (time.process_time() - t0)
    print(f"{summary['num_instructions']} pairs at {rate:,.0f} pairs per CPU second")
    assert rate > 5_000
