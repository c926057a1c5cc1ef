"""Data-quality gates of the data plane: Great Expectations 1.x suites over the manifest and shards.

Seven named checks (:func:`check_names`) guard the curated dataset before anything trains on it;
the Dagster asset checks of ``assets/`` wrap them one to one with ``blocking=True``:

==================== =====================================================================
check                what fails it
==================== =====================================================================
manifest_schema      Parquet columns/types differ from ``IMAGE_SCHEMA``; a required field is
                     null; modality, split, site role, lesion severity or region name outside
                     the allowed sets; duplicate ``image_id``; absolute or ``..`` image paths
manifest_boxes       a region or lesion box outside its image, or with ``x1 >= x2``/``y1 >= y2``
image_files          a sampled image is missing, does not decode, has another size or another
                     SHA-256 than the manifest says
split_integrity      a patient in two splits; an external-site patient outside ``external`` (or an
                     internal one inside it); an image hash in two splits; the patient table
                     disagrees with the manifest's patient split (needs only ingest outputs)
instruction_schema   shard columns/types differ from ``INSTRUCTION_SCHEMA``; unknown task; a
                     conversation that does not start with a human turn, alternate and end with
                     an answer; a blank turn; ``<image>`` placeholders not matching the images;
                     a ``<box>`` that :func:`model.data.boxes.parse_boxes` rejects or that lies
                     outside ``0..1000`` or has ``x1 >= x2``/``y1 >= y2``; an instruction whose
                     split is not its patient's manifest split (leakage through curation)
phi_free             a prompt or answer matching a PHI pattern of :mod:`validation.phi`
class_balance        a task family above ``max_task_share`` or below ``min_task_count``; the
                     closed-VQA "yes" share outside ``closed_yes_share``; a modality above
                     ``max_modality_share`` of the manifest
==================== =====================================================================

Each check validates one or more pandas frames (:mod:`validation.quality_frames`), each with an
ExpectationSuite of built-in expectations and a ValidationDefinition in a file data context, with
``result_format=COMPLETE`` and identifying columns so that a failure names its rows. Data Docs
are rebuilt for the validations of the run.

Example (needs an ingested and curated profile; ``python -m validation.data_quality --profile ci``
does the same from params.yaml)::

    report = run_data_quality(Path("data/ci"), gx_root=Path("gx"), allowed_regions=None,
                              decode_sample=64, max_task_share=0.45, min_task_count=1,
                              closed_yes_share=(0.2, 0.8), max_modality_share=0.5)
    if not report.passed:
        print(report.outcomes[report.failed()[0]].to_markdown())
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from model.data.schema import (
    IMAGE_SCHEMA,
    INSTRUCTION_SCHEMA,
    MODALITIES,
    SEVERITIES,
    SITE_ROLES,
    SPLITS,
    TASKS,
)
from validation import phi
from validation import quality_frames as qf

if TYPE_CHECKING:  # great_expectations takes seconds to import: only the run needs it
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.expectations import Expectation

__all__ = ["CheckOutcome", "QualityReport", "check_names", "main", "run_data_quality"]

log = logging.getLogger(__name__)

_CHECKS: dict[str, str] = {
    "manifest_schema": "Manifest columns and Arrow types match IMAGE_SCHEMA; required fields are set; modality, "
    "split, site role, lesion severity and region names are in the allowed sets; image ids unique.",
    "manifest_boxes": "Every region and lesion box lies inside its image with x1 < x2 and y1 < y2.",
    "image_files": "A seeded sample of images exists, decodes, and matches the manifest's size and SHA-256.",
    "split_integrity": "No patient in two splits, external-site patients only in 'external', no image hash "
    "in two splits; the patient table agrees with the manifest split.",
    "instruction_schema": "Shard columns and types match INSTRUCTION_SCHEMA; known tasks; conversations start "
    "with a human turn, alternate and end with a non-blank answer; <image> and <box> markup is valid; "
    "every instruction's split is its patient's manifest split.",
    "phi_free": "No prompt or answer contains PHI-like text: personal names, record numbers, dates.",
    "class_balance": "Task families, the closed-VQA yes share and manifest modalities stay within bounds.",
}
_MAX_FAILURES = 20
_DATASOURCE = "xmed"
_MANIFEST_SCALARS = [
    f.name
    for f in IMAGE_SCHEMA
    if f.name not in ("findings", "regions", "lesions", "vqa", "mcq", "spoken_queries")
]
_MANIFEST_REQUIRED = [
    c
    for c in _MANIFEST_SCALARS
    if c not in ("pixel_spacing_mm", "diagnosis", "report_findings", "report_impression", "prior_image_id")
]
_INSTRUCTION_SCALARS = [
    "id",
    "task",
    "width",
    "height",
    "patient_id",
    "split",
    "site",
    "site_role",
    "modality",
    "source",
    "template_id",
]
_UNSAFE_PATH = r"^/|^[A-Za-z]:|(?:^|/)\.\.(?:/|$)"


def check_names() -> tuple[str, ...]:
    """The fixed names of the data-quality checks, in run order (the Dagster check names)."""
    return tuple(_CHECKS)


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check.

    Attributes:
        name: the check name (one of :func:`check_names`).
        passed: every expectation of every frame of the check succeeded.
        description: what the check asserts.
        n_rows: rows the check is about (images, instructions, sampled images, ...).
        n_failed: distinct failing rows over the check's frames.
        failures: at most 20 failing rows (spread over the failed expectations): the frame, the
            identifying columns, the expectation type and a reason with the offending values.
        expectations: one entry per expectation: frame, type, columns, success, unexpected_count.
    """

    name: str
    passed: bool
    description: str
    n_rows: int
    n_failed: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A Markdown summary (status, expectation table, failing rows) for Dagster metadata."""
        status = "PASSED" if self.passed else f"FAILED: {self.n_failed} failing row(s)"
        lines = [
            f"**{self.name}**: {status} of {self.n_rows} row(s)",
            "",
            self.description,
            "",
            "| frame | expectation | columns | success | unexpected |",
            "|---|---|---|---|---|",
        ]
        for e in self.expectations:
            lines.append(
                f"| {e['frame']} | {e['type']} | {', '.join(e['columns'])} | "
                f"{'yes' if e['success'] else 'NO'} | {e['unexpected_count']} |"
            )
        if self.failures:
            lines += ["", "Failing rows:", ""]
            for f in self.failures:
                ident = ", ".join(f"{k}={v}" for k, v in f["row"].items())
                lines.append(f"- `{f['frame']}` {ident}: {_md(f['reason'])}")
        return "\n".join(lines)


@dataclass(frozen=True)
class QualityReport:
    """The outcomes of a data-quality run and where its Data Docs were written."""

    outcomes: dict[str, CheckOutcome]
    data_docs_index: Path | None

    @property
    def passed(self) -> bool:
        """All checks passed."""
        return all(o.passed for o in self.outcomes.values())

    def failed(self) -> list[str]:
        """Names of the failed checks, in run order."""
        return [n for n, o in self.outcomes.items() if not o.passed]


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def run_data_quality(
    data_root: Path,
    *,
    gx_root: Path,
    allowed_regions: set[str] | None,
    decode_sample: int,
    max_task_share: float,
    min_task_count: int,
    closed_yes_share: tuple[float, float],
    max_modality_share: float,
    seed: int = 0,
    checks: Sequence[str] | None = None,
    build_docs: bool = True,
    suite_prefix: str | None = None,
) -> QualityReport:
    """Run the data-quality checks of one data root and build Data Docs.

    Args:
        data_root: the profile's data folder (``data/<profile>``) holding ``manifest/`` and ``curated/``.
        gx_root: the Great Expectations project folder (holds ``great_expectations.yml``; created
            if missing). Suites and validation definitions are added or updated there; results and
            Data Docs go to its ``uncommitted/``.
        allowed_regions: the region catalogue's names; ``None`` skips the region-name rule.
        decode_sample: how many images ``image_files`` opens (seeded sample).
        max_task_share: the largest share of the instructions one task family may take.
        min_task_count: the fewest instructions every task family of ``TASKS`` must have.
        closed_yes_share: ``(lo, hi)`` bounds of the "yes" share of closed-VQA answers.
        max_modality_share: the largest share of manifest images one modality may take.
        seed: sampling seed of ``image_files``.
        checks: run only these checks (default: all, in :func:`check_names` order).
        build_docs: rebuild Data Docs for this run's validations.
        suite_prefix: prefix of suite/asset names (default: the data root's folder name, i.e. the
            profile), so that profiles keep separate suites in one project.

    Returns:
        A :class:`QualityReport` with one outcome per check run.

    Raises:
        FileNotFoundError: the manifest, patient table or instruction shards are missing.
        SchemaError: a column another check needs is missing or cannot be cast (``manifest_schema``
            / ``instruction_schema`` report these as failures instead).
        ValueError: a bad parameter or unknown check name, or a share over zero rows.
        RuntimeError: Great Expectations could not evaluate an expectation.
    """
    _check_params(decode_sample, max_task_share, min_task_count, closed_yes_share, max_modality_share)
    names = check_names() if checks is None else tuple(checks)
    unknown = sorted(set(names) - set(_CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {list(_CHECKS)}")
    data_root = Path(data_root)
    src = _Sources(data_root)
    builders: dict[str, Callable[[], tuple[list[_Part], int]]] = {
        "manifest_schema": lambda: _manifest_schema(src, allowed_regions),
        "manifest_boxes": lambda: _manifest_boxes(src),
        "image_files": lambda: _image_files(src, decode_sample, seed),
        "split_integrity": lambda: _split_integrity(src),
        "instruction_schema": lambda: _instruction_schema(src),
        "phi_free": lambda: _phi_free(src),
        "class_balance": lambda: _class_balance(
            src, max_task_share, min_task_count, closed_yes_share, max_modality_share
        ),
    }
    runner = _GxRunner(Path(gx_root), prefix=suite_prefix or data_root.resolve().name)
    outcomes = {}
    for name in names:
        parts, n_rows = builders[name]()
        results = [runner.validate(f"{name}.{p.name}", p) for p in parts]
        outcomes[name] = _outcome(name, parts, results, n_rows)
        log.info("data quality %s: %s", name, "passed" if outcomes[name].passed else "FAILED")
    return QualityReport(outcomes=outcomes, data_docs_index=runner.build_docs() if build_docs else None)


def _check_params(
    decode_sample, max_task_share, min_task_count, closed_yes_share, max_modality_share
) -> None:
    lo, hi = closed_yes_share
    problems = [
        (decode_sample < 1, f"decode_sample must be >= 1, got {decode_sample}"),
        (not 0 < max_task_share <= 1, f"max_task_share must be in (0, 1], got {max_task_share}"),
        (min_task_count < 0, f"min_task_count must be >= 0, got {min_task_count}"),
        (not 0 <= lo <= hi <= 1, f"closed_yes_share must satisfy 0 <= lo <= hi <= 1, got {closed_yes_share}"),
        (not 0 < max_modality_share <= 1, f"max_modality_share must be in (0, 1], got {max_modality_share}"),
    ]
    for bad, msg in problems:
        if bad:
            raise ValueError(msg)


@dataclass(frozen=True)
class _Part:
    """One frame of a check with its expectations and identifying columns."""

    name: str
    frame: pd.DataFrame
    ids: tuple[str, ...]
    expectations: list[Expectation]
    explain: Callable[[dict[str, Any]], str] | None = None
    #: keep the offending values out of results, Data Docs and reasons (PHI): rows are named only
    redact: bool = False


class _Sources:
    """Reads the data root's tables; caches the instruction turns that three checks share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._turns: dict[bool, pd.DataFrame] = {}

    def manifest(self, columns: list[str], *, tolerant: bool = False):
        files = qf.dataset_files(self.root, qf.MANIFEST_DIR)
        return qf.read_columns(files, IMAGE_SCHEMA, columns, root=self.root, tolerant=tolerant)

    def instructions(self, columns: list[str], *, tolerant: bool = False):
        files = qf.dataset_files(self.root, qf.SHARDS_DIR)
        return qf.read_columns(files, INSTRUCTION_SCHEMA, columns, root=self.root, tolerant=tolerant)

    def turns(self, *, tolerant: bool = False) -> pd.DataFrame:
        if tolerant not in self._turns:
            self._turns[tolerant] = qf.turn_frame(
                self.instructions(["id", "task", "conversations"], tolerant=tolerant)
            )
        return self._turns[tolerant]

    def schema(self, rel: str, schema) -> pd.DataFrame:
        return qf.schema_frame(qf.dataset_files(self.root, rel), schema, self.root)


