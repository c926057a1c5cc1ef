"""Tests of model.reasoning: the 5-step answer, its format checks, the writers and the dataset stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import reasoning as rs
from model.data.boxes import parse_boxes
from model.data.curation import TemplatePicker
from model.data.io import ShardedParquetWriter, iter_parquet_rows
from model.data.schema import (
    IMAGE_SCHEMA,
    PATIENT_SCHEMA,
    ImageRecord,
    InstructionRecord,
    PatientRecord,
    SchemaError,
)

# ---------------------------------------------------------------------------------------------
# hand-made records: a 200 x 100 chest X-ray of patient A at two visits, a CT of patient B
# ---------------------------------------------------------------------------------------------

FINDINGS = (
    "There is mild pneumothorax in the right lung, measuring 30 mm. There is moderate consolidation "
    "in the left lung, measuring 15 mm. No nodule is seen."
)
IMPRESSION = (
    "Mild pneumothorax in the right lung; Moderate consolidation in the left lung. Compared with the "
    "prior study, the pneumothorax in the right lung has increased in size (20 mm to 30 mm)."
)
PRIOR_FINDINGS = (
    "There is mild pneumothorax in the right lung, measuring 20 mm. "
    "There is a mild nodule in the left lung, measuring 8.5 mm."
)
PRIOR_IMPRESSION = "Mild pneumothorax in the right lung; Mild nodule in the left lung."


def _lesion(kind: str, region: str, box: tuple, size: float, severity: str) -> dict:
    x1, y1, x2, y2 = box
    return {
        "lesion_type": kind,
        "region": region,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "size_mm": size,
        "severity": severity,
        "mask_path": None,
    }


BASE = {
    "image_id": "PA_v1_xray",
    "source": "test",
    "patient_id": "PA",
    "visit_index": 1,
    "visit_month": 3.5,
    "site": "hospital_a",
    "site_role": "internal",
    "split": "train",
    "modality": "xray",
    "body_part": "chest",
    "image_path": "raw/images/hospital_a/PA/PA_v1_xray.png",
    "width": 200,
    "height": 100,
    "image_sha256": "0" * 64,
    "pixel_spacing_mm": 2.0,
    "diagnosis": "pneumothorax",
    "findings": ["pneumothorax", "consolidation"],
    "regions": [
        {"name": "right lung", "x1": 20, "y1": 10, "x2": 100, "y2": 90},
        {"name": "left lung", "x1": 110, "y1": 10, "x2": 190, "y2": 90},
        {"name": "heart", "x1": 90, "y1": 40, "x2": 140, "y2": 95},
    ],
    "lesions": [
        _lesion("pneumothorax", "right lung", (40, 20, 60, 40), 30.0, "mild"),
        _lesion("consolidation", "left lung", (120, 30, 150, 60), 15.0, "moderate"),
    ],
    "report_findings": FINDINGS,
    "report_impression": IMPRESSION,
    "prior_image_id": "PA_v0_xray",
}
PRIOR_CHANGES = {
    "image_id": "PA_v0_xray",
    "visit_index": 0,
    "visit_month": 0.0,
    "image_path": "raw/images/hospital_a/PA/PA_v0_xray.png",
    "lesions": [
        _lesion("pneumothorax", "right lung", (40, 20, 56, 36), 20.0, "mild"),
        _lesion("nodule", "left lung", (160, 20, 170, 30), 8.5, "mild"),
    ],
    "report_findings": PRIOR_FINDINGS,
    "report_impression": PRIOR_IMPRESSION,
    "prior_image_id": None,
}
CT_CHANGES = {
    "image_id": "PB_v0_ct",
    "patient_id": "PB",
    "visit_index": 0,
    "visit_month": 0.0,
    "modality": "ct",
    "image_path": "raw/images/hospital_b/PB/PB_v0_ct.png",
    "site": "hospital_b",
    "width": 64,
    "height": 64,
    "regions": [{"name": "liver", "x1": 8, "y1": 30, "x2": 30, "y2": 60}],
    "lesions": [],
    "findings": ["normal"],
    "diagnosis": "normal",
    "report_findings": "The lungs are clear and the mediastinum is unremarkable. No nodule is seen.",
    "report_impression": "Normal CT examination.",
    "prior_image_id": None,
}
PATIENTS = {
    "PA": {
        "patient_id": "PA",
        "site": "hospital_a",
        "site_role": "internal",
        "split": "train",
        "cohort": "general",
        "age": 61.0,
        "sex": "M",
        "smoking": "current",
        "tnm_stage": "I",
        "mutation": "none",
        "treatment": "none",
        "os_months": 30.0,
        "os_event": 0,
        "chief_complaint": "cough with fever",
        "history": "61-year-old man, current smoker, referred for X-ray.",
    },
    "PB": {
        "patient_id": "PB",
        "site": "hospital_b",
        "site_role": "internal",
        "split": "train",
        "cohort": "nsclc",
        "age": 70.0,
        "sex": "F",
        "smoking": "former",
        "tnm_stage": "II",
        "mutation": "EGFR-",
        "treatment": "surgery",
        "os_months": 12.0,
        "os_event": 1,
        "chief_complaint": "chest pain",
        "history": "70-year-old woman, former smoker, with stage II non-small cell lung cancer.",
    },
}


def rec(**changes) -> ImageRecord:
    d = copy.deepcopy(BASE)
    d.update(copy.deepcopy(changes))
    return ImageRecord.from_dict(d)


def patient(pid: str = "PA", **changes) -> PatientRecord:
    return PatientRecord.from_dict({**PATIENTS[pid], **changes})


CURRENT, PRIOR = rec(), rec(**PRIOR_CHANGES)


# ---------------------------------------------------------------------------------------------
# the deterministic answer
# ---------------------------------------------------------------------------------------------


def test_five_steps_present_in_order_with_titles():
    answer = rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    steps = rs.validate_reasoning(answer)
    assert list(steps) == [1, 2, 3, 4, 5]
    lines = answer.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("Step ")]
    assert [lines[i].split(":")[0] for i in heads] == [f"Step {k}" for k in range(1, 6)]
    for k in range(1, 5):
        assert lines[heads[k - 1]] == f"Step {k}: {rs.STEP_TITLES[k]}."
    assert lines[-1].startswith("Step 5: Final report: There is mild pneumothorax")
    assert steps[1] == (  # a body is everything after "Step k:", title included
        "Identify the anatomical structures.\n"
        "This is a chest X-ray image. Visible structures: right lung, left lung, heart."
    )


def test_boxes_parse_to_hand_computed_coordinates():
    """200 x 100 image: x scales by 1000/200 = 5, y by 1000/100 = 10.

    right lung (20, 10, 100, 90)   -> [100, 100, 500, 900]
    left lung (110, 10, 190, 90)   -> [550, 100, 950, 900]
    heart (90, 40, 140, 95)        -> [450, 400, 700, 950]
    pneumothorax (40, 20, 60, 40)  -> [200, 200, 300, 400]
    consolidation (120, 30, 150, 60) -> [600, 300, 750, 600]
    """
    answer = rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    steps = rs.validate_reasoning(answer)
    step2 = [(b.name, b.as_tuple()) for b in parse_boxes(steps[2])]
    assert step2 == [
        ("right lung", (100, 100, 500, 900)),
        ("left lung", (550, 100, 950, 900)),
        ("heart", (450, 400, 700, 950)),
    ]
    step3 = [(b.name, b.as_tuple()) for b in parse_boxes(steps[3])]
    assert step3 == [("pneumothorax", (200, 200, 300, 400)), ("consolidation", (600, 300, 750, 600))]
    assert "- right lung: mild pneumothorax measuring 30 mm, <ref>pneumothorax</ref>" in steps[3]
    assert "- heart: no abnormality is seen." in steps[3]
    assert len(parse_boxes(answer)) == 5  # strict parse of the whole answer


def test_step5_equals_the_reference_report():
    answer = rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    expected = f"{FINDINGS} Impression: {IMPRESSION}"
    assert rs.reference_report(CURRENT) == expected
    assert rs.step5_report(answer) == expected
    assert answer.endswith(f"Step 5: Final report: {expected}")


def test_step4_uses_prior_report_history_and_complaint():
    steps = rs.validate_reasoning(rs.build_reasoning_answer(CURRENT, patient(), PRIOR))
    step4 = steps[4]
    assert "Patient history: 61-year-old man, current smoker, referred for X-ray." in step4
    assert "Chief complaint: cough with fever." in step4
    assert (
        f"Prior study (month 0, 3.5 months earlier): {PRIOR_FINDINGS} Impression: {PRIOR_IMPRESSION}" in step4
    )
    # 20 mm -> 30 mm is +50%; the consolidation is new; the prior nodule is gone
    assert (
        "The pneumothorax in the right lung measured 20 mm on the prior study and measures 30 mm now (+50%)."
        in step4
    )
    assert "The consolidation in the left lung is new since the prior study." in step4
    assert "The nodule in the left lung seen on the prior study is not seen now." in step4
    assert "The largest is the pneumothorax in the right lung (30 mm)." in step4


def test_step4_without_prior_or_patient():
    steps = rs.validate_reasoning(rs.build_reasoning_answer(CURRENT, None, None))
    assert "No patient history is available." in steps[4]
    assert "No chief complaint is recorded." in steps[4]
    assert "No prior study is available for comparison." in steps[4]
    assert "Prior study" not in steps[4] and PRIOR_FINDINGS not in steps[4]


def test_normal_record_and_missing_report():
    ct = rec(**CT_CHANGES)
    steps = rs.validate_reasoning(rs.build_reasoning_answer(ct, patient("PB"), None))
    assert "the examination is normal" in steps[4]
    assert steps[5] == f"Final report: {CT_CHANGES['report_findings']} Impression: Normal CT examination."
    with pytest.raises(SchemaError, match="PB_v0_ct: field 'report_findings' is missing"):
        rs.build_reasoning_answer(rec(**{**CT_CHANGES, "report_findings": None}), None, None)


# ---------------------------------------------------------------------------------------------
# format checks
# ---------------------------------------------------------------------------------------------

GOOD = "Step 1: a\nStep 2: b\nStep 3: c\nStep 4: d\nStep 5: Final report: No pneumothorax."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("Step 3: c\n", ""), r"missing step\(s\) \[3\]"),
        ("Step 2: b\nStep 1: a\nStep 3: c\nStep 4: d\nStep 5: Final report: x", "out of order"),
        (GOOD + "\nStep 6: more", r"unexpected step\(s\) \[6\]"),
        (GOOD.replace("Step 4: d", "Step 4: d\nStep 2: again"), "step 2 appears more than once"),
        (GOOD.replace("Step 2: b", "Step 2:"), r"empty step\(s\) \[2\]"),
        (GOOD.replace("Final report: No pneumothorax.", "Final report:"), "no final report text"),
        ("The lungs are clear.", r"missing step\(s\) \[1, 2, 3, 4, 5\]"),
    ],
)
def test_validate_reasoning_rejects(text, message):
    with pytest.raises(rs.ReasoningFormatError, match=message):
        rs.validate_reasoning(text)


def test_parse_accepts_markdown_headers_and_step5_alone():
    text = (
        "**Step 1:** structures\n## Step 2: boxes\n- Step 3) regions\nStep 4. analysis\n"
        "**Step 5: Final report:** Small effusion."
    )
    assert list(rs.validate_reasoning(text)) == [1, 2, 3, 4, 5]
    assert rs.step5_report(text) == "Small effusion."
    assert rs.step5_report("Some preamble.\nStep 5: Final report: Normal study.") == "Normal study."
    assert rs.step5_report("Step 5: Cardiomegaly.") == "Cardiomegaly."  # the label is optional
    with pytest.raises(rs.ReasoningFormatError, match="no 'Step 5:' header"):
        rs.step5_report("Step 1: a\nStep 2: b")
    # "step 5" inside a sentence is not a header
    with pytest.raises(rs.ReasoningFormatError):
        rs.step5_report("As noted in step 5: nothing.")


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


class FakeLLM:
    """Records prompts; answers with ``reply(prompt)``."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def __call__(self, prompt: str):
        self.prompts.append(prompt)
        return self.reply(prompt)


