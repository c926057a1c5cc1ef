"""Curation throughput and peak memory at several manifest sizes (a benchmark, not a test).

For each size N: a manifest-only corpus of N image rows is generated (not timed), then curation
runs in a fresh subprocess that reports its wall time, instruction pairs written and its peak
resident memory (``ru_maxrss``). Streaming means the peak at 1M rows stays within 1.5x the peak
at 100k rows. Run: ``python benchmarks/curation_bench.py --rows 100000 1000000``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from model.data.catalogue import load_region_catalogue
from model.data.curation import curate
manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
cat = load_region_catalogue()
names = {m: [e.name for e in cat.for_modality(m)] for m in cat.modalities}
t0 = time.perf_counter()
s = curate(manifest, out_dir=out, seed=0, rows_per_shard=200_000, guardrail_per_image=1,
           region_names_by_modality=names, data_root=manifest.parent)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "pairs": s["num_instructions"], "images": s["num_images"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_size(n: int, work: Path) -> dict:
    manifest = work / f"m{n}" / "manifest"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "model.data.synth", "manifest-only", "--rows", str(n), "--seed", "0", "--out", str(manifest)],
        check=True, capture_output=True,
    )
    gen_s = time.perf_counter() - t0
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(manifest), str(work / f"m{n}" / "curated")],
        check=True, capture_output=True, text=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"rows": n, "generate_s": gen_s, **res, "pairs_per_s": res["pairs"] / res["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = []
        for n in args.rows:
            results.append(run_size(n, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
            shutil.rmtree(Path(tmp) / f"m{n}", ignore_errors=True)
    print(f"{'rows':>10} {'pairs':>10} {'seconds':>9} {'pairs/s':>9} {'peak MB':>8}")
    for r in results:
        print(f"{r['rows']:>10} {r['pairs']:>10} {r['seconds']:>9.1f} {r['pairs_per_s']:>9.0f} {r['peak_rss_mb']:>8.0f}")
    if len(results) >= 2:
        print(f"peak memory ratio {results[-1]['rows']} / {results[0]['rows']} rows: "
              f"{results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