# ---------------------------------------------------------------------------------------------
# expectation helpers (each carries the description that failure reasons and Data Docs show)
# ---------------------------------------------------------------------------------------------


def _E():
    import great_expectations as gx

    return gx.expectations


def _not_null(*cols: str) -> list[Expectation]:
    return [_E().ExpectColumnValuesToNotBeNull(column=c, description=f"{c} must be set") for c in cols]


def _in_set(col: str, values: Iterable[Any], what: str) -> Expectation:
    return _E().ExpectColumnValuesToBeInSet(
        column=col, value_set=sorted(values), description=f"{col} must be {what}"
    )


def _between(
    col: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    strict_min: bool = False,
    what: str | None = None,
) -> Expectation:
    bound = " and ".join(
        s
        for s in (
            None if lo is None else f"{'>' if strict_min else '>='} {lo}",
            None if hi is None else f"<= {hi}",
        )
        if s
    )
    return _E().ExpectColumnValuesToBeBetween(
        column=col,
        min_value=lo,
        max_value=hi,
        strict_min=strict_min,
        description=what or f"{col} must be {bound}",
    )


def _greater(a: str, b: str, *, or_equal: bool = False, what: str) -> Expectation:
    return _E().ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=a, column_B=b, or_equal=or_equal, description=what
    )