def test_llm_writer_good_output_and_prompt():
    def rewrite(prompt: str) -> str:  # a "model" that returns the draft with friendlier wording
        return prompt.split("Draft:\n", 1)[1].replace("no abnormality is seen", "appears normal") + "\n"

    fake = FakeLLM(rewrite)
    writer = rs.LLMReasoningWriter(fake)
    out = writer.write(CURRENT, patient(), PRIOR)
    assert len(fake.prompts) == 1
    assert rs.build_reasoning_answer(CURRENT, patient(), PRIOR) in fake.prompts[0]
    assert f"Reference report: {rs.reference_report(CURRENT)}" in fake.prompts[0]
    assert "- heart: appears normal." in out and not out.endswith("\n")
    assert rs.step5_report(out) == rs.reference_report(CURRENT)
    assert writer.name == "llm"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (lambda p: "Step 1: a\nStep 2: b\nStep 4: d\nStep 5: Final report: x", r"missing step\(s\) \[3\]"),
        (lambda p: "The report is normal.", "missing step"),
        (lambda p: None, "returned NoneType, not text"),
    ],
)
def test_llm_writer_rejects_bad_output(reply, message):
    writer = rs.LLMReasoningWriter(FakeLLM(reply))
    with pytest.raises(rs.ReasoningFormatError, match=f"image PA_v1_xray: .*{message}"):
        writer.write(CURRENT, patient(), PRIOR)


