"""The GPU smoke script's code path on CPU (``scripts/gpu_smoke.py --cpu-dry-run``: ZeRO-2, fp32, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    # a fresh single-process world: this pytest process may hold a rendezvous port of its own
    dist_vars = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
    env = {k: v for k, v in os.environ.items() if k not in dist_vars}
    env.update(HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cpu_dry_run_trains_two_steps_and_reports_throughput(tmp_path):
    out = tmp_path / "metrics.json"
    proc = _run("--cpu-dry-run", "--json-out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step time mean" in proc.stdout and "tokens/s" in proc.stdout and "samples/s" in proc.stdout
    metrics = json.loads(out.read_text())
    assert metrics["zero_stage"] == 2 and metrics["dtype"] == "float32" and metrics["timed_steps"] == 2
    assert metrics["step_time_mean_s"] > 0 and metrics["tokens_per_s"] == pytest.approx(
        metrics["batch_size"] * metrics["seq_len"] / metrics["step_time_mean_s"]
    )
    assert metrics["peak_gpu_memory_gib"] is None


def test_without_cuda_the_gpu_run_exits_non_zero_with_a_clear_message():
    proc = _run(timeout=120)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--cpu-dry-run" in proc.stderr
