"""The ingest stage: raw sources -> validated image manifest and patient table.

:func:`ingest` streams the records of each source through its importer (see
:mod:`model.data.importers`), then for every record: validates it with
:meth:`ImageRecord.from_dict <model.data.schema.ImageRecord.from_dict>`, checks that the stored image
exists and has the recorded size, hashes it (``image_sha256``), assigns ``split`` by patient with
:func:`model.data.io.assign_split` (``external`` for external sites) and rejects duplicate image ids.
It writes, all inside :func:`model.data.io.atomic_dir` (a failure leaves no partial manifest)::

    <out_dir>/images/part-*.parquet   IMAGE_SCHEMA rows (ShardedParquetWriter)
    <out_dir>/patients.parquet        PATIENT_SCHEMA rows of the sources that have patients
    <out_dir>/png/...                 PNGs written by importers (windowed DICOM slices, MedMNIST arrays)
    <out_dir>/summary.json            counts per source, modality, site and split

Memory is bounded by one Parquet row group plus a dict of seen image ids and one of patient splits.

CLI (the DVC stage ``ingest@<profile>``)::

    python -m model.data.ingest --params params.yaml --profile ci --root data/ci

reads ``data.<profile>.ingest`` (``val_fraction``, ``test_fraction``, ``split_salt``,
``dicom_png_size`` and an optional ``sources`` list, default ``[{kind: xmed_raw, path: raw}]``) and
writes ``<root>/manifest``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from model.data.importers import (
    iter_dicom_series,
    iter_medmnist,
    iter_mimic_cxr,
    iter_slake,
    iter_vindr,
    iter_vqarad,
    iter_xmed_patients,
    iter_xmed_raw,
    relative_path,
)
from model.data.io import ShardedParquetWriter, assign_split, atomic_dir, sha256_file
from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA, ImageRecord, PatientRecord

__all__ = ["IMPORTERS", "PATIENT_IMPORTERS", "IngestError", "IngestParams", "ingest", "load_params", "main"]

log = logging.getLogger(__name__)

#: source ``kind`` -> importer of its image records.
IMPORTERS: dict[str, Callable[..., Iterator[dict[str, Any]]]] = {
    "medmnist": iter_medmnist,
    "slake": iter_slake,
    "vqarad": iter_vqarad,
    "mimic": iter_mimic_cxr,
    "vindr": iter_vindr,
    "dicom_series": iter_dicom_series,
    "xmed_raw": iter_xmed_raw,
}
#: source ``kind`` -> importer of its patient records (kinds without one have no patient table).
PATIENT_IMPORTERS: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {"xmed_raw": iter_xmed_patients}
#: importer arguments that ingest sets itself; a source may not set them.
_PROVIDED = ("data_root", "png_dir", "png_rel", "dicom_png_size")
_PLACEHOLDER_SHA = "0" * 64


class IngestError(ValueError):
    """A source or record cannot be ingested; the message names the source, the record and why."""


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    index: int
    kind: str
    path: Path
    options: dict[str, Any]

    @property
    def label(self) -> str:
        return f"source {self.index} ({self.kind} {self.path})"


def _parse_sources(sources: Sequence[Mapping[str, Any]], data_root: Path) -> list[_Source]:
    """Check every source's kind, path and options against its importer's signature."""
    out = []
    for i, s in enumerate(sources):
        if not isinstance(s, Mapping) or s.get("kind") not in IMPORTERS or not isinstance(s.get("path"), str):
            raise IngestError(
                f"source {i}: need {{kind: one of {sorted(IMPORTERS)}, path: str, ...}}, got {s!r}"
            )
        options = {k: v for k, v in s.items() if k not in ("kind", "path")}
        params = inspect.signature(IMPORTERS[s["kind"]]).parameters
        allowed = [p for p in list(params)[1:] if p not in _PROVIDED]
        bad = [k for k in options if k not in allowed]
        if bad:
            raise IngestError(f"source {i} ({s['kind']}): unknown option(s) {bad}; allowed: {allowed}")
        path = Path(s["path"]) if Path(s["path"]).is_absolute() else data_root / s["path"]
        out.append(_Source(i, s["kind"], path, options))
    return out


def _open(src: _Source, provided: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The importer's record stream with ingest's own arguments filled in where it takes them."""
    fn = IMPORTERS[src.kind]
    params = inspect.signature(fn).parameters
    return fn(src.path, **{k: v for k, v in provided.items() if k in params}, **src.options)


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