def test_llm_writer_template_checks():
    with pytest.raises(ValueError, match="must contain {draft}"):
        rs.LLMReasoningWriter(lambda p: p, "Write a report for {reference_report}")
    with pytest.raises(ValueError, match="got \\['draft', 'patient'\\]"):
        rs.LLMReasoningWriter(lambda p: p, "{draft} {patient}")
    with pytest.raises(TypeError):
        rs.LLMReasoningWriter("not callable")  # type: ignore[arg-type]
    writer = rs.LLMReasoningWriter(lambda p: p, "Rewrite:\n{draft}", name="gpt-4o")
    assert writer.prompt(CURRENT, None, None) == "Rewrite:\n" + rs.build_reasoning_answer(CURRENT, None, None)


def test_row_prompt_and_target():
    picker = TemplatePicker({"reasoning": rs.REASONING_REQUESTS}, 0)
    row = rs.build_reasoning_row(
        CURRENT, patient(), PRIOR, writer=rs.DeterministicReasoningWriter(), picker=picker
    )
    inst = InstructionRecord.from_dict(row)
    human, gpt = inst.conversations[0].value, inst.conversations[1].value
    assert human.startswith("<image>\n") and human.count("<image>") == 1
    assert "Patient history: 61-year-old man" in human and "Chief complaint: cough with fever." in human
    assert f"Prior report (month 0): {PRIOR_FINDINGS}" in human
    assert inst.task == "report" and inst.id == "PA_v1_xray:reasoning:0"
    assert gpt == rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    target = json.loads(inst.target)
    assert target["step5"] == target["reference_report"] == rs.reference_report(CURRENT)
    assert target["prior_image_id"] == "PA_v0_xray" and target["writer"] == "deterministic"


