"""Tests of the prompt templates (model/data/templates.yaml) and their deterministic choice."""

from __future__ import annotations

import string
from collections import Counter
from pathlib import Path

import pytest
import yaml

from model.data.curation import (
    TEMPLATE_FIELDS,
    TEMPLATES_PATH,
    TemplateError,
    TemplatePicker,
    load_templates,
    templates_version,
)
from model.data.schema import TASKS


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_every_task_has_at_least_five_distinct_paraphrases_with_valid_placeholders():
    templates = load_templates()
    assert set(templates) == set(TEMPLATE_FIELDS)
    assert {key.split(".")[0] for key in templates} == set(TASKS)
    for key, items in templates.items():
        required, allowed = TEMPLATE_FIELDS[key]
        assert len(set(items)) >= 5, key
        for t in items:
            assert required <= placeholders(t) <= allowed, (key, t)
            assert "<image>" not in t


def test_guardrail_uses_the_region_detection_prompts():
    templates = load_templates()
    assert templates["guardrail"] == templates["region_detection"]


def write(tmp_path: Path, edit) -> Path:
    doc = yaml.safe_load(TEMPLATES_PATH.read_text())
    edit(doc["templates"])
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_fewer_than_five_paraphrases_raises_naming_the_task(tmp_path):
    path = write(tmp_path, lambda t: t.update(mcq=t["mcq"][:4]))
    with pytest.raises(TemplateError, match=r"task 'mcq' \(mcq\) has 4 distinct paraphrases; at least 5"):
        load_templates(path)
    dup = write(tmp_path, lambda t: t.update(report=[t["report"][0]] * 6))
    with pytest.raises(TemplateError, match="task 'report'.* has 1 distinct"):
        load_templates(dup)


def test_unknown_or_missing_placeholder_raises_naming_the_task(tmp_path):
    path = write(tmp_path, lambda t: t["lesion_detection"].append("Where is the {organ}? {lesion}"))
    with pytest.raises(
        TemplateError,
        match=r"task 'lesion_detection' \(lesion_detection\)\[6\]: unknown placeholder \{organ\}",
    ):
        load_templates(path)
    path = write(tmp_path, lambda t: t["region_vqa.presence"].__setitem__(0, "Is there a lesion here?"))
    with pytest.raises(
        TemplateError,
        match=r"task 'region_vqa' \(region_vqa.presence\)\[0\]: missing placeholder\(s\) \['region_ref'\]",
    ):
        load_templates(path)
    path = write(tmp_path, lambda t: t["single_label.modality"].append("Is this a {modality} image?"))
    with pytest.raises(
        TemplateError, match=r"task 'single_label'.*unknown placeholder \{modality\}"
    ):  # it would leak the answer
        load_templates(path)


def test_missing_or_unknown_keys_and_image_tags_raise(tmp_path):
    with pytest.raises(TemplateError, match=r"task 'prognosis' \(prognosis.os\) needs a list"):
        load_templates(write(tmp_path, lambda t: t.pop("prognosis.os")))
    with pytest.raises(TemplateError, match=r"unknown template key\(s\) \['captioning'\]"):
        load_templates(write(tmp_path, lambda t: t.update(captioning=["Describe."] * 5)))
    with pytest.raises(TemplateError, match="must not contain <image>"):
        load_templates(write(tmp_path, lambda t: t["report"].append("<image>\nWrite the report.")))


def test_choice_is_deterministic_hash_based_and_uses_every_paraphrase():
    templates = load_templates()
    a, b, other = TemplatePicker(templates, 7), TemplatePicker(templates, 7), TemplatePicker(templates, 8)
    ids = [f"img{i}:report:0" for i in range(600)]
    picks = [a.pick("report", i)[0] for i in ids]
    assert picks == [b.pick("report", i)[0] for i in ids]
    assert picks != [other.pick("report", i)[0] for i in ids]
    counts = Counter(picks)
    assert set(counts) == set(range(len(templates["report"]))) and min(counts.values()) > 60  # about 100 each
    tid, text = a.render("region_detection", "img1:region_detection:0", region="left lung", modality="CT")
    assert text == templates["region_detection"][tid].format(region="left lung") and "left lung" in text


def test_templates_version_names_the_file_hash():
    v = templates_version()
    assert v["version"] == 1 and len(v["sha256"]) == 64