def _equal(a: str, b: str, what: str) -> Expectation:
    return _E().ExpectColumnPairValuesToBeEqual(column_A=a, column_B=b, description=what)


def _unique(col: str, what: str) -> Expectation:
    return _E().ExpectColumnValuesToBeUnique(column=col, description=what)


def _has_rows(what: str) -> Expectation:
    return _E().ExpectTableRowCountToBeBetween(min_value=1, description=what)


def _schema_part(frame: pd.DataFrame, contract: str) -> _Part:
    return _Part(
        "columns",
        frame,
        ("file", "column"),
        [_equal("actual_type", "expected_type", f"the file's column must exist with the {contract} type")],
    )


# ---------------------------------------------------------------------------------------------
# the seven checks: each returns its parts and the number of rows it is about
# ---------------------------------------------------------------------------------------------


def _manifest_schema(src: _Sources, allowed_regions: set[str] | None) -> tuple[list[_Part], int]:
    t = src.manifest([*_MANIFEST_SCALARS, "regions", "lesions"], tolerant=True)
    table = t.select(_MANIFEST_SCALARS).to_pandas()
    E = _E()
    table_rules = [
        _has_rows("the manifest must have images"),
        *_not_null(*_MANIFEST_REQUIRED),
        _unique("image_id", "image_id must be unique"),
        E.ExpectColumnValueLengthsToBeBetween(
            column="patient_id", min_value=1, description="patient_id must not be empty"
        ),
        E.ExpectColumnValuesToMatchRegex(
            column="image_sha256",
            regex=r"^[0-9a-f]{64}$",
            description="image_sha256 must be 64 lower-case hex digits",
        ),
        E.ExpectColumnValuesToNotMatchRegex(
            column="image_path",
            regex=_UNSAFE_PATH,
            description="image_path must be relative to the data root, without '..'",
        ),
        _in_set("modality", MODALITIES, "a known modality"),
        _in_set("split", SPLITS, "train, val, test or external"),
        _in_set("site_role", SITE_ROLES, "internal or external"),
        _between("width", 1),
        _between("height", 1),
        _between("visit_index", 0),
        _between("visit_month", 0),
        _between("pixel_spacing_mm", 0, strict_min=True),
    ]
    regions = qf.flatten_list(t, "regions", keep=["image_id"], fields=["name"])
    lesions = qf.flatten_list(
        t, "lesions", keep=["image_id"], fields=["lesion_type", "region", "severity", "size_mm"]
    )
    region_rules, lesion_rules = (
        _not_null("name"),
        [
            *_not_null("lesion_type", "region", "severity", "size_mm"),
            _in_set("severity", SEVERITIES, "mild, moderate or severe"),
            _between("size_mm", 0, strict_min=True),
        ],
    )
    if allowed_regions is not None:
        region_rules.append(_in_set("name", allowed_regions, "a region of the catalogue"))
        lesion_rules.append(_in_set("region", allowed_regions, "a region of the catalogue"))
    parts = [
        _Part("table", table, ("image_id",), table_rules),
        _schema_part(src.schema(qf.MANIFEST_DIR, IMAGE_SCHEMA), "IMAGE_SCHEMA"),
        _Part("regions", regions, ("image_id", "index"), region_rules),
        _Part("lesions", lesions, ("image_id", "index"), lesion_rules),
    ]
    return parts, len(table)