# ---------------------------------------------------------------------------------------------
# the dataset stage on a hand-made 3-image manifest
# ---------------------------------------------------------------------------------------------


def write_manifest(
    root: Path, records: list[ImageRecord], patients: list[dict], *, touch: bool = True
) -> Path:
    manifest = root / "manifest"
    with ShardedParquetWriter(manifest / "images", IMAGE_SCHEMA) as w:
        for r in records:
            w.write(r.to_dict())
            if touch:
                (root / r.image_path).parent.mkdir(parents=True, exist_ok=True)
                (root / r.image_path).write_bytes(b"png")
    rows = [{**p, "pfs_months": None, "pfs_event": None} for p in patients]
    pq.write_table(pa.Table.from_pylist(rows, schema=PATIENT_SCHEMA), manifest / "patients.parquet")
    return manifest


THREE = [PRIOR, CURRENT, rec(**CT_CHANGES)]


def test_dataset_build_three_images(tmp_path):
    manifest = write_manifest(tmp_path, THREE, list(PATIENTS.values()))
    out = tmp_path / "reasoning" / "train.parquet"
    summary = rs.build_reasoning_dataset(manifest, out_path=out, data_root=tmp_path, split="train")
    rows = list(iter_parquet_rows(out))
    assert [r["id"] for r in rows] == [
        "PA_v0_xray:reasoning:0",
        "PA_v1_xray:reasoning:0",
        "PB_v0_ct:reasoning:0",
    ]
    insts = [InstructionRecord.from_dict(r) for r in rows]
    targets = [json.loads(i.target) for i in insts]
    assert [t["prior_image_id"] for t in targets] == [None, "PA_v0_xray", None]
    assert insts[1].conversations[1].value == rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    assert insts[2].conversations[1].value == rs.build_reasoning_answer(THREE[2], patient("PB"), None)
    assert "Prior report" in insts[1].conversations[0].value
    assert "Prior report" not in insts[0].conversations[0].value
    assert summary["num_rows"] == 3 and summary["with_prior"] == 1 and summary["with_history"] == 3
    assert summary["by_modality"] == {"ct": 1, "xray": 2}
    assert summary["skipped"] == {"other_split": 0, "other_modality": 0, "no_report": 0}
    # deterministic: a rebuild gives the same bytes
    again = rs.build_reasoning_dataset(manifest, out_path=out, data_root=tmp_path, split="train")
    assert again["sha256"] == summary["sha256"]
    only_ct = rs.build_reasoning_dataset(
        manifest, out_path=out, data_root=tmp_path, split="train", modalities=("ct",)
    )
    assert only_ct["num_rows"] == 1 and only_ct["skipped"]["other_modality"] == 2


