"""The runner: prediction cache, same items for every system, CIs, fail-fast errors, a tiny real checkpoint + CLI."""

from __future__ import annotations

import base64
import csv
import io
import json
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from model.base import weights_digest
from validation.benchmarks import (
    BenchmarkItem,
    MajorityPredictor,
    VLMPredictor,
    cached_predictions,
    incomplete_metrics,
    load_registry,
    run_suite,
)
from validation.benchmarks.registry import BenchmarkFileNotFoundError
from validation.benchmarks.runner import main
from validation.metrics import MetricUndefinedError


class Counting:
    """A fake predictor: a fixed answer per item, counting calls."""

    def __init__(self, fingerprint: str, answer=lambda it: "A") -> None:
        self.fingerprint, self.answer, self.calls = fingerprint, answer, 0

    def predict(self, items):
        self.calls += 1
        return [self.answer(it) for it in items]


def _items(n: int, prompt: str = "q") -> list[BenchmarkItem]:
    return [
        BenchmarkItem(id=f"i{i}", benchmark="b", family="vqa", images=(), prompt=prompt, gold="yes")
        for i in range(n)
    ]


def test_cache_is_reused_and_keyed_by_fingerprint_and_items(tmp_path):
    p = Counting("fp:1")
    preds, cached = cached_predictions(p, "b", _items(3), tmp_path)
    assert (preds, cached, p.calls) == (["A"] * 3, False, 1)
    assert cached_predictions(p, "b", _items(3), tmp_path) == (["A"] * 3, True) and p.calls == 1
    cached_predictions(p, "b", _items(3, prompt="other prompt"), tmp_path)  # changed prompt: new entry
    cached_predictions(Counting("fp:2"), "b", _items(3), tmp_path)  # new checkpoint: new entry
    assert p.calls == 2
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 3 and {f.parent.name for f in files} == {"fp_1", "fp_2"}
    (fp2_file,) = (tmp_path / "fp_2").iterdir()
    doc = json.loads(fp2_file.read_text())
    assert doc["item_ids"] == ["i0", "i1", "i2"] and doc["fingerprint"] == "fp:2" and doc["benchmark"] == "b"
    doc["predictions"] = ["A"]
    fp2_file.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"prediction cache .*fp_2.* does not match its key; delete it"):
        cached_predictions(Counting("fp:2"), "b", _items(3), tmp_path)
    fp2_file.write_text("{truncated")
    with pytest.raises(ValueError, match=r"not valid JSON; delete it"):
        cached_predictions(Counting("fp:2"), "b", _items(3), tmp_path)


def test_no_cache_dir_and_wrong_answer_count(tmp_path):
    p = Counting("fp")
    cached_predictions(p, "b", _items(2), None)
    cached_predictions(p, "b", _items(2), None)
    assert p.calls == 2
    bad = Counting("bad")
    bad.predict = lambda items: ["only one"]
    with pytest.raises(ValueError, match="gave 1 answers for 2 items"):
        cached_predictions(bad, "b", _items(2), tmp_path)
    with pytest.raises(ValueError, match="not unique"):
        cached_predictions(p, "b", _items(2) + _items(1), tmp_path)


