r"""VLMEvalKit-style TSV benchmarks (GMAI-MMBench, OmniMedVQA, MMBench-style) -> multiple-choice items.

Layout (one row per question, as VLMEvalKit writes them with pandas): a tab-separated file whose
header has

* ``index`` (unique), ``question``, ``answer`` (an option letter, or an option's exact text);
* ``image``: base64 image bytes; a value of <= 64 characters is the ``index`` of the row holding
  the image (VLMEvalKit's de-duplication); ``['b64', ...]`` for several images; or instead
  ``image_path``, relative to the file;
* option columns ``A``, ``B``, ... (an empty cell is no option); optional ``hint``;
* group columns, read when present: ``category``, ``l2-category``, ``modality``, ``department``,
  ``clinical vqa task``, ``perceptual granularity``, ``question_type``.

Default prompt, VLMEvalKit's ``ImageMCQDataset`` layout:
``{hint}Question: {question}\nOptions:\nA. ...\nB. ...\nPlease select the correct answer from the
options above.`` (``{hint}`` is ``"Hint: ...\n"`` or empty).

The first ``limit`` rows in file order are read. Malformed input raises
:class:`~model.data.importers.ImportFormatError` naming the file, the line (and ``index``) and the
field. Images are lazily decoded PIL images, or content-addressed files under ``image_dir``.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from model.data.importers import ImportFormatError
from model.data.io import atomic_file
from validation.benchmarks.items import BenchmarkItem

__all__ = ["DEFAULT_MCQ_PROMPT", "TSV_GROUP_COLUMNS", "fill_prompt", "read_vlmevalkit_tsv"]

#: VLMEvalKit ``ImageMCQDataset.build_prompt``'s layout.
DEFAULT_MCQ_PROMPT = (
    "{hint}Question: {question}\nOptions:\n{options}\n"
    "Please select the correct answer from the options above."
)
#: Group columns read by default when present.
TSV_GROUP_COLUMNS = (
    "category",
    "l2-category",
    "modality",
    "department",
    "clinical vqa task",
    "perceptual granularity",
    "question_type",
)


def fill_prompt(template: str, ctx: str, **fields: str) -> str:
    """``template.format(**fields)``; a bad template raises ``ValueError`` naming ``ctx`` and the placeholders."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"{ctx}: prompt template {template!r} is invalid ({e!r}); placeholders: {sorted(fields)}"
        ) from e


def _decode_image(b64: str, ctx: str, image_dir: Path | None) -> Image.Image | str:
    """The image of a base64 field: a lazily decoded PIL image, or a file under ``image_dir``.

    With ``image_dir`` the bytes are written once as ``<image_dir>/<sha256[:2]>/<sha256>`` (content
    addressed, so the prediction cache key follows the image content and decoded pixels are not
    kept in memory for the whole benchmark).
    """
    try:
        data = base64.b64decode(b64, validate=True)
        im = Image.open(io.BytesIO(data))  # reads the header only: a check that it is an image
    except (binascii.Error, ValueError, UnidentifiedImageError) as e:
        raise ImportFormatError(f"{ctx}: field 'image' is not a base64-encoded image ({e})") from e
    if image_dir is None:
        return im
    sha = hashlib.sha256(data).hexdigest()
    out = image_dir / sha[:2] / sha
    if not out.is_file():
        with atomic_file(out, "wb") as fh:
            fh.write(data)
    return str(out)


def _tsv_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    csv.field_size_limit(2**31 - 1)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in ("index", "question", "answer") if c not in header]
        if missing or not ({"image", "image_path"} & set(header)):
            raise ImportFormatError(
                f"{path}: line 1: header lacks {missing or ['image or image_path']} (has {header})"
            )
        rows = []
        for row in reader:
            if None in row:
                raise ImportFormatError(f"{path}: line {reader.line_num}: more fields than the header")
            rows.append((reader.line_num, row))
    if not rows:
        raise ImportFormatError(f"{path}: no data row")
    return rows


