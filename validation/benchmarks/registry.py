"""The declarative benchmark registry: ``registry.yaml`` validated into :class:`BenchmarkSpec` entries.

Each entry names a benchmark and says where its items come from (``source``), which paper family it
belongs to (``family``), how to prompt when the source has no prompt (``prompt``), which metrics to
report (``metrics``, names of :data:`validation.benchmarks.scoring.METRICS`) and how many items to
take (``limit``). Example::

    benchmarks:
      demo_vqa:
        family: vqa
        source: {kind: demo_family, families: [vqa_closed, vqa_open]}
        metrics: [closed_accuracy, open_recall, vqa_f1]
        limit: 150

Source kinds: ``demo_family`` (held-out curated rows of the demo corpus, no file), and real files
``vlmevalkit_tsv`` (GMAI-MMBench, OmniMedVQA), ``slake``, ``vqarad``, ``pathvqa``, ``medmnist``
(see :mod:`validation.benchmarks.importers`). A relative ``source.path`` is resolved against the
``benchmarks_root`` given at run time. Validation (pydantic, ``extra="forbid"``) rejects unknown
keys, unknown metrics, metrics that do not apply to the family, unknown families and sources that
cannot feed the family; every error names the file and the entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.data.importers.medmnist import MEDMNIST_FLAVOURS
from validation.benchmarks.items import FAMILIES
from validation.benchmarks.scoring import METRICS

__all__ = [
    "DEFAULT_REGISTRY",
    "BenchmarkFileNotFoundError",
    "BenchmarkSpec",
    "Registry",
    "RegistryError",
    "load_registry",
]

#: The registry shipped with the package (demo mirror + commented real-benchmark examples).
DEFAULT_REGISTRY = Path(__file__).with_name("registry.yaml")

#: registry family -> the demo corpus task families (validation.task_families) that can feed it.
DEMO_FAMILIES: dict[str, frozenset[str]] = {
    "single_label": frozenset({"modality", "single_label"}),
    "multi_label": frozenset({"multi_label"}),
    "vqa": frozenset({"vqa_closed", "vqa_open"}),
    "mcq": frozenset({"mcq"}),
    "report": frozenset({"report"}),
    "region_recognition": frozenset({"region_recognition"}),
    "region_detection": frozenset({"region_detection"}),
    "lesion_localisation": frozenset({"lesion_localisation"}),
    "region_vqa": frozenset({"region_detection", "region_recognition", "region_vqa"}),
    "guardrail": frozenset({"guardrail"}),
}
#: file source kind -> the families it can feed.
FILE_FAMILIES: dict[str, frozenset[str]] = {
    "vlmevalkit_tsv": frozenset({"mcq"}),
    "slake": frozenset({"vqa"}),
    "vqarad": frozenset({"vqa"}),
    "pathvqa": frozenset({"vqa"}),
    "medmnist": frozenset({"single_label", "multi_label"}),
}


class RegistryError(ValueError):
    """The registry file is malformed; the message names the file and the entry."""


class BenchmarkFileNotFoundError(FileNotFoundError):
    """A registry entry's source file is missing; the message names the entry and the path."""


_STRICT = ConfigDict(extra="forbid", frozen=True)


class DemoFamilySource(BaseModel):
    """Held-out curated rows of the demo corpus (``<data_root>/curated/shards``); no file to ship."""

    model_config = _STRICT
    kind: Literal["demo_family"]
    families: list[str] = Field(min_length=1)
    split: str = "test"
    modalities: list[str] | None = None
    seed: int = 0


class TsvSource(BaseModel):
    """A VLMEvalKit-style TSV (index, image, question, A/B/C/..., answer, group columns)."""

    model_config = _STRICT
    kind: Literal["vlmevalkit_tsv"]
    path: str
    group_columns: list[str] | None = None


class SlakeSource(BaseModel):
    """The SLAKE folder (``<split>.json`` + ``imgs/``); English questions only."""

    model_config = _STRICT
    kind: Literal["slake"]
    path: str
    split: Literal["train", "validate", "test"] = "test"


class VqaRadSource(BaseModel):
    """The VQA-RAD folder (public JSON + image folder); ``test`` = ``phrase_type`` test_*."""

    model_config = _STRICT
    kind: Literal["vqarad"]
    path: str
    split: Literal["test", "train", "all"] = "test"


class PathVqaSource(BaseModel):
    """The PathVQA folder (``qas/<split>_vqa.json`` + ``images/<split>/``)."""

    model_config = _STRICT
    kind: Literal["pathvqa"]
    path: str
    split: Literal["train", "val", "test"] = "test"


class MedmnistSource(BaseModel):
    """A MedMNIST ``.npz`` with its label names (MedMNIST ``INFO[flavour]["label"]``)."""

    model_config = _STRICT
    kind: Literal["medmnist"]
    path: str
    flavour: str
    labels: dict[int, str] = Field(min_length=2)
    split: Literal["train", "val", "test"] = "test"


Source = Annotated[
    DemoFamilySource | TsvSource | SlakeSource | VqaRadSource | PathVqaSource | MedmnistSource,
    Field(discriminator="kind"),
]


