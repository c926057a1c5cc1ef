"""Tests of validation.reliability.sentences: sentence splitting and the yes/no question writers.

The question lists are written out by hand from the rules of the module docstring (presence per
finding, location per finding with a place, severity per positive finding with a severity, then
paraphrases), so a change of wording or order fails here.
"""

from __future__ import annotations

import pytest

from validation.reliability.sentences import (
    PromptedQuestionWriter,
    Question,
    QuestionWriter,
    RuleQuestionWriter,
    SentenceFinding,
    sentence_findings,
    split_sentences,
)

REPORT = (
    "Findings: There is a mild cotton wool spot in the inferior arcade, measuring 1.0 mm. No hemorrhage is seen.\n"
    "Impression: Mild cotton wool spot in the inferior arcade; Moderate nodule in the left lung."
)


def test_split_sentences_drops_headers_and_splits_clauses_not_decimals():
    assert split_sentences(REPORT) == [
        "There is a mild cotton wool spot in the inferior arcade, measuring 1.0 mm.",
        "No hemorrhage is seen.",
        "Mild cotton wool spot in the inferior arcade",
        "Moderate nodule in the left lung.",
    ]
    assert split_sentences("  \n") == []
    with pytest.raises(TypeError, match="string"):
        split_sentences(None)  # type: ignore[arg-type]


def test_findings_positive_negative_uncertain_and_none():
    pos = sentence_findings("There is a moderate nodule in the left lung, measuring 53 mm.")
    assert pos == [SentenceFinding("Lung Lesion", 1, "nodule", "left lung", "moderate")]
    # the place stops at a verb, not at the end of the clause
    later = sentence_findings(
        "Compared with the prior study, the nodule in the right lung has increased in size."
    )
    assert later == [SentenceFinding("Lung Lesion", 1, "nodule", "right lung", None)]
    neg = sentence_findings("No pneumothorax or pleural effusion.")
    assert [(f.observation, f.label, f.phrase) for f in neg] == [
        ("Pneumothorax", 0, "pneumothorax"),
        ("Pleural Effusion", 0, "pleural effusion"),
    ]
    assert sentence_findings("Possible atelectasis.") == [SentenceFinding("Atelectasis", -1, "atelectasis")]
    # a negative phrase ("cardiac silhouette is normal") is asked about by the observation's name
    assert sentence_findings("The cardiac silhouette is normal.") == [
        SentenceFinding("Cardiomegaly", 0, "cardiomegaly")
    ]
    assert sentence_findings("The optic disc and vessels appear normal.") == []


def test_rule_questions_for_a_positive_sentence():
    qs = RuleQuestionWriter().write(
        "There is a moderate nodule in the left lung, measuring 53 mm.", max_questions=7
    )
    assert [(q.kind, q.expected, q.text) for q in qs] == [
        ("presence", "yes", "Is there a nodule in this image?"),
        ("location", "yes", "Is there a nodule in the left lung?"),
        ("severity", "yes", "Is the nodule moderate?"),
        ("paraphrase", "yes", "Does this image show a nodule?"),
        ("paraphrase", "yes", "Can a nodule be seen in the image?"),
        ("paraphrase", "yes", "Does the left lung contain a nodule?"),
        ("paraphrase", "yes", "Is a nodule present in this image?"),
    ]
    assert all(q.observation == "Lung Lesion" for q in qs)


def test_rule_questions_for_negated_mass_noun_plural_and_vowel():
    neg = RuleQuestionWriter().write("No pleural effusion is seen.", max_questions=5)
    assert [(q.kind, q.expected, q.text) for q in neg] == [
        ("presence", "no", "Is there pleural effusion in this image?"),
        ("paraphrase", "no", "Does this image show pleural effusion?"),
        ("paraphrase", "no", "Can pleural effusion be seen in the image?"),
        ("paraphrase", "no", "Is pleural effusion present in this image?"),
        ("paraphrase", "no", "Is pleural effusion visible in this image?"),
    ]
    plural = RuleQuestionWriter().write("Multiple nodules in the right lung.", max_questions=2)
    assert [q.text for q in plural] == [
        "Are there nodules in this image?",
        "Are there nodules in the right lung?",
    ]
    vowel = RuleQuestionWriter().write("There is an opacity in the right lung.", max_questions=1)
    assert [q.text for q in vowel] == ["Is there an opacity in this image?"]


def test_rule_questions_interleave_findings_and_take_prefixes():
    writer = RuleQuestionWriter()
    two = writer.write("No pneumothorax or pleural effusion.", max_questions=4)
    assert [q.text for q in two] == [
        "Is there pneumothorax in this image?",
        "Is there pleural effusion in this image?",
        "Does this image show pneumothorax?",
        "Does this image show pleural effusion?",
    ]
    full = writer.write("There is mild pleural effusion in the left costophrenic angle.", max_questions=5)
    assert (
        writer.write("There is mild pleural effusion in the left costophrenic angle.", max_questions=3)
        == full[:3]
    )
    assert writer.write("The brain parenchyma shows normal signal.", max_questions=5) == []
    with pytest.raises(ValueError, match="max_questions"):
        writer.write("No edema.", max_questions=0)


def test_every_finding_sentence_gets_five_questions():
    for sentence in (
        "No mass is seen.",
        "Possible atelectasis.",
        "There is a severe glioma.",
        "No edema is seen.",
    ):
        assert len(RuleQuestionWriter().write(sentence, max_questions=5)) == 5, sentence


def test_question_validates_expected_answer():
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        Question("Is it?", "maybe", "presence", "X")


def test_prompted_writer_parses_lines_and_fails_loudly():
    prompts = []

    def fake_llm(prompt: str) -> str:
        prompts.append(prompt)
        return "Sure.\n1. Q: Is there a nodule? A: Yes\nQ: Is it in the liver? A: no.\nnot a question\nQ: Severe? A: yes"

    writer = PromptedQuestionWriter(fake_llm)
    assert isinstance(writer, QuestionWriter) and isinstance(RuleQuestionWriter(), QuestionWriter)
    qs = writer.write("A nodule in the left lung.", max_questions=2)
    assert [(q.text, q.expected, q.kind) for q in qs] == [
        ("Is there a nodule?", "yes", "llm"),
        ("Is it in the liver?", "no", "llm"),
    ]
    assert "A nodule in the left lung." in prompts[0] and "Write 2 yes/no questions" in prompts[0]
    with pytest.raises(ValueError, match="no 'Q: ...\\? A: yes\\|no' line"):
        PromptedQuestionWriter(lambda p: "I cannot help.").write("No edema.", max_questions=3)
