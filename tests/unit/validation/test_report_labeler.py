"""Tests of validation.report_labeler: hand-labelled sentences, the corpus vocabulary, F1 by hand."""

from __future__ import annotations

import pytest

from model.data import synth
from model.data.schema import ImageRecord
from model.reasoning import build_reasoning_answer, reference_report
from validation import report_labeler as rl
from validation.report_labeler import (
    COMPETITION_OBSERVATIONS,
    MetricUndefinedError,
    Observation,
    ReasoningFormatError,
    chexpert_f1,
    extract_step5,
    extract_step5_or_none,
    label_report,
    report_f1,
    score_reasoning_output,
)


def mentioned(text: str) -> dict[str, int]:
    """The labels that are not None."""
    return {k: v for k, v in label_report(text).items() if v is not None}


# ---------------------------------------------------------------------------------------------
# hand-labelled sentences (1 positive, 0 negative, -1 uncertain; No Finding derived)
# ---------------------------------------------------------------------------------------------

HAND = [
    # plain mention
    ("Small left pleural effusion.", {"Pleural Effusion": 1}),
    # negation before the mention, and a negated list
    ("No pneumothorax.", {"Pneumothorax": 0, "No Finding": 1}),
    (
        "No pneumothorax, pleural effusion, focal consolidation, or pulmonary edema.",
        {"Pneumothorax": 0, "Pleural Effusion": 0, "Consolidation": 0, "Edema": 0, "No Finding": 1},
    ),
    # negation after the mention reaches the listed mentions ...
    ("Nodule and effusion are not seen.", {"Lung Lesion": 0, "Pleural Effusion": 0, "No Finding": 1}),
    # ... but not a mention of another conjunct
    ("There is a nodule and the effusion has resolved.", {"Lung Lesion": 1, "Pleural Effusion": 0}),
    # uncertainty before / after the mention
    ("Possible atelectasis.", {"Atelectasis": -1}),
    ("Findings suspicious for pneumonia.", {"Pneumonia": -1}),
    ("Effusion may be present.", {"Pleural Effusion": -1}),
    # pre-negation uncertainty: "cannot be ruled out" is uncertain although it contains "ruled out"
    ("Pneumothorax cannot be ruled out.", {"Pneumothorax": -1}),
    ("Cannot exclude a small effusion.", {"Pleural Effusion": -1}),
    # two findings, two cues, one sentence
    ("No effusion, likely atelectasis.", {"Pleural Effusion": 0, "Atelectasis": -1}),
    ("The heart is mildly enlarged but there is no pneumothorax.", {"Cardiomegaly": 1, "Pneumothorax": 0}),
    # pseudo-negation: "no change" does not negate
    ("No change in the right upper lobe nodule.", {"Lung Lesion": 1}),
    # a normal statement is a negative phrase
    ("The lungs are clear and the cardiac silhouette is normal.", {"Cardiomegaly": 0, "No Finding": 1}),
    # anatomy context: liver mass vs lung nodule in one sentence; brain vs lung edema
    ("Mild mass in the liver; Moderate nodule in the left lung.", {"Abdominal Mass": 1, "Lung Lesion": 1}),
    ("There is moderate edema in the right frontal lobe.", {"Cerebral Edema": 1}),
    ("No edema is seen.", {"Edema": 0, "No Finding": 1}),
    ("The skin shows no pigmented lesion.", {"No Finding": 1}),
    # a phrase inside a longer one belongs to the longer one only
    ("There is lymphocytic infiltrate in the stroma.", {"Lymphocytic Infiltrate": 1}),
    ("No basal cell carcinoma is seen.", {"Basal Cell Carcinoma": 0, "No Finding": 1}),
    # support devices do not prevent No Finding
    (
        "Endotracheal tube in place. NO PNEUMOTHORAX.",
        {"Support Devices": 1, "Pneumothorax": 0, "No Finding": 1},
    ),
]


@pytest.mark.parametrize(("text", "expected"), HAND, ids=[t for t, _ in HAND])
def test_hand_labelled_sentences(text, expected):
    assert mentioned(text) == expected


def test_aggregation_precedence_across_sentences():
    # positive anywhere wins over negation elsewhere
    assert label_report("No pneumothorax. Small right apical pneumothorax.")["Pneumothorax"] == 1
    # uncertain wins over negative, positive over uncertain
    assert label_report("No pleural effusion. Possible left pleural effusion.")["Pleural Effusion"] == -1
    assert label_report("Possible effusion. Large right effusion.")["Pleural Effusion"] == 1