def _manifest_boxes(src: _Sources) -> tuple[list[_Part], int]:
    boxes = qf.box_frame(src.manifest(["image_id", "width", "height", "regions", "lesions"]))
    rules = [
        *_not_null("x1", "y1", "x2", "y2"),
        _between("x1", 0, what="the box must not start left of the image (x1 >= 0)"),
        _between("y1", 0, what="the box must not start above the image (y1 >= 0)"),
        _greater("x2", "x1", what="the box must have x1 < x2"),
        _greater("y2", "y1", what="the box must have y1 < y2"),
        _greater("width", "x2", or_equal=True, what="the box must end inside the image (x2 <= width)"),
        _greater("height", "y2", or_equal=True, what="the box must end inside the image (y2 <= height)"),
    ]
    return [_Part("boxes", boxes, ("image_id", "kind", "index", "name"), rules)], len(boxes)


def _image_files(src: _Sources, decode_sample: int, seed: int) -> tuple[list[_Part], int]:
    table = src.manifest(["image_id", "image_path", "width", "height", "image_sha256"])
    sample = qf.decode_frame(table, src.root, sample=decode_sample, seed=seed)
    rules = [
        _has_rows("the manifest must have images to sample"),
        _in_set("exists", [True], "True: the image file must exist"),
        _in_set("decodes", [True], "True: the image file must decode"),
        _equal("decoded_width", "width", "the decoded width must equal the manifest width"),
        _equal("decoded_height", "height", "the decoded height must equal the manifest height"),
        _equal("file_sha256", "image_sha256", "the file's SHA-256 must equal the manifest image_sha256"),
    ]
    return [_Part("sample", sample, ("image_id", "image_path", "error"), rules)], len(sample)


