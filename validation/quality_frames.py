"""Pandas frames that the data-quality suites validate, derived from one profile's data root.

Great Expectations validates tables, so every rule of :mod:`validation.data_quality` is phrased
over a frame in which one row is one thing that can be wrong: a Parquet column of one file (schema),
one image (required fields), one region or lesion box (geometry), one ``(patient, split)`` pair
(leakage), one chat turn (PHI, empty answers), one ``<box>`` in text, one decoded image of the
sample, one task family (balance). Each frame carries the identifying columns (``image_id``,
``id``, ``patient_id``, ...) that a failure report names.

Data layout (paths relative to the data root ``data/<profile>/``): ``manifest/images/part-*.parquet``
(:data:`~model.data.schema.IMAGE_SCHEMA`), ``manifest/patients.parquet``
(:data:`~model.data.schema.PATIENT_SCHEMA`), ``curated/shards/part-*.parquet``
(:data:`~model.data.schema.INSTRUCTION_SCHEMA`). Only the needed columns are read, file by file,
with pyarrow; list columns are flattened with Arrow compute kernels, not Python loops.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from model.data.boxes import BoxFormatError, parse_boxes
from model.data.io import parquet_files
from model.data.schema import TASKS, SchemaError

__all__ = [
    "MANIFEST_DIR",
    "PATIENTS_FILE",
    "SHARDS_DIR",
    "box_frame",
    "closed_answer_frame",
    "dataset_files",
    "decode_frame",
    "flatten_list",
    "read_columns",
    "schema_frame",
    "share_frame",
    "task_share_frame",
    "text_box_frame",
    "turn_frame",
    "widen_numeric",
]

MANIFEST_DIR = "manifest/images"
PATIENTS_FILE = "manifest/patients.parquet"
SHARDS_DIR = "curated/shards"

_BOX_TAG = re.compile(r"<box>(.*?)</box>", re.DOTALL)
_COORDS = re.compile(r"\[\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\]")
_BOX_BODY = re.compile(rf"\s*\[\s*{_COORDS.pattern}(?:\s*,\s*{_COORDS.pattern})*\s*\]\s*")
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def dataset_files(data_root: Path, rel: str) -> list[Path]:
    """The Parquet files at ``data_root / rel`` (a shard folder or one file), sorted.

    Raises:
        FileNotFoundError: the folder or file is missing or holds no ``*.parquet`` file; the
            message names the path and the stage that writes it.
    """
    path = Path(data_root) / rel
    if not path.exists():
        stage = "curate" if rel.startswith("curated") else "ingest"
        raise FileNotFoundError(f"{path} does not exist: run the {stage} stage for this profile first")
    return parquet_files(path)


def schema_frame(files: Sequence[Path], schema: pa.Schema, root: Path) -> pd.DataFrame:
    """One row per (file, column) of the union of each file's columns and ``schema``.

    ``actual_type`` is ``<missing>`` for a schema column absent from the file and
    ``expected_type`` is ``<not in schema>`` for an extra column; equal Arrow types (list item
    names ignored, as Arrow's own equality does) are written identically.
    """
    rows = []
    for f in files:
        actual = pq.read_schema(f)
        names = list(schema.names) + [n for n in actual.names if n not in schema.names]
        for name in names:
            exp = schema.field(name).type if name in schema.names else None
            act = actual.field(name).type if name in actual.names else None
            rows.append(
                {
                    "file": _rel(f, root),
                    "column": name,
                    "actual_type": "<missing>"
                    if act is None
                    else str(exp if exp is not None and act.equals(exp) else act),
                    "expected_type": "<not in schema>" if exp is None else str(exp),
                }
            )
    return pd.DataFrame(rows, columns=["file", "column", "actual_type", "expected_type"])


def read_columns(
    files: Sequence[Path], schema: pa.Schema, columns: Sequence[str], *, root: Path, tolerant: bool = False
) -> pa.Table:
    """Read ``columns`` of every file, cast to the ``schema`` types, concatenated.

    Args:
        files: Parquet files of one table.
        schema: the storage contract the columns are cast to (safe casts only).
        columns: the columns to read.
        root: the data root, for file names in messages.
        tolerant: replace a missing or uncastable column of a file by nulls instead of raising
            (the schema check reads this way: it reports the problem itself).

    Raises:
        SchemaError: a column is missing or cannot be cast (when not ``tolerant``); the message
            names the file and the column.
    """
    tables = []
    for f in files:
        present = [c for c in columns if c in pq.read_schema(f).names]
        t = pq.read_table(f, columns=present)
        arrays = [
            _column(t, c, schema.field(c).type, f"{_rel(f, root)}: column '{c}'", tolerant) for c in columns
        ]
        tables.append(pa.Table.from_arrays(arrays, names=list(columns)))
    return pa.concat_tables(tables)


def _column(t: pa.Table, name: str, typ: pa.DataType, where: str, tolerant: bool) -> pa.ChunkedArray:
    if name not in t.column_names:
        if tolerant:
            return pa.chunked_array([pa.nulls(t.num_rows, typ)], type=typ)
        raise SchemaError(f"{where} is missing; the manifest_schema/instruction_schema check lists every gap")
    col = t.column(name)
    if col.type.equals(typ):
        return col
    try:
        return col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        if tolerant:
            return pa.chunked_array([pa.nulls(t.num_rows, typ)], type=typ)
        raise SchemaError(f"{where} has type {col.type} that cannot be cast to {typ}") from e


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def widen_numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with narrow numeric columns widened to int64/float64.

    Great Expectations' pandas ``column_values.between`` metric is vectorised only for int64 and
    float64 columns; Arrow's int32/float32 would make it call Python once per value.
    """
    widen = {}
    for name, dtype in frame.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            continue
        if pd.api.types.is_integer_dtype(dtype) and dtype != np.int64:
            widen[name] = np.int64
        elif pd.api.types.is_float_dtype(dtype) and dtype != np.float64:
            widen[name] = np.float64
    return frame.astype(widen) if widen else frame


# ---------------------------------------------------------------------------------------------
# nested columns
# ---------------------------------------------------------------------------------------------


def flatten_list(table: pa.Table, column: str, *, keep: Sequence[str], fields: Sequence[str]) -> pd.DataFrame:
    """One row per element of the list column ``column`` (a list of structs).

    Returns:
        Columns ``keep`` (repeated from the parent row), ``index`` (position in the list) and
        ``fields`` (struct fields; a null element gives nulls). Null lists contribute no row.
    """
    lists = table.column(column).combine_chunks()
    parents = pc.list_parent_indices(lists)
    flat = pc.list_flatten(lists)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    parent_idx = parents.to_numpy(zero_copy_only=False).astype(np.int64)
    out: dict[str, object] = {k: table.column(k).take(parents).to_pandas() for k in keep}
    out["index"] = np.arange(len(flat), dtype=np.int64) - starts[parent_idx]
    for name in fields:
        out[name] = pc.struct_field(flat, name).to_pandas()
    return pd.DataFrame(out, columns=[*keep, "index", *fields])


def box_frame(table: pa.Table) -> pd.DataFrame:
    """Every region and lesion box of the manifest, one row each.

    Args:
        table: manifest columns ``image_id, width, height, regions, lesions``.

    Returns:
        Columns ``image_id, kind ('region'|'lesion'), index, name, x1, y1, x2, y2, width, height``;
        a lesion's ``name`` is the region it lies in.
    """
    cols = ["image_id", "kind", "index", "name", "x1", "y1", "x2", "y2", "width", "height"]
    parts = []
    for column, kind, name_field in (("regions", "region", "name"), ("lesions", "lesion", "region")):
        f = flatten_list(
            table, column, keep=["image_id", "width", "height"], fields=[name_field, "x1", "y1", "x2", "y2"]
        )
        parts.append(f.rename(columns={name_field: "name"}).assign(kind=kind)[cols])
    return pd.concat(parts, ignore_index=True)


def turn_frame(table: pa.Table) -> pd.DataFrame:
    """One row per chat turn of the instruction table.

    Args:
        table: instruction columns ``id, task, conversations``.

    Returns:
        Columns ``id, task, turn, from, value, expected_from`` (human on even turns, gpt on odd),
        ``is_last``, and tag counts ``n_box_open, n_box_close, n_ref_open, n_ref_close``.
    """
    f = flatten_list(table, "conversations", keep=["id", "task"], fields=["from", "value"]).rename(
        columns={"index": "turn"}
    )
    lengths = pc.fill_null(pc.list_value_length(table.column("conversations")), 0).to_numpy(
        zero_copy_only=False
    )
    f["expected_from"] = np.where(f["turn"].to_numpy() % 2 == 0, "human", "gpt")
    f["is_last"] = f["turn"].to_numpy() == np.repeat(lengths, lengths) - 1
    value = f["value"].fillna("")
    for tag in ("box", "ref"):
        f[f"n_{tag}_open"] = value.str.count(f"<{tag}>")
        f[f"n_{tag}_close"] = value.str.count(f"</{tag}>")
    return f


def text_box_frame(turns: pd.DataFrame, scale: int = 1000) -> pd.DataFrame:
    """One row per coordinate list inside each ``<box>...</box>`` of the turns.

    ``parses`` is True when :func:`model.data.boxes.parse_boxes` accepts the box in strict mode
    and its body is exactly ``[[x1, y1, x2, y2], ...]``; ``parse_error`` says why not. The
    coordinates are read leniently (a malformed body gives one row of nulls) so the range and
    order rules can name the coordinate that is wrong.
    """
    rows = []
    has_box = turns["value"].fillna("").str.contains("<box>", regex=False)
    for tid, turn, value in turns.loc[has_box, ["id", "turn", "value"]].itertuples(index=False):
        for k, m in enumerate(_BOX_TAG.finditer(value)):
            error = _box_error(m.group(0), m.group(1), scale)
            base = {
                "id": tid,
                "turn": turn,
                "box_index": k,
                "box": m.group(0)[:120],
                "parses": error is None,
                "parse_error": error,
            }
            coords = _COORDS.findall(m.group(1)) or [(None,) * 4]
            for c in coords:
                rows.append(
                    {
                        **base,
                        **{n: (None if v is None else int(v)) for n, v in zip(("x1", "y1", "x2", "y2"), c)},
                    }
                )
    cols = ["id", "turn", "box_index", "box", "parses", "parse_error", "x1", "y1", "x2", "y2"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.astype({n: "float64" for n in ("x1", "y1", "x2", "y2")})


def _box_error(text: str, body: str, scale: int) -> str | None:
    try:
        parse_boxes(text, scale, strict=True)
    except BoxFormatError as e:
        return str(e)
    if not _BOX_BODY.fullmatch(body):
        return f"<box> body {body[:60]!r} is not of the form [[x1, y1, x2, y2], ...]"
    return None


# ---------------------------------------------------------------------------------------------
# image files (sampled)
# ---------------------------------------------------------------------------------------------


def decode_frame(table: pa.Table, data_root: Path, *, sample: int, seed: int) -> pd.DataFrame:
    """Open a seeded sample of ``sample`` images: existence, decoding, size and content hash.

    Args:
        table: manifest columns ``image_id, image_path, width, height, image_sha256``.
        data_root: the root the relative ``image_path`` values resolve against.
        sample: how many images to open (all of them if the manifest is smaller).
        seed: sampling seed; the same seed opens the same images.

    Returns:
        The manifest columns plus ``exists, decodes, decoded_width, decoded_height,
        file_sha256, error`` for the sampled rows, in manifest order.
    """
    n = table.num_rows
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, sample), replace=False)) if n else np.array([], dtype=np.int64)
    frame = table.take(pa.array(idx, type=pa.int64())).to_pandas()
    results = [_open_image(Path(data_root), p) for p in frame["image_path"]]
    cols = ["exists", "decodes", "decoded_width", "decoded_height", "file_sha256", "error"]
    extra = pd.DataFrame(results, columns=cols, index=frame.index)
    extra = extra.astype(
        {"exists": bool, "decodes": bool, "decoded_width": "float64", "decoded_height": "float64"}
    )
    return pd.concat([frame, extra], axis=1)