def test_no_finding_rule():
    assert all(v is None for v in label_report("").values())  # no text: nothing, not "normal"
    assert all(v is None for v in label_report("  \n ").values())
    assert mentioned("Normal X-ray examination.") == {"No Finding": 1}
    assert label_report("Possible atelectasis.")["No Finding"] is None  # uncertain blocks No Finding
    assert label_report("There is a polyp in the upper wall.")["No Finding"] is None  # extras count too
    assert list(label_report("x"))[:14] == list(rl.CHEXPERT_OBSERVATIONS)


# ---------------------------------------------------------------------------------------------
# the demo corpus: every lesion type of every modality, as the generator words it
# ---------------------------------------------------------------------------------------------

#: lesion type -> observation, with the anatomy-dependent exceptions (region -> observation)
CORPUS_EXPECTED = {
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "effusion": "Pleural Effusion",
    "consolidation": "Consolidation",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
    "glioma": "Glioma",
    "hemorrhage": "Hemorrhage",
    "edema": "Cerebral Edema",
    "exudate": "Exudate",
    "drusen": "Drusen",
    "cotton wool spot": "Cotton Wool Spot",
    "carcinoma": "Carcinoma",
    "necrosis": "Necrosis",
    "lymphocytic infiltrate": "Lymphocytic Infiltrate",
    "melanoma": "Melanoma",
    "nevus": "Nevus",
    "seborrheic keratosis": "Seborrheic Keratosis",
    "basal cell carcinoma": "Basal Cell Carcinoma",
    "cyst": "Cyst",
    "stone": "Stone",
    "polyp": "Polyp",
    "ulcer": "Ulcer",
    "bleeding": "Bleeding",
}
ABDOMINAL_REGIONS = {"liver", "right kidney"}


def _corpus_cases():
    for modality, spec in synth.MODALITY_SPECS.items():
        for lesion_type, regions in spec.lesions.items():
            for region in regions:
                yield modality, lesion_type, region


def test_every_corpus_lesion_type_is_in_the_vocabulary():
    types = {t for spec in synth.MODALITY_SPECS.values() for t in spec.lesions}
    assert types == set(CORPUS_EXPECTED)
    covered = {t for o in rl.DEFAULT_VOCABULARY.observations for t in o.corpus_types}
    assert covered == types


@pytest.mark.parametrize(("modality", "lesion_type", "region"), list(_corpus_cases()))
def test_generator_reports_label_exactly_their_lesion(modality, lesion_type, region):
    lesion = {"lesion_type": lesion_type, "region": region, "severity": "moderate", "size_mm": 12.0}
    findings, impression = synth._report(modality, [lesion], [10.0])
    labels = label_report(f"{findings} Impression: {impression}")
    expected = (
        "Abdominal Mass"
        if (lesion_type == "mass" and region in ABDOMINAL_REGIONS)
        else CORPUS_EXPECTED[lesion_type]
    )
    assert {k for k, v in labels.items() if v == 1} == {expected}
    assert not [k for k, v in labels.items() if v == -1]


@pytest.mark.parametrize("modality", list(synth.MODALITY_SPECS))
def test_generator_normal_reports(modality):
    findings, impression = synth._report(modality, [], None)
    labels = label_report(f"{findings} Impression: {impression}")
    assert {k for k, v in labels.items() if v in (1, -1)} == {"No Finding"}
    negated = {k for k, v in labels.items() if v == 0}
    assert len(negated) >= len(synth.MODALITY_SPECS[modality].lesions) - 1  # "no mass" -> Lung Lesion


# ---------------------------------------------------------------------------------------------
# vocabulary
# ---------------------------------------------------------------------------------------------


def test_vocabulary_extend_and_errors():
    vocab = rl.DEFAULT_VOCABULARY.extend(Observation("Hernia", (r"hiatal hernia", r"hernias?")))
    labels = label_report("Small hiatal hernia. No pneumothorax.", vocabulary=vocab)
    assert labels["Hernia"] == 1 and labels["Pneumothorax"] == 0 and labels["No Finding"] is None
    assert "Hernia" not in label_report("Small hiatal hernia.")
    with pytest.raises(ValueError, match=r"duplicate observation name\(s\) \['Edema'\]"):
        rl.DEFAULT_VOCABULARY.extend(Observation("Edema", ("oedema",)))
    with pytest.raises(ValueError, match="observation 'Bad': bad regular expression"):
        rl.Vocabulary([Observation("Bad", ("(unclosed",))])
    with pytest.raises(ValueError, match="'Empty' needs at least one mention phrase"):
        rl.Vocabulary([Observation("Empty", ())])
    with pytest.raises(ValueError, match="kind must be one of"):
        rl.Vocabulary([Observation("A", ("a",))], cues=[rl.Cue("no", "denial", 3, 0)])


