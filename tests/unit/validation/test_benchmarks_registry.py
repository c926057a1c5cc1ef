"""The benchmark registry: the shipped YAML is valid, and every kind of mistake names the entry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from validation.benchmarks.registry import (
    DEFAULT_REGISTRY,
    BenchmarkFileNotFoundError,
    RegistryError,
    load_registry,
)

PAPER_FAMILIES = {
    "single_label",
    "multi_label",
    "vqa",
    "mcq",
    "report",
    "region_recognition",
    "lesion_localisation",
    "region_vqa",
    "guardrail",
}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "reg.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_shipped_registry_has_a_demo_mirror_of_every_paper_family():
    reg = load_registry()
    demo = [s for s in reg.specs.values() if s.source.kind == "demo_family"]
    assert PAPER_FAMILIES <= {s.family for s in demo}
    modality_and_diagnosis = {tuple(s.source.families) for s in demo if s.family == "single_label"}
    assert modality_and_diagnosis == {("modality",), ("single_label",)}
    assert all(s.source_path(None) is None for s in demo)  # demo entries never need a file


def test_commented_real_benchmark_examples_are_valid_entries(tmp_path):
    """Uncommenting the shipped examples gives a registry that validates (they cannot rot silently)."""
    text = DEFAULT_REGISTRY.read_text()
    block = text.split("# --- real benchmarks", 1)[1].split("\n", 1)[1]
    lines = [ln[1:] for ln in block.splitlines() if ln.startswith("#")]
    path = _write(tmp_path, "benchmarks:\n" + "\n".join(lines) + "\n")
    reg = load_registry(path)
    kinds = {s.source.kind for s in reg.specs.values()}
    assert kinds == {"vlmevalkit_tsv", "slake", "vqarad", "pathvqa", "medmnist"}
    with pytest.raises(BenchmarkFileNotFoundError, match=r"gmai_mmbench_val.*GMAI-MMBench_VAL\.tsv"):
        reg.check_files(["gmai_mmbench_val"], tmp_path)


ENTRY = """
benchmarks:
  b1:
    family: vqa
    source: {kind: demo_family, families: [vqa_closed]}
    metrics: [closed_accuracy]
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "metrics: [closed_accuracy]",
            "metrics: [closed_accuracy]\n    colour: red",
            r"b1.*colour.*Extra inputs",
        ),
        ("[closed_accuracy]", "[closed_acc]", r"b1.*unknown metric 'closed_acc'"),
        ("[closed_accuracy]", "[mean_iou]", r"b1.*metric 'mean_iou' does not apply to family 'vqa'"),
        ("family: vqa", "family: vqa_open", r"b1.*unknown family 'vqa_open'"),
        (
            "families: [vqa_closed]",
            "families: [mcq]",
            r"b1.*demo families \['mcq'\] cannot feed family 'vqa'",
        ),
        ("kind: demo_family", "kind: csv", r"b1.*source"),
        (
            "metrics: [closed_accuracy]",
            "metrics: [closed_accuracy]\n    prompt: 'Q: {question}'",
            r"b1.*remove 'prompt'",
        ),
        ("[closed_accuracy]", "[closed_accuracy, closed_accuracy]", r"b1.*listed twice"),
        ("metrics: [closed_accuracy]", "metrics: []", r"b1.*metrics"),
    ],
)
def test_invalid_entries_raise_naming_the_entry(tmp_path, old, new, message):
    path = _write(tmp_path, ENTRY.replace(old, new, 1))
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_file_sources_are_checked_against_the_family(tmp_path):
    tsv_as_vqa = """
    benchmarks:
      gmai:
        family: vqa
        source: {kind: vlmevalkit_tsv, path: gmai.tsv}
        metrics: [closed_accuracy]
    """
    with pytest.raises(RegistryError, match=r"gmai.*'vlmevalkit_tsv' cannot feed family 'vqa'"):
        load_registry(_write(tmp_path, tsv_as_vqa))
    medmnist_without_prompt = """
    benchmarks:
      path:
        family: single_label
        source: {kind: medmnist, path: p.npz, flavour: pathmnist, labels: {0: a, 1: b}}
        metrics: [macro_f1]
    """
    with pytest.raises(RegistryError, match=r"path.*give a 'prompt'"):
        load_registry(_write(tmp_path, medmnist_without_prompt))
    chest_as_single = medmnist_without_prompt.replace("pathmnist", "chestmnist").replace(
        "metrics:", "prompt: 'x {labels}'\n        metrics:"
    )
    with pytest.raises(RegistryError, match=r"chestmnist is multi-label"):
        load_registry(_write(tmp_path, chest_as_single))


def test_top_level_and_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(RegistryError, match=r"reg\.yaml: unknown top-level keys \['extra'\]"):
        load_registry(_write(tmp_path, ENTRY + "extra: 1\n"))
    with pytest.raises(RegistryError, match=r"reg\.yaml: invalid YAML"):
        load_registry(_write(tmp_path, "benchmarks: [unclosed\n"))
    with pytest.raises(RegistryError, match=r"non-empty 'benchmarks'"):
        load_registry(_write(tmp_path, "benchmarks: {}\n"))


def test_source_paths_resolve_against_the_benchmarks_root(tmp_path):
    path = _write(
        tmp_path,
        """
        benchmarks:
          slake:
            family: vqa
            source: {kind: slake, path: Slake1.0}
            metrics: [closed_accuracy]
        """,
    )
    spec = load_registry(path).select(["slake"])[0]
    with pytest.raises(RegistryError, match=r"slake.*relative.*benchmarks_root"):
        spec.source_path(None)
    with pytest.raises(BenchmarkFileNotFoundError, match=r"'slake'.*Slake1\.0 does not exist"):
        spec.source_path(tmp_path)
    (tmp_path / "Slake1.0").mkdir()
    assert spec.source_path(tmp_path) == tmp_path / "Slake1.0"
    with pytest.raises(RegistryError, match=r"no benchmark \['vqarad'\]"):
        load_registry(path).select(["vqarad"])
