"""Crash-safe, streaming I/O for the data plane.

* :func:`atomic_dir` / :func:`atomic_file`: write into a temporary sibling and rename on success,
  so an interrupted or failed stage never leaves a half-written output behind.
* :class:`ShardedParquetWriter`: streams rows into fixed-size Parquet shards; memory is bounded
  by one row group, not by the dataset.
* :func:`iter_parquet_rows`: streams rows of a Parquet file or shard folder in batches.
* :func:`assign_split`: deterministic patient-level split from a salted hash, stable when new
  patients arrive (a patient never moves between splits as the dataset grows).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ShardedParquetWriter",
    "assign_split",
    "atomic_dir",
    "atomic_file",
    "iter_parquet_rows",
    "parquet_files",
    "sha256_bytes",
    "sha256_file",
]


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out_dir`` only if the block succeeds."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success."""
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ShardedParquetWriter:
    """Write rows to ``<out_dir>/<prefix>-00000.parquet, ...`` with at most ``rows_per_shard`` each.

    Rows are buffered up to ``row_group_size`` and flushed as one row group, so memory stays
    bounded whatever the number of rows. Use as a context manager; ``shards`` and ``num_rows``
    describe what was written.

    Example:
        >>> with ShardedParquetWriter(tmp, INSTRUCTION_SCHEMA, rows_per_shard=50_000) as w:
        ...     for row in rows:
        ...         w.write(row)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        schema: pa.Schema,
        *,
        prefix: str = "part",
        rows_per_shard: int = 100_000,
        row_group_size: int = 8_192,
    ) -> None:
        if rows_per_shard <= 0 or row_group_size <= 0:
            raise ValueError("rows_per_shard and row_group_size must be positive")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.prefix = prefix
        self.rows_per_shard = rows_per_shard
        self.row_group_size = min(row_group_size, rows_per_shard)
        self.shards: list[Path] = []
        self.shard_rows: list[int] = []
        self.num_rows = 0
        self._buf: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0

    def write(self, row: dict[str, Any]) -> None:
        self._buf.append(row)
        if len(self._buf) >= self.row_group_size or self._in_shard + len(self._buf) >= self.rows_per_shard:
            self._flush()

    def write_many(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            self.write(r)

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._writer is None:
            path = self.out_dir / f"{self.prefix}-{len(self.shards):05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
            self.shards.append(path)
            self.shard_rows.append(0)
            self._in_shard = 0
        table = pa.Table.from_pylist(self._buf, schema=self.schema)
        self._writer.write_table(table)
        n = len(self._buf)
        self._in_shard += n
        self.shard_rows[-1] += n
        self.num_rows += n
        self._buf = []
        if self._in_shard >= self.rows_per_shard:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ShardedParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of ``path``: itself if a file, else its ``*.parquet`` children, sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"no Parquet file or folder at {p}")
    files = sorted(p.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no *.parquet files in {p}")
    return files


def iter_parquet_rows(
    path: str | os.PathLike, *, columns: list[str] | None = None, batch_size: int = 4_096
) -> Iterator[dict[str, Any]]:
    """Stream the rows of a Parquet file or shard folder as dicts, one batch in memory at a time."""
    for f in parquet_files(path):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()


def assign_split(patient_id: str, site_role: str, *, val: float, test: float, salt: str = "xmed") -> str:
    """Patient-level split: ``external`` for external sites, else train/val/test by salted hash.

    Args:
        patient_id: the patient; every image of a patient lands in the same split.
        site_role: ``internal`` or ``external``; external patients never train.
        val: fraction of internal patients in validation.
        test: fraction of internal patients in test.
        salt: hash salt; change it to draw a different split.
    """
    if site_role == "external":
        return "external"
    if not (0 <= val and 0 <= test and val + test < 1):
        raise ValueError(f"split fractions val={val}, test={test} must be >= 0 and sum to < 1")
    u = int(hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:12], 16) / float(1 << 48)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"
