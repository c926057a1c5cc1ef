"""MIMIC-CXR report section parser and report-tree importer."""

from __future__ import annotations

from PIL import Image

from model.data.importers import iter_mimic_cxr, parse_report_sections

# Shaped like a real MIMIC-CXR report (header line, leading spaces, blank lines, wrapped text).
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. Note: clips
 project over the left lung.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_parse_report_sections_real_layout():
    s = parse_report_sections(REPORT)
    assert list(s) == ["preamble", "examination", "indication", "comparison", "findings", "impression"]
    assert s["findings"] == (
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities that "
        "most likely represent nipple shadows. Note: clips project over the left lung."
    )  # "Note:" mid-paragraph is not a header (not a known name, not capitals)
    assert s["impression"] == "No acute cardiopulmonary process."
    assert s["comparison"] == "None."
    assert s["preamble"] == "FINAL REPORT"


def test_parse_report_sections_case_and_spacing():
    s = parse_report_sections(
        "Findings : Small left effusion.\n  impression:Effusion.\nFindings: Also edema."
    )
    assert s == {"findings": "Small left effusion. Also edema.", "impression": "Effusion."}
    assert parse_report_sections("no headers here") == {"preamble": "no headers here"}
    assert parse_report_sections("") == {}


def test_mimic_tree_importer(tmp_path):
    root = tmp_path / "mimic"
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    (study.parent / "s50414267.txt").write_text(REPORT)
    for name, size in (("02aa804e.jpg", (30, 20)), ("174413ec.jpg", (20, 30))):
        Image.new("L", size).save(study / name)
    other = root / "files" / "p11" / "p11000011" / "s52000000"
    other.mkdir(parents=True)
    (other.parent / "s52000000.txt").write_text("CONCLUSION: Clear lungs.")
    Image.new("L", (8, 8)).save(other / "a.png")
    lonely = root / "files" / "p11" / "p11000011" / "s53000000.txt"  # report without images: skipped
    lonely.write_text("IMPRESSION: none")
    recs = list(iter_mimic_cxr(root, data_root=tmp_path))
    assert [r["image_id"] for r in recs] == ["s50414267_02aa804e", "s50414267_174413ec", "s52000000_a"]
    first = recs[0]
    assert first["patient_id"] == "p10000032"
    assert first["image_path"] == "mimic/files/p10/p10000032/s50414267/02aa804e.jpg"
    assert (first["width"], first["height"], first["modality"], first["body_part"]) == (
        30,
        20,
        "xray",
        "chest",
    )
    assert first["report_impression"] == "No acute cardiopulmonary process."
    assert first["report_findings"].startswith("There is no focal consolidation")
    assert recs[1]["report_findings"] == first["report_findings"]
    assert (recs[2]["report_findings"], recs[2]["report_impression"]) == (None, "Clear lungs.")