def _split_integrity(src: _Sources) -> tuple[list[_Part], int]:
    m = src.manifest(["image_id", "patient_id", "site", "site_role", "split", "image_sha256"]).to_pandas()
    patient_split = m.drop_duplicates("patient_id").set_index("patient_id")["split"]
    # site role and split joined into one column: the pair expectation's pandas metric iterates rows
    roles = m[["patient_id", "site", "site_role", "split"]].drop_duplicates()
    roles["role_split"] = roles["site_role"] + "/" + roles["split"]
    hashes = m.drop_duplicates(["image_sha256", "split"])[["image_sha256", "split", "image_id"]]
    manifest_split = patient_split.rename("manifest_split").reset_index()
    patients = pq.read_table(
        qf.dataset_files(src.root, qf.PATIENTS_FILE)[0], columns=["patient_id", "split"]
    ).to_pandas()
    table = patients.rename(columns={"split": "table_split"}).merge(
        manifest_split, how="outer", on="patient_id"
    )
    parts = [
        _Part(
            "patient_split",
            m[["patient_id", "split"]].drop_duplicates(),
            ("patient_id", "split"),
            [_unique("patient_id", "a patient must belong to exactly one split")],
        ),
        _Part(
            "site_role_split",
            roles,
            ("patient_id", "site"),
            [
                _in_set(
                    "role_split",
                    ["internal/train", "internal/val", "internal/test", "external/external"],
                    "site_role/split of internal/{train,val,test} or external/external: external-site "
                    "patients never train",
                )
            ],
        ),
        _Part(
            "site_role",
            m[["site", "site_role"]].drop_duplicates(),
            ("site", "site_role"),
            [_unique("site", "a site must have one role (internal or external)")],
        ),
        _Part(
            "image_hash",
            hashes,
            ("image_sha256", "split", "image_id"),
            [_unique("image_sha256", "an image hash must not appear in two splits")],
        ),
        _Part(
            "patients_table",
            table,
            ("patient_id",),
            [
                _unique("patient_id", "the patient table must list a patient once"),
                _equal(
                    "table_split", "manifest_split", "the patient table's split must equal the manifest's"
                ),
            ],
        ),
    ]
    return parts, int(m["patient_id"].nunique())