def test_dataset_prior_is_same_modality_previous_visit(tmp_path):
    """Patient A: xray v0, ct v1, two xray images of v2 -> both v2 priors are xray v0.

    Not the ct (another modality), not the other image of the same visit.
    """
    ct_a = rec(
        **{
            **CT_CHANGES,
            "patient_id": "PA",
            "image_id": "PA_v1_ct",
            "visit_index": 1,
            "visit_month": 1.0,
            "image_path": "raw/images/hospital_a/PA/PA_v1_ct.png",
        }
    )
    xr2 = rec(image_id="PA_v2_xray", visit_index=2, image_path="raw/images/hospital_a/PA/PA_v2_xray.png")
    xr2b = rec(image_id="PA_v2b_xray", visit_index=2, image_path="raw/images/hospital_a/PA/PA_v2b_xray.png")
    manifest = write_manifest(tmp_path, [PRIOR, ct_a, xr2, xr2b], [PATIENTS["PA"]])
    out = tmp_path / "r.parquet"
    rs.build_reasoning_dataset(manifest, out_path=out, split="train")  # data_root: the manifest's parent
    targets = {r["id"]: json.loads(r["target"]) for r in iter_parquet_rows(out)}
    assert targets["PA_v2_xray:reasoning:0"]["prior_image_id"] == "PA_v0_xray"
    assert targets["PA_v2b_xray:reasoning:0"]["prior_image_id"] == "PA_v0_xray"
    assert targets["PA_v1_ct:reasoning:0"]["prior_image_id"] is None


def test_dataset_with_fake_llm_writer(tmp_path):
    manifest = write_manifest(tmp_path, THREE, list(PATIENTS.values()))
    fake = FakeLLM(lambda prompt: prompt.split("Draft:\n", 1)[1])
    out = tmp_path / "r.parquet"
    summary = rs.build_reasoning_dataset(
        manifest, out_path=out, split="train", writer=rs.LLMReasoningWriter(fake, name="fake-llm")
    )
    assert summary["writer"] == "fake-llm" and len(fake.prompts) == 3
    assert {json.loads(r["target"])["writer"] for r in iter_parquet_rows(out)} == {"fake-llm"}


@pytest.mark.parametrize(
    ("records", "patients", "error", "message"),
    [
        (
            [PRIOR, rec(**CT_CHANGES), CURRENT],
            PATIENTS,
            SchemaError,
            "rows of patient PA are not consecutive",
        ),
        ([CURRENT, PRIOR], PATIENTS, SchemaError, "visit_index 0 follows visit 1"),
        (THREE, {"PA": PATIENTS["PA"]}, SchemaError, "patient PB .* has no row of that split"),
        ([rec(**CT_CHANGES, split="val")], PATIENTS, ValueError, "no image of split 'train'"),
    ],
)
def test_dataset_errors_leave_previous_output(tmp_path, records, patients, error, message):
    manifest = write_manifest(tmp_path, records, list(patients.values()))
    out = tmp_path / "reasoning" / "train.parquet"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(error, match=message):
        rs.build_reasoning_dataset(manifest, out_path=out, split="train")
    assert out.read_bytes() == b"previous" and sorted(p.name for p in out.parent.iterdir()) == [
        "train.parquet"
    ]


def test_dataset_missing_image_file_and_bad_args(tmp_path):
    manifest = write_manifest(tmp_path, THREE, list(PATIENTS.values()), touch=False)
    out = tmp_path / "r.parquet"
    with pytest.raises(FileNotFoundError, match="row 0 \\(image PA_v0_xray\\): field 'image_path'"):
        rs.build_reasoning_dataset(manifest, out_path=out, split="train")
    assert not out.exists()
    with pytest.raises(ValueError, match="split must be one of"):
        rs.build_reasoning_dataset(manifest, out_path=out, split="training")
    with pytest.raises(ValueError, match="modalities must be"):
        rs.build_reasoning_dataset(manifest, out_path=out, split="train", modalities=("xrays",))
    with pytest.raises(FileNotFoundError, match="patients.parquet not found"):
        rs.build_reasoning_dataset(tmp_path / "nowhere", out_path=out, split="train")