class BenchmarkSpec(BaseModel):
    """One registry entry (see the module docstring)."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    family: str
    source: Source
    metrics: list[str] = Field(min_length=1)
    prompt: str | None = None
    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int | None = Field(default=None, gt=0)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkSpec:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; known: {list(FAMILIES)}")
        for m in self.metrics:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; known: {sorted(METRICS)}")
            if self.family not in METRICS[m].families:
                raise ValueError(f"metric {m!r} does not apply to family {self.family!r}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics listed twice: {self.metrics}")
        self._check_source()
        return self

    def _check_source(self) -> None:
        src = self.source
        if isinstance(src, DemoFamilySource):
            bad = set(src.families) - DEMO_FAMILIES[self.family]
            if bad:
                raise ValueError(
                    f"demo families {sorted(bad)} cannot feed family {self.family!r}; "
                    f"allowed: {sorted(DEMO_FAMILIES[self.family])}"
                )
            if self.prompt is not None:
                raise ValueError("demo_family entries use the curated prompts; remove 'prompt'")
            return
        if self.family not in FILE_FAMILIES[src.kind]:
            raise ValueError(f"source kind {src.kind!r} cannot feed family {self.family!r}")
        if isinstance(src, MedmnistSource):
            if src.flavour not in MEDMNIST_FLAVOURS:
                raise ValueError(
                    f"unknown MedMNIST flavour {src.flavour!r}; known: {sorted(MEDMNIST_FLAVOURS)}"
                )
            multi = MEDMNIST_FLAVOURS[src.flavour][2]
            if multi != (self.family == "multi_label"):
                raise ValueError(f"MedMNIST {src.flavour} is {'multi' if multi else 'single'}-label")
            if self.prompt is None:
                raise ValueError("MedMNIST has no question: give a 'prompt' (placeholder {labels})")

    def source_path(self, benchmarks_root: str | os.PathLike | None) -> Path | None:
        """The source file/folder (None for demo entries); a relative path joins ``benchmarks_root``.

        Raises:
            RegistryError: the path is relative and no ``benchmarks_root`` is given.
            BenchmarkFileNotFoundError: the path does not exist.
        """
        if isinstance(self.source, DemoFamilySource):
            return None
        path = Path(self.source.path).expanduser()
        if not path.is_absolute():
            if benchmarks_root is None:
                raise RegistryError(
                    f"benchmark {self.name!r}: source.path {self.source.path!r} is relative; "
                    "pass benchmarks_root (CLI --benchmarks-root) or make it absolute"
                )
            path = Path(benchmarks_root) / path
        if not path.exists():
            raise BenchmarkFileNotFoundError(
                f"benchmark {self.name!r}: source file {path} does not exist; put the "
                f"{self.source.kind} files there or fix source.path / benchmarks_root"
            )
        return path


@dataclass(frozen=True)
class Registry:
    """The validated entries of one registry file, in file order."""

    path: Path
    specs: dict[str, BenchmarkSpec]

    def select(self, names: Sequence[str] | None = None) -> list[BenchmarkSpec]:
        """The named entries (all when None), in the order given.

        Raises:
            RegistryError: an unknown name.
        """
        if names is None:
            return list(self.specs.values())
        unknown = [n for n in names if n not in self.specs]
        if unknown:
            raise RegistryError(f"{self.path}: no benchmark {unknown}; known: {list(self.specs)}")
        return [self.specs[n] for n in names]

    def check_files(self, names: Sequence[str] | None, benchmarks_root: str | os.PathLike | None) -> None:
        """Raise before any evaluation when a selected entry's file is missing (see :meth:`BenchmarkSpec.source_path`)."""
        for spec in self.select(names):
            spec.source_path(benchmarks_root)


def _errors(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}" for err in e.errors()
    )


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and validate a registry YAML (default: the shipped :data:`DEFAULT_REGISTRY`).

    Raises:
        RegistryError: unreadable YAML, unknown top-level keys, or an invalid entry (named).
    """
    path = Path(path) if path is not None else DEFAULT_REGISTRY
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RegistryError(f"{path}: cannot read the registry: {e}") from e
    except yaml.YAMLError as e:
        raise RegistryError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), dict) or not doc["benchmarks"]:
        raise RegistryError(f"{path}: expected a mapping with a non-empty 'benchmarks' mapping")
    extra = set(doc) - {"benchmarks"}
    if extra:
        raise RegistryError(f"{path}: unknown top-level keys {sorted(extra)} (only 'benchmarks')")
    specs: dict[str, BenchmarkSpec] = {}
    for name, entry in doc["benchmarks"].items():
        if not isinstance(entry, dict):
            raise RegistryError(f"{path}: benchmark {name!r}: expected a mapping, got {type(entry).__name__}")
        if "name" in entry:
            raise RegistryError(f"{path}: benchmark {name!r}: the name is the key; remove 'name'")
        try:
            specs[str(name)] = BenchmarkSpec.model_validate({**entry, "name": str(name)})
        except ValidationError as e:
            raise RegistryError(f"{path}: benchmark {name!r}: {_errors(e)}") from e
    return Registry(path, specs)