def _instruction_schema(src: _Sources) -> tuple[list[_Part], int]:
    t = src.instructions([*_INSTRUCTION_SCALARS, "images", "image_ids", "conversations"], tolerant=True)
    turns = src.turns(tolerant=True)
    table = t.select(_INSTRUCTION_SCALARS).to_pandas()
    for col in ("images", "image_ids", "conversations"):
        table[f"n_{col}"] = pc.list_value_length(t.column(col)).to_pandas()
    first = turns[turns["turn"] == 0].set_index("id")["value"].fillna("").str.count("<image>")
    last = turns[turns["is_last"]].set_index("id")["from"]
    table["n_image_tokens"] = table["id"].map(first[~first.index.duplicated()])
    table["last_from"] = table["id"].map(last[~last.index.duplicated()])
    E = _E()
    table_rules = [
        _has_rows("the shards must have instructions"),
        *_not_null(*_INSTRUCTION_SCALARS),
        _unique("id", "id must be unique"),
        _in_set("task", TASKS, "a task family of schema.TASKS"),
        _in_set("split", SPLITS, "train, val, test or external"),
        _in_set("site_role", SITE_ROLES, "internal or external"),
        _in_set("modality", MODALITIES, "a known modality"),
        _between("width", 1),
        _between("height", 1),
        _between("n_conversations", 2, what="a conversation needs a prompt and an answer (>= 2 turns)"),
        _in_set("last_from", ["gpt"], "gpt: a conversation must end with an answer"),
        _equal("n_image_ids", "n_images", "image_ids must pair one to one with images"),
        _equal("n_image_tokens", "n_images", "the first human turn must hold one <image> per image"),
    ]
    turn_rules = [
        *_not_null("value"),
        E.ExpectColumnValuesToMatchRegex(column="value", regex=r"\S", description="a turn must not be blank"),
        _equal("from", "expected_from", "turns must start with human and alternate human/gpt"),
        _equal("n_box_open", "n_box_close", "every <box> must be closed by </box>"),
        _equal("n_ref_open", "n_ref_close", "every <ref> must be closed by </ref>"),
    ]
    boxes = qf.text_box_frame(turns)
    box_rules = [
        _in_set("parses", [True], "True: the <box> must parse with parse_boxes(strict=True)"),
        *[_between(c, 0, 1000, what=f"{c} must lie in 0..1000") for c in ("x1", "y1", "x2", "y2")],
        _greater("x2", "x1", what="the text box must have x1 < x2"),
        _greater("y2", "y1", what="the text box must have y1 < y2"),
    ]
    parts = [
        _Part("table", table, ("id",), table_rules),
        _schema_part(src.schema(qf.SHARDS_DIR, INSTRUCTION_SCHEMA), "INSTRUCTION_SCHEMA"),
        _Part("turns", turns, ("id", "turn", "from"), turn_rules),
        _Part("text_boxes", boxes, ("id", "turn", "box_index", "box", "parse_error"), box_rules),
        _instruction_split_part(src),
    ]
    return parts, len(table)


def _instruction_split_part(src: _Sources) -> _Part:
    """Instruction rows against the manifest's patient split. It belongs to instruction_schema, not
    split_integrity: split_integrity gates the manifest before curation, when shards may be absent
    or stale."""
    m = src.manifest(["patient_id", "split"]).to_pandas().drop_duplicates("patient_id")
    instr = src.instructions(["patient_id", "split"]).to_pandas().drop_duplicates()
    instr = instr.merge(m.rename(columns={"split": "manifest_split"}), how="left", on="patient_id")
    rule = _equal("split", "manifest_split", "an instruction's split must equal its patient's manifest split")
    return _Part("manifest_split", instr, ("patient_id", "split"), [rule])


def _phi_free(src: _Sources) -> tuple[list[_Part], int]:
    turns = src.turns()[["id", "turn", "from", "value"]]
    text = turns.set_index(["id", "turn"])["value"]
    rules = [
        _E().ExpectColumnValuesToNotMatchRegexList(
            column="value",
            regex_list=list(pats),
            description=f"a turn must not contain PHI-like {family}s ({len(pats)} patterns of validation.phi)",
        )
        for family, pats in phi.PHI_PATTERNS.items()
    ]

    def explain(row: dict[str, Any]) -> str:  # the match's shape only: a report must not carry PHI
        hits = phi.find_phi(str(text.get((row.get("id"), row.get("turn")), "")))
        return "matched " + ", ".join(f"{fam} {phi.mask(txt)!r}" for fam, txt in hits[:3]) if hits else ""

    parts = [_Part("turns", turns, ("id", "turn", "from"), rules, explain, redact=True)]
    return parts, int(turns["id"].nunique())


