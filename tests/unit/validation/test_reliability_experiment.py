"""Tests of validation.reliability.experiment and .tables on a scripted sampler and a tiny curated table.

The scripted world (every likelihood equal, so semantic = discrete entropy):

* VQA (test split): 6 closed questions (C0-C5) and 2 open ones (O0, O1). C4, C5 and O1 are answered
  wrong by the greedy answer -> accuracy 5/8. Right answers: all 20 samples equal the greedy
  answer. Wrong answers: the first 5 samples equal it, then they alternate with another answer.
  So at M = 5 every uncertainty is 0 (AUROC 0.5, PRR 0), at M >= 10 only wrong answers have two
  clusters (AUROC 1, PRR 1 for semantic and discrete entropy). Within-cluster entropy is ln M
  for M identical equally likely answers and smaller for the split ones: AUROC 0 at M >= 10.
* Reports (4 val, 4 test): the model writes "There is a moderate nodule in the left lung. There is
  pleural effusion in the right lung." against a reference without effusion -> per report one
  correct (nodule) and one incorrect (effusion) sentence. Nodule questions: all "Yes" (U = 0).
  Effusion: the presence question all "Yes" (0), every other question half "Yes", half "No" (ln 2).
  So U_1 ties everywhere (AUROC 0.5) and U_k, k >= 2, separates (AUROC 1). Levels (targets 0.1 /
  0.3) on val: high = 0 (the 4 correct sentences), medium empty, low = the 4 incorrect ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.data.schema import INSTRUCTION_SCHEMA
from validation.reliability.experiment import run_experiments, select_items
from validation.reliability.tables import markdown_tables
from validation.report_labeler import MetricUndefinedError
from validation.uncertainty import ExactMatch


class Answer(NamedTuple):
    """The fields of model.generation.SampledAnswer the reliability code reads."""

    text: str
    token_logprobs: list[float]


REFERENCE = (
    "Findings: There is a moderate nodule in the left lung, measuring 40 mm. No pleural effusion is seen."
)
GENERATED = (
    "Findings: There is a moderate nodule in the left lung. There is pleural effusion in the right lung."
)
GREEDY = {
    "C0": "Yes",
    "C1": "No",
    "C2": "Yes",
    "C3": "No",
    "C4": "No",
    "C5": "Yes",
    "O0": "left lung",
    "O1": "liver",
}
OTHER = {"C4": "Yes", "C5": "No", "O1": "heart"}


def _row(rid: str, task: str, split: str, prompt: str, gold: str, target: dict) -> dict:
    return {
        "id": rid, "task": task, "images": [f"raw/images/{rid}.png"], "image_ids": [rid], "width": 32,
        "height": 32, "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                        {"from": "gpt", "value": gold}],
        "patient_id": rid, "split": split, "site": "site", "site_role": "internal", "modality": "ct",
        "source": "test", "template_id": 0, "target": json.dumps(target),
    }  # fmt: skip


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    rows = [
        _row(
            f"C{i}", "vqa_closed", "test", f"C{i}: Is there a nodule?", ("Yes", "No")[i % 2], {"answer": "x"}
        )
        for i in range(6)
    ]
    rows += [
        _row(f"O{i}", "vqa_open", "test", f"O{i}: Where is it?", "left lung", {"answer": "x"})
        for i in range(2)
    ]
    for split, p in (("test", "T"), ("val", "V")):
        rows += [_row(f"{p}{i}", "report", split, "Write the report.", REFERENCE, {}) for i in range(4)]
    out = tmp_path_factory.mktemp("rel") / "shards"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=INSTRUCTION_SCHEMA), out / "part-00000.parquet")
    return out


class ScriptedSampler:
    """The answers of the module docstring, keyed by the image's stem (the item id) and the prompt."""

    def __init__(self, greedy=GREEDY, report=GENERATED):
        self.greedy_text, self.report, self.draws = greedy, report, []

    def greedy(self, images, prompt, *, max_new_tokens):
        rid = images[0].stem
        return Answer(self.greedy_text.get(rid, self.report), [-0.5])

    def _texts(self, rid: str, prompt: str, m: int) -> list[str]:
        if rid in self.greedy_text:
            g = self.greedy_text[rid]
            return [g if (rid not in OTHER or i < 5 or i % 2) else OTHER[rid] for i in range(m)]
        if "effusion" in prompt and prompt != "Is there pleural effusion in this image?":
            return ["Yes", "No"] * (m // 2)
        return ["Yes"] * m

    def sample(self, images, prompt, *, num_samples, max_new_tokens, seed):
        self.draws.append((images[0].stem, num_samples))
        return [Answer(t, [-0.5]) for t in self._texts(images[0].stem, prompt, num_samples)]


def _run(shards: Path, out: Path, sampler=None, **kw):
    args = {
        "shards": shards,
        "data_root": shards.parent,
        "out_dir": out,
        "n_vqa": 8,
        "n_reports": 4,
        "open_equivalence": ExactMatch(),
    }
    return run_experiments(sampler or ScriptedSampler(), **{**args, **kw})


def test_select_items_tops_up_closed_questions_when_open_ones_run_short(shards):
    vqa, reports = select_items(shards, split="test", n_vqa=8, n_reports=3)
    assert sorted(it.row["id"] for it in vqa) == [f"C{i}" for i in range(6)] + ["O0", "O1"]
    assert len(reports) == 3 and {it.family for it in reports} == {"report"}
    vqa4, _ = select_items(shards, split="test", n_vqa=4, n_reports=0)
    assert [it.family for it in vqa4] == ["vqa_closed"] * 2 + ["vqa_open"] * 2


def test_vqa_and_sentence_experiments_hand_worked(shards, tmp_path):
    sampler = ScriptedSampler()
    result = _run(shards, tmp_path / "out", sampler)
    vqa = result["vqa"]
    assert (vqa["n"], vqa["n_closed"], vqa["n_wrong"], vqa["accuracy"]) == (8, 6, 3, 0.625)
    vqa_draws = [d for d in sampler.draws if d[0][0] in "CO"]
    assert sorted(vqa_draws) == sorted((rid, 20) for rid in GREEDY)  # ONE draw of 20 per question
    for e in ("semantic_entropy", "discrete_semantic_entropy"):
        assert vqa["auroc"][e] == {"5": 0.5, "10": 1.0, "15": 1.0, "20": 1.0}
        assert vqa["prr"][e]["5"] == pytest.approx(0.0) and vqa["prr"][e]["20"] == pytest.approx(1.0)
    assert vqa["auroc"]["within_cluster_entropy"] == {"5": 0.5, "10": 0.0, "15": 0.0, "20": 0.0}
    assert vqa["prr"]["within_cluster_entropy"]["10"] < 0

    sen = result["sentences"]
    assert sen["n_sentences"] == {"val": 8, "test": 8} and sen["n_incorrect"] == {"val": 4, "test": 4}
    for sc in ("semantic_entropy", "discrete_semantic_entropy", "disagreement"):
        assert sen["auroc"][sc] == {"1": 0.5, "2": 1.0, "3": 1.0, "4": 1.0, "5": 1.0}
    assert sen["auroc"]["within_cluster_entropy"]["5"] == 0.0  # ln 10 (one cluster) > the split questions
    levels = sen["levels"]
    assert levels["thresholds"] == {
        "high": 0.0, "medium": None, "target_high": 0.1, "target_medium": 0.3, "empty_levels": ["medium"]
    }  # fmt: skip
    expected = {"high": {"n": 4, "error_rate": 0.0}, "medium": {"n": 0, "error_rate": None},
                "low": {"n": 4, "error_rate": 1.0}}  # fmt: skip
    assert levels["validation"] == expected and levels["held_out"] == expected


def test_outputs_are_written_and_match_the_result(shards, tmp_path):
    out = tmp_path / "out"
    result = _run(shards, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "uncertainty_table.md",
            "uncertainty_table.json",
            "uncertainty_items.json",
            "vqa_auroc.png",
            "sentence_auroc.png",
        ]
    )
    saved = json.loads((out / "uncertainty_table.json").read_text())
    assert saved == json.loads(json.dumps({k: result[k] for k in ("settings", "vqa", "sentences")}))
    items = json.loads((out / "uncertainty_items.json").read_text())
    assert len(items["vqa"]) == 8 and len(items["sentences"]) == 16
    c4 = next(r for r in items["vqa"] if r["id"] == "C4")
    assert c4["correct"] is False and c4["clusters"][:8] == [0, 0, 0, 0, 0, 0, 1, 0]
    eff = next(s for s in items["sentences"] if "effusion" in s["sentence"])
    assert eff["correct"] is False and eff["labels"] == {"Pleural Effusion": 1}
    assert eff["uncertainty"]["discrete_semantic_entropy"] == pytest.approx(4 * math.log(2) / 5)
    md = (out / "uncertainty_table.md").read_text()
    assert md == markdown_tables(result) + "\n"
    assert "| semantic_entropy | 0.500 | 1.000 | 1.000 | 1.000 |" in md
    assert "| 2 questions | 1.000 | 1.000 | 0.000 | 1.000 |" in md
    assert "| medium | 0 | (empty) | 0 | (empty) |" in md
    assert "high if U <= 0, the medium level is empty, else low." in md
    for png in ("vqa_auroc.png", "sentence_auroc.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unreachable_target_empties_levels_in_json_and_tables(shards, tmp_path):
    """Both sentences of each report are about effusion and tie at U_5 = 4 ln 2 / 5 (one wrong of two):
    no cut reaches 0.1 or 0.3 on val, so high and medium are empty and every sentence is low."""
    tied = ScriptedSampler(report="There is pleural effusion in the right lung. No pleural effusion is seen.")
    result = _run(shards, tmp_path / "out", tied)
    levels = result["sentences"]["levels"]
    assert levels["thresholds"]["high"] is None and levels["thresholds"]["medium"] is None
    assert levels["thresholds"]["empty_levels"] == ["high", "medium"]
    assert levels["held_out"]["low"] == {"n": 8, "error_rate": 0.5}
    assert result["sentences"]["auroc"]["semantic_entropy"]["5"] == 0.5
    md = (tmp_path / "out" / "uncertainty_table.md").read_text()
    assert "the high level is empty, the medium level is empty, else low." in md


def test_undefined_numbers_raise_and_write_nothing(shards, tmp_path):
    all_right = ScriptedSampler(greedy={**GREEDY, "C4": "Yes", "C5": "No", "O1": "left lung"})
    with pytest.raises(MetricUndefinedError, match="0 of 8 greedy answers are wrong"):
        _run(shards, tmp_path / "a", all_right)
    no_findings = ScriptedSampler(report="The image is a chest CT image.")
    with pytest.raises(MetricUndefinedError, match="none of the 4 generated val reports"):
        _run(shards, tmp_path / "b", no_findings)
    all_correct = ScriptedSampler(report="There is a moderate nodule in the left lung.")
    with pytest.raises(MetricUndefinedError, match="0 of 4 held-out sentences are incorrect"):
        _run(shards, tmp_path / "c", all_correct)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