def _tsv_images(
    path: Path, row: dict[str, str], ctx: str, by_index: dict[str, str], image_dir: Path | None
) -> tuple:
    if row.get("image_path"):
        p = path.parent / row["image_path"]
        if not p.is_file():
            raise ImportFormatError(f"{ctx}: field 'image_path': no file at {p}")
        return (str(p),)
    value = (row.get("image") or "").strip()
    if value.startswith("["):
        try:
            values = [str(v) for v in ast.literal_eval(value)]
        except (ValueError, SyntaxError) as e:
            raise ImportFormatError(f"{ctx}: field 'image' is not a list of base64 strings") from e
    else:
        values = [value]
    out = []
    for v in values:
        if 0 < len(v) <= 64:  # VLMEvalKit: a short value is the index of the row holding the image
            if v not in by_index or len(by_index[v]) <= 64:
                raise ImportFormatError(f"{ctx}: field 'image' refers to index {v!r}, which has no image")
            v = by_index[v]
        if not v:
            raise ImportFormatError(f"{ctx}: field 'image' is empty")
        out.append(_decode_image(v, ctx, image_dir))
    return tuple(out)


def _tsv_answer(row: dict[str, str], options: dict[str, str], ctx: str) -> str:
    answer = row["answer"].strip()
    if answer in options:
        return answer
    by_text = [k for k, v in options.items() if v == answer]
    if len(by_text) == 1:
        return by_text[0]
    raise ImportFormatError(
        f"{ctx}: field 'answer' {answer!r} is neither an option letter nor an option text ({sorted(options)})"
    )


def read_vlmevalkit_tsv(
    path: str | os.PathLike,
    *,
    benchmark: str,
    prompt: str | None = None,
    group_columns: Sequence[str] | None = None,
    limit: int | None = None,
    max_new_tokens: int = 24,
    image_dir: str | os.PathLike | None = None,
) -> list[BenchmarkItem]:
    """Multiple-choice items of a VLMEvalKit-style TSV (layout in the module docstring).

    Args:
        path: the TSV file.
        benchmark: registry name stored in the items.
        prompt: template with ``{question}``, ``{options}``, ``{hint}`` (default
            :data:`DEFAULT_MCQ_PROMPT`).
        group_columns: group columns to keep (default: those of :data:`TSV_GROUP_COLUMNS` present).
        limit: the first ``limit`` rows.
        max_new_tokens: generation budget.
        image_dir: write base64 images there as content-addressed files (items hold paths); None
            keeps them as in-memory PIL images.

    Raises:
        ImportFormatError: missing header columns, a bad image, no option, an answer that is not
            an option, a duplicate index; the message names the file, the line and the field.
    """
    path = Path(path)
    image_dir = Path(image_dir) if image_dir is not None else None
    rows = _tsv_rows(path)
    by_index = {r["index"]: r.get("image") or "" for _, r in rows}
    if len(by_index) != len(rows):
        raise ImportFormatError(f"{path}: column 'index' has duplicate values")
    groups_cols = [c for c in (group_columns or TSV_GROUP_COLUMNS) if c in rows[0][1]]
    if group_columns and len(groups_cols) != len(group_columns):
        raise ImportFormatError(
            f"{path}: line 1: group columns {sorted(set(group_columns) - set(groups_cols))} absent"
        )
    items = []
    for line, row in rows[:limit]:
        ctx = f"{path}: line {line} (index {row['index']})"
        options = {k: row[k].strip() for k in row if len(k) == 1 and k.isupper() and (row[k] or "").strip()}
        if not options:
            raise ImportFormatError(f"{ctx}: no option column (A, B, ...) has a value")
        hint = (row.get("hint") or "").strip()
        text = fill_prompt(
            prompt or DEFAULT_MCQ_PROMPT,
            ctx,
            question=row["question"].strip(),
            options="\n".join(f"{k}. {v}" for k, v in options.items()),
            hint=f"Hint: {hint}\n" if hint else "",
        )
        items.append(
            BenchmarkItem(
                id=str(row["index"]),
                benchmark=benchmark,
                family="mcq",
                images=_tsv_images(path, row, ctx, by_index, image_dir),
                prompt=text,
                gold=_tsv_answer(row, options, ctx),
                options=options,
                groups={c: row[c].strip() for c in groups_cols if (row[c] or "").strip()},
                max_new_tokens=max_new_tokens,
            )
        )
    return items