def _class_balance(
    src: _Sources,
    max_task_share: float,
    min_task_count: int,
    closed_yes_share: tuple[float, float],
    max_modality_share: float,
) -> tuple[list[_Part], int]:
    tasks = src.instructions(["task"]).column("task").to_pandas()
    closed = qf.closed_answer_frame(src.turns())
    n_closed = len(closed)
    yes = pd.DataFrame(
        {
            "n_closed": [n_closed],
            "yes_share": [float((closed["label"] == "yes").mean()) if n_closed else np.nan],
        }
    )
    modality = qf.share_frame(src.manifest(["modality"]).column("modality").to_pandas(), "modality")
    lo, hi = closed_yes_share
    parts = [
        _Part(
            "task_share",
            qf.task_share_frame(tasks),
            ("task",),
            [
                _between(
                    "share",
                    hi=max_task_share,
                    what=f"a task family must be <= {max_task_share} of instructions",
                ),
                _between(
                    "count", min_task_count, what=f"every task family needs >= {min_task_count} instructions"
                ),
            ],
        ),
        _Part(
            "closed_answers",
            closed,
            ("id",),
            [*_not_null("label"), _in_set("label", ["no", "yes"], "yes or no: a closed-VQA answer")],
        ),
        _Part(
            "closed_yes_share",
            yes,
            ("n_closed",),
            [
                *_not_null("yes_share"),
                _between("yes_share", lo, hi, what=f"the closed-VQA yes share must lie in [{lo}, {hi}]"),
            ],
        ),
        _Part(
            "modality_share",
            modality,
            ("modality",),
            [
                _between(
                    "share",
                    hi=max_modality_share,
                    what=f"a modality must be <= {max_modality_share} of manifest images",
                )
            ],
        ),
    ]
    return parts, len(tasks)


# ---------------------------------------------------------------------------------------------
# Great Expectations plumbing
# ---------------------------------------------------------------------------------------------


class _GxRunner:
    """A file data context with one pandas data source; one asset, suite and validation per frame."""

    def __init__(self, gx_root: Path, *, prefix: str) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.prefix = prefix
        gx_root.mkdir(parents=True, exist_ok=True)
        self.context = gx.get_context(mode="file", context_root_dir=str(gx_root))
        if self.context.config.analytics_enabled is not False or self.context.variables.progress_bars is None:
            self.context.config.analytics_enabled = False
            self.context.variables.progress_bars = ProgressBarsConfig(
                globally=False, metric_calculations=False
            )
            self.context.variables.save()
        try:
            self.source = self.context.data_sources.get(_DATASOURCE)
        except KeyError:
            self.source = self.context.data_sources.add_pandas(name=_DATASOURCE)
        self.identifiers: list[Any] = []

    def validate(self, name: str, part: _Part) -> ExpectationSuiteValidationResult:
        """Add or update the suite and validation definition of ``part`` and run it on its frame."""
        gx = self._gx
        full = f"{self.prefix}.{name}"
        asset_name = full.rsplit(".", 1)[0]  # one dataframe asset per check; frames come at run time
        try:
            asset = self.source.get_asset(asset_name)
        except LookupError:
            asset = self.source.add_dataframe_asset(name=asset_name)
        try:
            batch = asset.get_batch_definition("whole")
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe("whole")
        suite = self.context.suites.add_or_update(
            gx.ExpectationSuite(name=full, expectations=part.expectations)
        )
        vd = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=full, data=batch, suite=suite)
        )
        result = vd.run(
            batch_parameters={"dataframe": qf.widen_numeric(part.frame.reset_index(drop=True)).copy()},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": list(part.ids),
                "exclude_unexpected_values": part.redact,
            },
        )
        self._remember(full, result)
        return result

    def _remember(self, suite_name: str, result: ExpectationSuiteValidationResult) -> None:
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        suite_id = ExpectationSuiteIdentifier(name=suite_name)
        self.identifiers += [
            suite_id,
            ValidationResultIdentifier(
                expectation_suite_identifier=suite_id,
                run_id=result.meta["run_id"],
                batch_identifier=result.batch_id,
            ),
        ]

    def build_docs(self) -> Path:
        """Render this run's suites and validations into the local Data Docs site; its index.html."""
        sites = self.context.build_data_docs(resource_identifiers=self.identifiers)
        url = sites.get("local_site") or next(iter(sites.values()))
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if not path.is_file():
            raise RuntimeError(f"Data Docs were not written: {path} is missing")
        return path