def _png_b64(value: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (value, value, value)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture()
def bench(tmp_path) -> tuple[Path, Path]:
    """A benchmarks root with an MCQ TSV and a SLAKE folder holding open questions only."""
    root = tmp_path / "benchmarks"
    root.mkdir()
    with open(root / "mcq.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["index", "question", "A", "B", "answer", "modality", "image"])
        for i in range(12):
            w.writerow(
                [
                    i,
                    "Which organ is shown?",
                    "liver",
                    "heart",
                    "AB"[i % 3 == 0],
                    "CT" if i % 2 else "MRI",
                    _png_b64(i),
                ]
            )
    slake = root / "slake"
    (slake / "imgs").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(slake / "imgs" / "a.png")
    q = {
        "img_id": 1,
        "img_name": "a.png",
        "q_lang": "en",
        "answer_type": "OPEN",
        "location": "Lung",
        "modality": "CT",
    }
    (slake / "test.json").write_text(json.dumps([{**q, "question": "Which organ?", "answer": "lung"}]))
    reg = tmp_path / "reg.yaml"
    reg.write_text(
        textwrap.dedent(
            """
            benchmarks:
              mcq:
                family: mcq
                source: {kind: vlmevalkit_tsv, path: mcq.tsv}
                metrics: [mcq_accuracy]
              slake_closed:
                family: vqa
                source: {kind: slake, path: slake}
                metrics: [closed_accuracy]
              absent:
                family: vqa
                source: {kind: pathvqa, path: pvqa}
                metrics: [vqa_f1]
            """
        )
    )
    return reg, root


def test_suite_gives_every_system_the_same_items_with_cis_and_paired_differences(bench, tmp_path):
    reg, root = bench
    specs = load_registry(reg).select(["mcq"])
    always_a, right = Counting("always-a"), Counting("right", lambda it: it.gold)
    suite = run_suite(
        specs,
        {"always_a": always_a, "right": right},
        candidate="right",
        benchmarks_root=root,
        cache_dir=tmp_path / "c",
    )
    a, r = suite.results["always_a"]["mcq"], suite.results["right"]["mcq"]
    assert [it.id for it in a.items] == [it.id for it in r.items] and len(r.items) == 12
    assert a.values["mcq_accuracy"] == pytest.approx(8 / 12) and r.values["mcq_accuracy"] == 1.0
    diff = suite.differences["always_a"]["mcq"]["mcq_accuracy"]
    assert diff.value == pytest.approx(4 / 12) and 0 < diff.ci_low <= diff.value <= diff.ci_high <= 1
    iv = suite.intervals["always_a"]["mcq"]["mcq_accuracy"]
    assert iv.ci_low < iv.value < iv.ci_high
    assert r.by_group()["mcq_accuracy"]["modality"] == {"CT": 1.0, "MRI": 1.0}
    assert suite.baselines == ["always_a"]
    json.dumps(suite.to_dict())  # JSON-able
    assert incomplete_metrics(suite) == []
    del suite.intervals["right"]["mcq"]["mcq_accuracy"]
    assert incomplete_metrics(suite) == ["right/mcq/mcq_accuracy"]
    rerun = run_suite(
        specs, {"right": right}, candidate="right", benchmarks_root=root, cache_dir=tmp_path / "c"
    )
    assert rerun.results["right"]["mcq"].cached and right.calls == 1


def test_suite_fails_fast_and_never_skips_an_undefined_metric(bench):
    reg, root = bench
    registry = load_registry(reg)
    p = Counting("p")
    with pytest.raises(BenchmarkFileNotFoundError, match=r"'absent'.*pvqa"):
        run_suite(registry.select(["mcq", "absent"]), {"p": p}, candidate="p", benchmarks_root=root)
    assert p.calls == 0  # nothing was generated before the missing file was found
    with pytest.raises(MetricUndefinedError, match="closed_accuracy"):
        run_suite(registry.select(["slake_closed"]), {"p": p}, candidate="p", benchmarks_root=root)
    with pytest.raises(KeyError, match="candidate 'x'"):
        run_suite(registry.select(["mcq"]), {"p": p}, candidate="x", benchmarks_root=root)
    with pytest.raises(ValueError, match="unique"):
        run_suite(registry.select(["mcq", "mcq"]), {"p": p}, candidate="p", benchmarks_root=root)


def test_majority_predictor_answers_per_group_and_names_missing_groups():
    items = [
        BenchmarkItem(
            id="a",
            benchmark="b",
            family="vqa",
            images=(),
            prompt="q",
            gold="x",
            groups={"task_family": "vqa_open"},
        ),
        BenchmarkItem(
            id="b",
            benchmark="b",
            family="vqa",
            images=(),
            prompt="q",
            gold="x",
            groups={"task_family": "vqa_closed"},
        ),
    ]
    m = MajorityPredictor({"vqa_open": "lung", "vqa_closed": "Yes"})
    assert m.predict(items) == ["lung", "Yes"] and m.fingerprint.startswith("majority-")
    assert MajorityPredictor({"vqa_open": "liver", "vqa_closed": "Yes"}).fingerprint != m.fingerprint
    with pytest.raises(KeyError, match=r"task_family='vqa_closed' \(item 'b'\)"):
        MajorityPredictor({"vqa_open": "lung"}).predict(items)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from model.tokenizer import train_tokenizer
    from model.vlm import build_tiny_vlm_for_tokenizer

    text = "<image>\nQuestion: Which organ is shown?\nOptions:\nA. liver\nB. heart\nPlease select the correct answer."
    tok = train_tokenizer([text, "A B liver heart lung"] * 10, vocab_size=300)
    arch = {
        "image_size": 32,
        "grid": 4,
        "vision_hidden": 16,
        "vision_layers": 1,
        "text_hidden": 32,
        "text_layers": 1,
        "heads": 2,
        "intermediate": 64,
        "max_positions": 320,
        "projector_hidden": 32,
    }
    out = tmp_path_factory.mktemp("ckpt") / "model"
    build_tiny_vlm_for_tokenizer(tok, seed=0, **arch).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def test_vlm_predictor_answers_batches_lazily_with_a_weights_fingerprint(tiny_checkpoint, tmp_path):
    image_file = tmp_path / "x.png"
    Image.new("L", (40, 30), 90).save(image_file)
    items = [
        BenchmarkItem(
            id=f"i{i}",
            benchmark="b",
            family="vqa",
            images=(Image.new("RGB", (20, 20)) if i % 2 else str(image_file),),
            prompt="Which organ is shown?",
            gold="liver",
            max_new_tokens=2 + i % 3,
        )
        for i in range(5)
    ]
    p = VLMPredictor(tiny_checkpoint, batch_size=2, progress=False)
    assert p.fingerprint == f"vlm-greedy-float32-{weights_digest(tiny_checkpoint)}" and p._loaded is None
    answers = p.predict(items)
    assert len(answers) == 5 and all(isinstance(a, str) for a in answers)
    assert answers == VLMPredictor(tiny_checkpoint, batch_size=5, progress=False).predict(items)  # greedy
    fresh = VLMPredictor(tiny_checkpoint, progress=False)
    assert cached_predictions(p, "b", items, tmp_path / "c")[1] is False
    assert cached_predictions(fresh, "b", items, tmp_path / "c") == (answers, True)
    assert fresh._loaded is None  # a cached run never loads the model


def test_cli_writes_table_plots_and_json(bench, tiny_checkpoint, tmp_path, capsys):
    reg, root = bench
    out = tmp_path / "out"
    args = ["--registry", str(reg), "--benchmark", "mcq", "--benchmarks-root", str(root), "--out", str(out)]
    args += ["--checkpoint", f"base={tiny_checkpoint}", "--checkpoint", f"cand={tiny_checkpoint}"]
    assert main([*args, "--limit", "6", "--n-boot", "50", "--no-progress"]) == 0
    assert "| mcq | mcq_accuracy | 6 |" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"results.md", "results.csv", "results.json", "plots"}
    assert (out / "plots" / "mcq.png").stat().st_size > 1000
    doc = json.loads((out / "results.json").read_text())
    assert doc["candidate"] == "cand" and doc["differences"]["base"]["mcq"]["mcq_accuracy"]["value"] == 0.0
    assert any((tmp_path / ".bench_cache").rglob("mcq-*.json"))  # default cache next to --out