# ---------------------------------------------------------------------------------------------
# report F1
# ---------------------------------------------------------------------------------------------

NAMES = ("Edema", "Pleural Effusion", "Cardiomegaly")


def labels(**values) -> dict[str, int | None]:
    return {n: values.get(n.replace(" ", "_")) for n in NAMES}


def test_report_f1_by_hand():
    """ref {Edema, Pleural Effusion}, pred {Edema, Cardiomegaly}: 2 * |{Edema}| / (2 + 2) = 0.5."""
    ref = labels(Edema=1, Pleural_Effusion=1)
    pred = labels(Edema=1, Cardiomegaly=1, Pleural_Effusion=0)
    assert report_f1(pred, ref) == pytest.approx(0.5)
    assert report_f1(ref, ref) == 1.0
    assert report_f1(labels(Edema=0), ref) == 0.0


def test_report_f1_uncertain_and_empty_cases():
    ref, pred = labels(Edema=1), labels(Edema=-1)
    assert report_f1(pred, ref, uncertain_as_positive=True) == 1.0
    assert report_f1(pred, ref, uncertain_as_positive=False) == 0.0  # P empty, R = {Edema}: 0 / 1
    # both have no positive label: defined as 1.0 (agreement on "nothing positive")
    assert report_f1(labels(Edema=0), labels()) == 1.0
    # restricted to a subset: only those labels count
    assert report_f1(labels(Edema=1, Cardiomegaly=1), labels(Edema=1), observations=["Edema"]) == 1.0


def test_report_f1_rejects_bad_input():
    with pytest.raises(ValueError, match="different observations"):
        report_f1({"Edema": 1}, {"Edema": 1, "Fracture": None})
    with pytest.raises(ValueError, match="label of 'Edema' is 2"):
        report_f1({"Edema": 2}, {"Edema": 1})
    with pytest.raises(ValueError, match="pred has no label for observation 'Fracture'"):
        report_f1({"Edema": 1}, {"Edema": 1}, observations=["Fracture"])


# ---------------------------------------------------------------------------------------------
# corpus F1 (the docstring's worked example)
# ---------------------------------------------------------------------------------------------


def comp(*positive: str) -> dict[str, int | None]:
    return {n: (1 if n in positive else None) for n in rl.CHEXPERT_OBSERVATIONS}


REFS = [comp("Edema"), comp("Pleural Effusion"), comp("Cardiomegaly")]
PREDS = [comp("Edema", "Cardiomegaly"), comp(), comp("Cardiomegaly")]


def test_chexpert_f1_micro_vs_macro_by_hand():
    """Edema 1/1 -> F1 1; Cardiomegaly TP 1 FP 1 -> 2/3; Pleural Effusion FN 1 -> 0.

    micro = 2*2 / (2*2 + 1 + 1) = 2/3; macro = (1 + 2/3 + 0) / 3 = 5/9 (Atelectasis, Consolidation
    have no positive and are left out of the mean).
    """
    out = chexpert_f1(PREDS, REFS, subset="competition5")
    assert out["micro_f1"] == pytest.approx(2 / 3)
    assert out["macro_f1"] == pytest.approx(5 / 9)
    assert out["labels"] == list(COMPETITION_OBSERVATIONS)
    assert out["macro_labels"] == ["Cardiomegaly", "Edema", "Pleural Effusion"]
    assert out["per_label"]["Cardiomegaly"] == {"f1": pytest.approx(2 / 3), "tp": 1, "fp": 1, "fn": 0}
    assert out["per_label"]["Pleural Effusion"] == {"f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert out["per_label"]["Atelectasis"]["f1"] is None
    assert out["n_reports"] == 3 and out["uncertain_as_positive"] is True


def test_chexpert_f1_subsets_none_predictions_and_errors():
    # all14: the same counts (No Finding is None everywhere in these hand-made dicts)
    assert chexpert_f1(PREDS, REFS)["micro_f1"] == pytest.approx(2 / 3)
    # a prediction of None (no readable report) has no positive: report 1 loses its Edema TP
    out = chexpert_f1([None, comp(), comp("Cardiomegaly")], REFS, subset="competition5")
    assert out["per_label"]["Edema"] == {"f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert out["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))
    with pytest.raises(MetricUndefinedError, match="no label of subset 'competition5' is positive"):
        chexpert_f1([comp("Fracture")], [comp()], subset="competition5")
    with pytest.raises(MetricUndefinedError, match="at least one report"):
        chexpert_f1([], [])
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        chexpert_f1(PREDS[:2], REFS)
    with pytest.raises(ValueError, match="subset must be"):
        chexpert_f1(PREDS, REFS, subset="top5")