def _outcome(
    name: str, parts: list[_Part], results: list[ExpectationSuiteValidationResult], n_rows: int
) -> CheckOutcome:
    expectations, per_expectation, failed_keys = [], [], set()
    for part, result in zip(parts, results):
        for r in result.results:
            cfg = r.expectation_config
            _raise_on_exception(name, part.name, cfg.type, r.exception_info)
            res = r.result or {}
            expectations.append(
                {
                    "frame": part.name,
                    "type": cfg.type,
                    "columns": _columns(cfg.kwargs),
                    "success": bool(r.success),
                    "unexpected_count": res.get("unexpected_count", 0),
                }
            )
            if r.success:
                continue
            rows = res.get("unexpected_index_list")
            if part.redact and rows:  # GX then returns the ids column-wise: [{"id": [...], ...}]
                rows = [dict(zip(d, vals)) for d in rows for vals in zip(*d.values())]
            if rows is None:  # a table-level expectation: no rows to name
                failed_keys.add((part.name, cfg.type))
                rows = [{"observed_value": res.get("observed_value")}]
            failures = []
            for row in rows:
                row = {k: _plain(v) for k, v in row.items()}
                failed_keys.add((part.name, *(row.get(c) for c in part.ids)))
                if len(failures) < _MAX_FAILURES:
                    failures.append(_failure(part, cfg, row))
            per_expectation.append(failures)
    return CheckOutcome(
        name=name,
        passed=all(r.success for r in results),
        description=_CHECKS[name],
        n_rows=n_rows,
        n_failed=len(failed_keys),
        failures=_interleave(per_expectation, _MAX_FAILURES),
        expectations=expectations,
    )


def _raise_on_exception(check: str, part: str, typ: str, info: dict | None) -> None:
    infos = [info] if info and "raised_exception" in info else list((info or {}).values())
    for i in infos:
        if isinstance(i, dict) and i.get("raised_exception"):
            raise RuntimeError(
                f"{check}.{part}: Great Expectations could not evaluate {typ}: {i.get('exception_message')}"
            )


def _failure(part: _Part, cfg: Any, row: dict[str, Any]) -> dict[str, Any]:
    ident = {c: row[c] for c in part.ids if c in row}
    values = ", ".join(f"{k}={_short(v)}" for k, v in row.items() if k not in part.ids)
    reason = cfg.description or cfg.type
    reason += f" (got {values})" if values else ""
    extra = part.explain(row) if part.explain else ""
    return {
        "frame": part.name,
        "row": ident,
        "expectation": cfg.type,
        "columns": _columns(cfg.kwargs),
        "reason": f"{reason}; {extra}" if extra else reason,
    }


def _interleave(groups: list[list[dict]], limit: int) -> list[dict]:
    out: list[dict] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out[:limit]


def _columns(kwargs: dict[str, Any]) -> list[str]:
    return [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _short(v: Any, n: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m validation.data_quality --profile ci``: run all checks with the profile's
    ``data.<profile>.quality`` parameters of params.yaml; exit code 1 when a check fails."""
    import yaml

    from model.data.catalogue import load_region_catalogue

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", required=True)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--data-root", type=Path, help="default: data/<profile>")
    p.add_argument("--gx-root", type=Path, default=Path("gx"))
    p.add_argument("--check", action="append", choices=check_names(), help="run only this check (repeatable)")
    args = p.parse_args(argv)
    q = yaml.safe_load(args.params.read_text())["data"][args.profile]["quality"]
    report = run_data_quality(
        args.data_root or Path("data") / args.profile,
        gx_root=args.gx_root,
        allowed_regions=set(load_region_catalogue().names),
        decode_sample=int(q["decode_sample"]),
        max_task_share=float(q["max_task_share"]),
        min_task_count=int(q["min_task_count"]),
        closed_yes_share=(float(q["closed_yes_share"][0]), float(q["closed_yes_share"][1])),
        max_modality_share=float(q["max_modality_share"]),
        checks=args.check,
    )
    for outcome in report.outcomes.values():
        print(outcome.to_markdown(), end="\n\n")
    print(f"Data Docs: {report.data_docs_index}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