def test_cli(tmp_path, capsys):
    manifest = write_manifest(tmp_path, THREE, list(PATIENTS.values()))
    out = tmp_path / "reasoning" / "train.parquet"
    assert rs.main(["--manifest", str(manifest), "--out", str(out), "--split", "train", "--seed", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_rows"] == 3 and summary["seed"] == 3 and out.is_file()


def test_concise_style_keeps_steps_boxes_and_report_in_fewer_words():
    full = rs.build_reasoning_answer(CURRENT, patient(), PRIOR)
    concise = rs.build_reasoning_answer(CURRENT, patient(), PRIOR, style="concise")
    steps, full_steps = rs.validate_reasoning(concise), rs.validate_reasoning(full)
    assert steps[1] == full_steps[1] and steps[2] == full_steps[2] and steps[5] == full_steps[5]
    assert len(parse_boxes(concise)) == 5  # 3 structures + 2 lesions, as in the full answer
    assert steps[3].splitlines()[1:] == [
        "- right lung: mild pneumothorax measuring 30 mm, <ref>pneumothorax</ref><box>[[200, 200, 300, 400]]</box>.",
        (
            "- left lung: moderate consolidation measuring 15 mm, "
            "<ref>consolidation</ref><box>[[600, 300, 750, 600]]</box>."
        ),
        "- other structures: no abnormality is seen.",
    ]
    assert steps[4].splitlines()[1:] == [
        "Considered: the patient history and the chief complaint (cough with fever).",
        "Prior study: month 0.",
        "The pneumothorax in the right lung measured 20 mm on the prior study and measures 30 mm now (+50%).",
        "The consolidation in the left lung is new since the prior study.",
        "The nodule in the left lung seen on the prior study is not seen now.",
        "Assessment: 2 abnormal finding(s): mild pneumothorax in the right lung; moderate consolidation in the left lung.",
    ]
    assert len(concise) < 0.85 * len(full)  # a prior and two lesions: the least saving
    normal = rs.validate_reasoning(rs.build_reasoning_answer(rec(**CT_CHANGES), None, None, style="concise"))
    assert normal[3].endswith("- all structures: no abnormality is seen.")
    assert normal[4].splitlines()[1:] == [
        "No patient history is recorded.",
        "No prior study.",
        "Assessment: normal examination.",
    ]
    with pytest.raises(ValueError, match="style must be one of"):
        rs.build_reasoning_answer(CURRENT, None, None, style="terse")


@pytest.mark.parametrize("style", rs.ANSWER_STYLES)
@pytest.mark.parametrize(("who", "prior"), [("patient", PRIOR), ("nobody", None)])
def test_every_builder_answer_passes_the_layout_check(style, who, prior):
    answer = rs.build_reasoning_answer(CURRENT, patient() if who == "patient" else None, prior, style=style)
    assert list(rs.check_answer_layout(answer)) == [1, 2, 3, 4, 5]


def test_prefix_before_step5_is_the_shared_start_of_step_level_pairs():
    answer = rs.build_reasoning_answer(CURRENT, patient(), PRIOR, style="concise")
    prefix = rs.prefix_before_step5(answer)
    assert prefix is not None and prefix.endswith("\nStep 5:")  # no trailing space: " Final" is one token
    assert answer == prefix + " Final report: " + rs.reference_report(CURRENT)
    assert rs.prefix_before_step5(answer.replace("Step 3:", "Step 6:")) is None  # steps 1-4 incomplete
    assert rs.prefix_before_step5(answer.split("Step 5:")[0]) is None  # no step 5


def test_report_layout_judges_step_5_only():
    answer = rs.build_reasoning_answer(CURRENT, patient(), PRIOR, style="concise")
    broken_box = answer.replace("<box>[[100, 100, 500, 900]]</box>", "<box>[[500, 100, 100, 900]]</box>")
    assert broken_box != answer
    assert list(rs.check_report_layout(broken_box)) == [1, 2, 3, 4, 5]  # step 2's box is not its business
    with pytest.raises(rs.ReasoningFormatError, match="impossible"):
        rs.check_answer_layout(broken_box)
    with pytest.raises(rs.ReasoningFormatError, match="<ref>/<box> tag"):
        rs.check_report_layout(answer + " <ref>mass</ref>")
    with pytest.raises(rs.ReasoningFormatError, match="'Final report' must appear once"):
        rs.check_report_layout(answer + " Final report: again.")
