"""GPU tier: the real smoke run (ZeRO-3, bf16, ~200M-parameter XMed VLM) on one GPU; skipped without CUDA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_gpu_smoke_zero3_bf16(tmp_path):
    out = tmp_path / "gpu_smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_smoke.py"), "--steps", "10", "--json-out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(proc.stdout)
    m = json.loads(out.read_text())
    assert m["zero_stage"] == 3 and m["dtype"] == "bfloat16" and m["parameters"] > 1e8
    assert m["vision_tokens"] == 256 and m["seq_len"] == 512
    assert math.isfinite(m["last_loss"]) and m["tokens_per_s"] > 0
    assert 0 < m["peak_gpu_memory_gib"] < 70