@dataclass
class _State:
    """What ingest remembers across records: seen ids, patient splits and counters."""

    data_root: Path
    tmp: Path
    out_rel: str
    val: float
    test: float
    salt: str
    seen: dict[str, int] = field(default_factory=dict)
    patient_split: dict[str, tuple[str, int]] = field(default_factory=dict)
    counts: dict[str, collections.Counter] = field(
        default_factory=lambda: {k: collections.Counter() for k in ("source", "modality", "site", "split")}
    )

    def resolve(self, rel: str, ctx: str) -> Path:
        """Filesystem path of a data-root-relative path (files of this ingest live in ``tmp``)."""
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise IngestError(f"{ctx}: image_path {rel!r} must be relative to the data root without '..'")
        head = PurePosixPath(self.out_rel)
        if p.parts[: len(head.parts)] == head.parts:
            return self.tmp.joinpath(*p.parts[len(head.parts) :])
        return self.data_root / p


def _check_image(path: Path, rec: ImageRecord, ctx: str) -> str:
    """sha256 of the stored image after checking it opens with the recorded size."""
    try:
        with Image.open(path) as im:
            size = im.size
    except FileNotFoundError:
        raise IngestError(f"{ctx}: image file {path} does not exist") from None
    except OSError as e:
        raise IngestError(f"{ctx}: cannot read image {path}: {e}") from e
    if size != (rec.width, rec.height):
        raise IngestError(f"{ctx}: image {path} is {size[0]}x{size[1]}, record says {rec.width}x{rec.height}")
    return sha256_file(path)


def _finish(raw: dict[str, Any], src: _Source, n: int, state: _State, labels: list[str]) -> dict[str, Any]:
    """Validate one importer record, hash its image, assign its split; return the Parquet row."""
    ctx = f"{src.label}: record {n} (image_id {raw.get('image_id')!r})"
    for f in ("split", "image_sha256"):
        if f in raw:
            raise IngestError(f"{ctx}: field {f!r} is assigned at ingest; sources must not set it")
    rec = ImageRecord.from_dict({**raw, "split": "train", "image_sha256": _PLACEHOLDER_SHA}, ctx)
    if rec.image_id in state.seen:
        raise IngestError(
            f"{ctx}: duplicate image_id {rec.image_id!r}, already read from {labels[state.seen[rec.image_id]]}"
        )
    state.seen[rec.image_id] = src.index
    split = assign_split(rec.patient_id, rec.site_role, val=state.val, test=state.test, salt=state.salt)
    prev = state.patient_split.setdefault(rec.patient_id, (split, src.index))
    if prev[0] != split:
        raise IngestError(
            f"{ctx}: patient {rec.patient_id!r} would be in split {split} and {prev[0]} (mixed site roles)"
        )
    sha = _check_image(state.resolve(rec.image_path, ctx), rec, ctx)
    rec = dataclasses.replace(rec, split=split, image_sha256=sha)
    for key, value in (
        ("source", rec.source),
        ("modality", rec.modality),
        ("site", rec.site),
        ("split", split),
    ):
        state.counts[key][value] += 1
    return rec.to_dict()


