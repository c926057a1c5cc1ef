"""Benchmark of the Great Expectations data-quality checks over a large image manifest.

Times :func:`validation.data_quality.run_data_quality` check by check (frame building from
Parquet + GX validation) over a manifest of N rows and prints seconds per check, rows/s and the
peak resident memory. The manifest-level checks are timed: ``manifest_schema``,
``manifest_boxes`` and ``split_integrity``. Not timed: ``image_files`` (it opens a fixed
``decode_sample`` whatever N is, and benchmark manifests have no pixels), and the
instruction-level checks (``instruction_schema``, ``phi_free``, ``class_balance``), which need
instruction shards.

Manifest sources (one of):
  --manifest DIR        an existing ingest output (DIR/images/part-*.parquet, DIR/patients.parquet)
  --generate N          model.data.synth.generate_manifest_only(N rows): real generator shapes
  --synthetic-rows N    columns built with numpy (fast; 4 regions + 0-1 lesion per image)

Example:
    python benchmarks/gx_bench.py --synthetic-rows 200000
    python benchmarks/gx_bench.py --generate 50000 --out benchmarks/out/gx_bench
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.schema import IMAGE_SCHEMA, PATIENT_SCHEMA

CHECKS = ("manifest_schema", "manifest_boxes", "split_integrity")
_REGIONS = ("right lung", "left lung", "heart", "liver")
_REGION_BOXES = np.array(
    [[0.15, 0.22, 0.45, 0.62], [0.55, 0.22, 0.85, 0.62], [0.40, 0.36, 0.62, 0.62], [0.16, 0.64, 0.40, 0.80]],
    dtype=np.float32,
)


# ---------------------------------------------------------------------------------------------
# manifest sources
# ---------------------------------------------------------------------------------------------


def synthetic_manifest(
    out: Path, n_rows: int, *, seed: int = 0, size: int = 64, shard_rows: int = 100_000
) -> None:
    """Write an ``n_rows`` manifest (IMAGE_SCHEMA) and its patient table with vectorised numpy."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    drawn = np.sort(rng.integers(0, max(1, n_rows // 2), n_rows))  # ~2 images per patient
    _, patient_of_row = np.unique(drawn, return_inverse=True)  # dense ids: every patient has images
    n_patients = int(patient_of_row.max()) + 1
    external = rng.random(n_patients) < 0.2
    split_of_patient = np.where(
        external, "external", rng.choice(["train", "val", "test"], n_patients, p=[0.7, 0.15, 0.15])
    )
    for start in range(0, n_rows, shard_rows):
        rows = np.arange(start, min(n_rows, start + shard_rows))
        pq.write_table(
            _synthetic_table(rows, patient_of_row[rows], external, split_of_patient, rng, size),
            out / "images" / f"part-{start // shard_rows:05d}.parquet",
            compression="zstd",
        )
    pids = np.array([f"P{i:07d}" for i in range(n_patients)], dtype=object)
    patients = {f.name: pa.nulls(n_patients, f.type) for f in PATIENT_SCHEMA}
    patients.update(
        patient_id=pa.array(pids),
        split=pa.array(split_of_patient),
        site_role=pa.array(np.where(external, "external", "internal")),
    )
    pq.write_table(pa.table(patients, schema=PATIENT_SCHEMA), out / "patients.parquet")


def _synthetic_table(rows, patients, external, split_of_patient, rng, size) -> pa.Table:
    n = len(rows)
    ext = external[patients]
    site = np.where(ext, "site_c", np.where(patients % 2 == 0, "hospital_a", "hospital_b"))
    image_ids = np.array([f"I{r:08d}" for r in rows], dtype=object)
    cols = {f.name: pa.nulls(n, f.type) for f in IMAGE_SCHEMA}
    cols.update(
        image_id=pa.array(image_ids),
        source=pa.array(np.full(n, "synthetic")),
        patient_id=pa.array(np.array([f"P{p:07d}" for p in patients], dtype=object)),
        visit_index=pa.array(rows % 3, type=pa.int32()),
        visit_month=pa.array((rows % 3) * 6.0, type=pa.float32()),
        site=pa.array(site),
        site_role=pa.array(np.where(ext, "external", "internal")),
        split=pa.array(split_of_patient[patients]),
        modality=pa.array(rng.choice(["ct", "mri", "xray", "fundus"], n)),
        body_part=pa.array(np.full(n, "chest")),
        image_path=pa.array(np.array([f"raw/images/{i}.png" for i in image_ids], dtype=object)),
        width=pa.array(np.full(n, size), type=pa.int32()),
        height=pa.array(np.full(n, size), type=pa.int32()),
        image_sha256=pa.array(np.array([f"{r:064x}" for r in rows], dtype=object)),
        pixel_spacing_mm=pa.array(np.full(n, 0.7), type=pa.float32()),
        regions=_box_lists(n, 4, IMAGE_SCHEMA.field("regions").type, size, rng, name_field="name"),
        lesions=_box_lists(n, None, IMAGE_SCHEMA.field("lesions").type, size, rng, name_field="region"),
    )
    return pa.table(cols, schema=IMAGE_SCHEMA)


