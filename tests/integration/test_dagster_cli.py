"""`dagster asset materialize` with a string selection, as an operator runs it."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from orchestration.profiles import REPO_ROOT

pytestmark = pytest.mark.integration


def test_cli_materialize_with_string_selection(tmp_path):
    from tests.integration.conftest import make_scratch_repo

    root = make_scratch_repo(tmp_path / "repo")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "orchestration/dagster.yaml").read_text())
    env = {**os.environ, "XMED_PROFILE": "ci", "XMED_ROOT": str(root), "DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        [str(REPO_ROOT / ".venv/bin/dagster"), "asset", "materialize", "-m", "orchestration.definitions",
         "--select", "key:raw_sources"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert "generate@ci" in lock["stages"]