def _write_patients(sources: list[_Source], state: _State, path: Path) -> collections.Counter:
    """Write patients.parquet from the sources that have patients; return counts per split."""
    by_split: collections.Counter = collections.Counter()
    seen: set[str] = set()
    with pq.ParquetWriter(path, PATIENT_SCHEMA, compression="zstd") as writer:
        buf: list[dict[str, Any]] = []
        for src in (s for s in sources if s.kind in PATIENT_IMPORTERS):
            for n, raw in enumerate(PATIENT_IMPORTERS[src.kind](src.path), start=1):
                ctx = f"{src.label}: patient {n} (patient_id {raw.get('patient_id')!r})"
                if "split" in raw:
                    raise IngestError(f"{ctx}: field 'split' is assigned at ingest; sources must not set it")
                p = PatientRecord.from_dict({**raw, "split": "train"}, ctx)
                if p.patient_id in seen:
                    raise IngestError(f"{ctx}: duplicate patient_id {p.patient_id!r}")
                seen.add(p.patient_id)
                split = assign_split(
                    p.patient_id, p.site_role, val=state.val, test=state.test, salt=state.salt
                )
                img_split = state.patient_split.get(p.patient_id, (split,))[0]
                if img_split != split:
                    raise IngestError(
                        f"{ctx}: patient split {split} differs from its images' split {img_split}"
                    )
                buf.append(dataclasses.replace(p, split=split).to_dict())
                by_split[split] += 1
                if len(buf) >= 8192:
                    writer.write_table(pa.Table.from_pylist(buf, schema=PATIENT_SCHEMA))
                    buf = []
        writer.write_table(pa.Table.from_pylist(buf, schema=PATIENT_SCHEMA))
    with_patients = {s.index for s in sources if s.kind in PATIENT_IMPORTERS}
    missing = [pid for pid, (_, i) in state.patient_split.items() if i in with_patients and pid not in seen]
    if missing:
        raise IngestError(f"{len(missing)} patient(s) have images but no patient record, e.g. {missing[:5]}")
    return by_split


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