def _open_image(root: Path, rel: str | None) -> tuple:
    if not rel:
        return (False, False, None, None, None, "image_path is empty")
    path = root / rel
    if not path.is_file():
        return (False, False, None, None, None, f"no file at {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        width, height = _decoded_size(path)
    except _READ_ERRORS as e:
        return (True, False, None, None, digest, f"{type(e).__name__}: {e}")
    return (True, True, width, height, digest, None)


def _decoded_size(path: Path) -> tuple[int, int]:
    if path.suffix.lower() == ".dcm":
        import pydicom  # DICOM only where an importer stored it; PNG is the norm

        ds = pydicom.dcmread(path)
        rows, cols = ds.pixel_array.shape[:2]
        return int(cols), int(rows)
    with Image.open(path) as im:
        im.load()
        return im.size


# ---------------------------------------------------------------------------------------------
# class balance
# ---------------------------------------------------------------------------------------------


def task_share_frame(tasks: pd.Series) -> pd.DataFrame:
    """Count and share of every task family of :data:`~model.data.schema.TASKS` (zeros included),
    plus any unknown task found in the data."""
    if len(tasks) == 0:
        raise ValueError("no instruction rows: task shares are undefined; run the curate stage")
    counts = tasks.value_counts(dropna=False)
    names = list(TASKS) + [t for t in counts.index if t not in TASKS]
    count = np.array([int(counts.get(t, 0)) for t in names])
    return pd.DataFrame({"task": names, "count": count, "share": count / len(tasks)})


def share_frame(values: pd.Series, column: str) -> pd.DataFrame:
    """Count and share of each distinct value of ``values`` (one row per value, named ``column``)."""
    if len(values) == 0:
        raise ValueError(f"no rows: {column} shares are undefined")
    counts = values.value_counts(dropna=False)
    return pd.DataFrame(
        {column: counts.index, "count": counts.to_numpy(), "share": counts.to_numpy() / len(values)}
    )


def closed_answer_frame(turns: pd.DataFrame) -> pd.DataFrame:
    """The first answer of every ``vqa_closed`` instruction and its label (its first word, lower case)."""
    gpt = turns[(turns["task"] == "vqa_closed") & (turns["from"] == "gpt")]
    first = gpt.drop_duplicates("id")[["id", "value"]].rename(columns={"value": "answer"})
    first["label"] = first["answer"].fillna("").str.extract(r"^\W*([A-Za-z]+)", expand=False).str.lower()
    return first.reset_index(drop=True)