def _box_lists(n: int, per_row: int | None, typ: pa.ListType, size: int, rng, *, name_field: str) -> pa.Array:
    counts = np.full(n, per_row) if per_row else rng.integers(0, 2, n)
    total = int(counts.sum())
    which = np.tile(np.arange(len(_REGIONS)), n)[:total] if per_row else rng.integers(0, len(_REGIONS), total)
    jitter = rng.uniform(-0.02, 0.02, (total, 4)).astype(np.float32)
    box = np.clip(_REGION_BOXES[which] + jitter, 0, 1) * size
    fields = {f.name: pa.nulls(total, f.type) for f in typ.value_type}
    fields[name_field] = pa.array(np.array(_REGIONS, dtype=object)[which])
    for k, c in enumerate(("x1", "y1", "x2", "y2")):
        fields[c] = pa.array(box[:, k], type=pa.float32())
    if "severity" in fields:
        fields.update(
            lesion_type=pa.array(np.full(total, "nodule")),
            size_mm=pa.array(np.full(total, 8.0), type=pa.float32()),
            severity=pa.array(rng.choice(["mild", "moderate", "severe"], total)),
        )
    values = pa.StructArray.from_arrays(list(fields.values()), fields=list(typ.value_type))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, type=typ)


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _data_root(work: Path, manifest: Path) -> Path:
    """A data root whose ``manifest`` links to the benchmark manifest (the checks need nothing else)."""
    root = work / "data"
    if root.is_symlink() or root.is_file():
        root.unlink()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.symlink(manifest.resolve(), root / "manifest")
    return root


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(root: Path, gx_root: Path, checks: tuple[str, ...]) -> list[dict]:
    """Time each check once on ``root`` (the first also creates the GX project: well under a second)."""
    from model.data.catalogue import load_region_catalogue
    from validation.data_quality import run_data_quality

    kwargs = {
        "gx_root": gx_root,
        "allowed_regions": set(load_region_catalogue().names) | set(_REGIONS),
        "decode_sample": 64,
        "max_task_share": 0.45,
        "min_task_count": 1,
        "closed_yes_share": (0.2, 0.8),
        "max_modality_share": 0.5,
        "build_docs": False,
    }
    n_rows = pq.ParquetDataset(root / "manifest" / "images").read(columns=["image_id"]).num_rows
    out = []
    for name in checks:
        start = time.perf_counter()
        outcome = run_data_quality(root, checks=[name], **kwargs).outcomes[name]
        s = time.perf_counter() - start
        out.append(
            {
                "check": name,
                "seconds": round(s, 2),
                "manifest_rows": n_rows,
                "rows_per_s": round(n_rows / s),
                "check_rows": outcome.n_rows,
                "passed": outcome.passed,
                "n_failed": outcome.n_failed,
                "peak_rss_gib": round(_peak_rss_gib(), 2),
            }
        )
        print(
            f"{name:18s} {s:8.2f} s  {n_rows / s:12,.0f} manifest rows/s  passed={outcome.passed}  "
            f"peak RSS {out[-1]['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, prepare the manifest, time the checks, write ``<out>/results.json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="an existing manifest folder (ingest output)")
    src.add_argument(
        "--generate", type=int, metavar="N", help="rows from model.data.synth.generate_manifest_only"
    )
    src.add_argument("--synthetic-rows", type=int, metavar="N", help="rows built with numpy")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/gx_bench"))
    p.add_argument("--check", action="append", choices=CHECKS, help="time only this check (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.manifest:
        manifest = args.manifest
    elif args.generate:
        from model.data.synth import generate_manifest_only

        manifest = args.out / "manifest"
        generate_manifest_only(manifest, n_rows=args.generate, seed=args.seed)
    else:
        manifest = args.out / "manifest"
        shutil.rmtree(manifest, ignore_errors=True)
        synthetic_manifest(manifest, args.synthetic_rows, seed=args.seed)
    print(f"manifest ready in {time.perf_counter() - start:.1f} s: {manifest}", flush=True)
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401 - report the import separately from the checks

    print(f"great_expectations import {time.perf_counter() - t0:.1f} s", flush=True)
    results = run(_data_root(args.out, manifest), args.out / "gx", tuple(args.check or CHECKS))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