def test_chexpert_f1_end_to_end_from_text():
    refs = [
        label_report(t) for t in ("Large right pleural effusion.", "Cardiomegaly. No edema.", "Normal chest.")
    ]
    preds = [label_report(t) for t in ("Possible right effusion.", "No cardiomegaly.", "Normal chest.")]
    out = chexpert_f1(preds, refs, subset="all")
    # Pleural Effusion: TP (uncertain counts); Cardiomegaly: FN; No Finding: TP (report 3) + FP (report 2)
    assert out["per_label"]["Pleural Effusion"]["tp"] == 1
    assert out["per_label"]["Cardiomegaly"]["fn"] == 1
    assert out["per_label"]["No Finding"] == {"f1": pytest.approx(2 / 3), "tp": 1, "fp": 1, "fn": 0}
    assert out["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    strict = chexpert_f1(preds, refs, subset="all", uncertain_as_positive=False)
    assert strict["per_label"]["Pleural Effusion"] == {"f1": 0.0, "tp": 0, "fp": 0, "fn": 1}


# ---------------------------------------------------------------------------------------------
# 5-step answers
# ---------------------------------------------------------------------------------------------

ANSWER = "Step 1: a\nStep 2: b\nStep 3: c\nStep 4: d\nStep 5: Final report: Small left pleural effusion."


def test_extract_step5():
    assert extract_step5(ANSWER) == "Small left pleural effusion."
    with pytest.raises(ReasoningFormatError, match="no 'Step 5:' header"):
        extract_step5("Step 1: a\nStep 2: b")
    with pytest.raises(ReasoningFormatError, match="no final report text"):
        extract_step5("Step 5: Final report:   ")
    assert extract_step5_or_none("Small left pleural effusion.") is None
    assert extract_step5_or_none(ANSWER) == "Small left pleural effusion."


def test_score_reasoning_output_missing_step5_scores_zero():
    assert score_reasoning_output(ANSWER, "Small left pleural effusion. No pneumothorax.") == 1.0
    # the reference has no competition positive: an empty step 5 would be "agreement" (1.0) ...
    assert (
        score_reasoning_output(
            ANSWER.replace("Small left pleural effusion.", "Normal."),
            "Normal.",
            observations=COMPETITION_OBSERVATIONS,
        )
        == 1.0
    )
    # ... but an answer without step 5 is a failure, not agreement
    assert (
        score_reasoning_output("The chest is normal.", "Normal.", observations=COMPETITION_OBSERVATIONS)
        == 0.0
    )


def test_deterministic_reasoning_answers_score_one():
    rec = ImageRecord.from_dict(
        {
            "image_id": "i1",
            "source": "t",
            "patient_id": "P1",
            "visit_index": 0,
            "visit_month": 0.0,
            "site": "hospital_a",
            "site_role": "internal",
            "split": "train",
            "modality": "xray",
            "body_part": "chest",
            "image_path": "raw/i1.png",
            "width": 64,
            "height": 64,
            "image_sha256": "0" * 64,
            "regions": [{"name": "right lung", "x1": 4, "y1": 4, "x2": 30, "y2": 50}],
            "lesions": [
                {
                    "lesion_type": "pneumothorax",
                    "region": "right lung",
                    "x1": 10,
                    "y1": 10,
                    "x2": 20,
                    "y2": 20,
                    "size_mm": 30.0,
                    "severity": "mild",
                }
            ],
            "report_findings": "There is mild pneumothorax in the right lung, measuring 30 mm. No nodule.",
            "report_impression": "Mild pneumothorax in the right lung.",
        }
    )
    answer = build_reasoning_answer(rec, None, None)
    assert score_reasoning_output(answer, reference_report(rec)) == 1.0
    labels = label_report(extract_step5(answer))
    assert {k for k, v in labels.items() if v == 1} == {"Pneumothorax"}
    assert labels["Lung Lesion"] == 0