def ingest(
    sources: Sequence[Mapping[str, Any]],
    *,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float,
    test_fraction: float,
    split_salt: str,
    dicom_png_size: int | None,
    rows_per_shard: int = 100_000,
) -> dict[str, Any]:
    """Ingest ``sources`` into a manifest at ``out_dir`` (atomically) and return its summary.

    Args:
        sources: ``{kind, path, **options}`` dicts; ``kind`` is a key of :data:`IMPORTERS`, ``path``
            is relative to ``data_root`` (or absolute), options are the importer's keyword
            arguments (e.g. ``flavour``/``label_names`` for ``medmnist``).
        data_root: the profile's data root; all stored paths are relative to it.
        out_dir: the manifest folder; must lie inside ``data_root`` (PNG paths are stored relative
            to the root). It is replaced only if the whole ingest succeeds.
        val_fraction: share of internal patients in ``val``.
        test_fraction: share of internal patients in ``test``.
        split_salt: salt of the patient-split hash.
        dicom_png_size: size (``n x n``) of PNGs made from DICOM slices; None keeps their size.
        rows_per_shard: image rows per Parquet shard.

    Returns:
        The summary also written to ``summary.json``: image counts per source, modality, site and
        split, patient counts per split, per-source counts and the parameters.

    Raises:
        IngestError: bad source spec, ``out_dir`` outside ``data_root``, no images at all, duplicate
            image or patient id, missing/mis-sized image, a patient in two splits, or a patient
            record missing for an image.
        model.data.schema.SchemaError: a record fails validation (message names source and record).
        model.data.importers.ImportFormatError: a source file is malformed.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    # fail before touching anything if the split fractions are invalid
    assign_split("probe", "internal", val=val_fraction, test=test_fraction, salt=split_salt)
    srcs = _parse_sources(sources, data_root)
    if not Path(os.path.abspath(out_dir)).is_relative_to(os.path.abspath(data_root)):
        raise IngestError(
            f"out_dir {out_dir} must lie inside data_root {data_root} (stored paths are relative)"
        )
    out_rel = relative_path(out_dir, data_root)
    labels = [s.label for s in srcs]
    with atomic_dir(out_dir) as tmp:
        state = _State(data_root, tmp, out_rel, val_fraction, test_fraction, split_salt)
        provided = {
            "data_root": data_root,
            "png_dir": tmp / "png",
            "png_rel": f"{out_rel}/png",
            "dicom_png_size": dicom_png_size,
        }
        per_source = []
        with ShardedParquetWriter(tmp / "images", IMAGE_SCHEMA, rows_per_shard=rows_per_shard) as writer:
            for src in srcs:
                n = 0
                for n, raw in enumerate(_open(src, provided), start=1):
                    writer.write(_finish(raw, src, n, state, labels))
                log.info("%s: %d images", src.label, n)
                per_source.append(
                    {"kind": src.kind, "path": _display_path(src.path, data_root), "n_images": n}
                )
        if writer.num_rows == 0:
            raise IngestError(f"no image records in any source: {labels}")
        patients_by_split = _write_patients(srcs, state, tmp / "patients.parquet")
        summary = _summary(
            state,
            writer,
            per_source,
            patients_by_split,
            tmp,
            {
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "split_salt": split_salt,
                "dicom_png_size": dicom_png_size,
            },
        )
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else absolute (for the summary)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return os.path.abspath(path)


def _summary(
    state: _State,
    writer: ShardedParquetWriter,
    per_source: list[dict[str, Any]],
    patients_by_split: collections.Counter,
    tmp: Path,
    params: dict[str, Any],
) -> dict[str, Any]:
    imaged = collections.Counter(split for split, _ in state.patient_split.values())
    return {
        "n_images": writer.num_rows,
        "n_patients": sum(patients_by_split.values()),
        "images_by_source": dict(sorted(state.counts["source"].items())),
        "images_by_modality": dict(sorted(state.counts["modality"].items())),
        "images_by_site": dict(sorted(state.counts["site"].items())),
        "images_by_split": dict(sorted(state.counts["split"].items())),
        "imaged_patients_by_split": dict(sorted(imaged.items())),
        "patients_by_split": dict(sorted(patients_by_split.items())),
        "sources": per_source,
        "image_shards": [p.relative_to(tmp).as_posix() for p in writer.shards],
        "params": params,
    }


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestParams:
    """``data.<profile>.ingest`` of params.yaml.

    Attributes:
        val_fraction: share of internal patients in ``val``.
        test_fraction: share of internal patients in ``test``.
        split_salt: salt of the patient-split hash.
        dicom_png_size: PNG size of windowed DICOM slices (None keeps their size).
        sources: sources to ingest (default: the generator's ``raw/``).
    """

    val_fraction: float
    test_fraction: float
    split_salt: str
    dicom_png_size: int | None
    sources: tuple[dict[str, Any], ...] = ({"kind": "xmed_raw", "path": "raw"},)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], ctx: str) -> IngestParams:
        """Build from the YAML block; unknown or missing keys raise ``ValueError`` naming ``ctx``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"{ctx}: expected a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - set(d)
        if unknown or missing:
            raise ValueError(f"{ctx}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        size = d["dicom_png_size"]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
            raise ValueError(f"{ctx}: dicom_png_size must be a positive integer or null, got {size!r}")
        sources = d.get("sources", cls.sources)
        if not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"{ctx}: sources must be a non-empty list")
        return cls(
            float(d["val_fraction"]),
            float(d["test_fraction"]),
            str(d["split_salt"]),
            size,
            tuple(dict(s) for s in sources),
        )


def load_params(params_path: str | os.PathLike, profile: str) -> IngestParams:
    """Read ``data.<profile>.ingest`` from ``params_path``.

    Raises:
        ValueError: the profile or block is missing or malformed.
    """
    with open(params_path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    try:
        block = doc["data"][profile]["ingest"]
    except (KeyError, TypeError):
        raise ValueError(f"{params_path}: no data.{profile}.ingest block") from None
    return IngestParams.from_mapping(block, f"{params_path}: data.{profile}.ingest")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ingest ``<root>/raw`` (or the configured sources) into ``<root>/manifest``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="params.yaml")
    parser.add_argument("--profile", required=True, help="profile under data: (ci, demo, ...)")
    parser.add_argument("--root", required=True, help="the profile's data root, e.g. data/ci")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = load_params(args.params, args.profile)
    summary = ingest(
        p.sources,
        data_root=args.root,
        out_dir=Path(args.root) / "manifest",
        val_fraction=p.val_fraction,
        test_fraction=p.test_fraction,
        split_salt=p.split_salt,
        dicom_png_size=p.dicom_png_size,
    )
    print(json.dumps({k: summary[k] for k in ("n_images", "n_patients", "images_by_split")}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
