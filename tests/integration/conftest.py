"""A scratch DVC + git repository that mirrors this checkout's data stages.

The data stages write into ``data/``, ``dvc.lock`` and the DVC remote of the repository they run
in; tests run them in a scratch copy (code folders symlinked, ``dvc.yaml`` and a ``ci``-only
``params.yaml`` copied) so the checkout itself is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestration.profiles import REPO_ROOT

DVC = REPO_ROOT / ".venv-dvc" / "bin" / "dvc"


def make_scratch_repo(dest: Path, profiles: tuple[str, ...] = ("ci",)) -> Path:
    """Create a git + DVC repository at ``dest`` running this checkout's data stages."""
    if not DVC.exists():
        pytest.fail(f"{DVC} missing: run `make setup` (DVC lives in its own environment)")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model", "validation", ".venv-dvc"):
        (dest / name).symlink_to(REPO_ROOT / name)
    shutil.copy(REPO_ROOT / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"] = {p: params["data"][p] for p in profiles}
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    run = lambda *cmd: subprocess.run(cmd, cwd=dest, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    run(str(DVC), "config", "core.analytics", "false")
    (dest / ".dvcstore").mkdir()
    run(str(DVC), "remote", "add", "-d", "local", str(dest / ".dvcstore"))
    return dest


@pytest.fixture(scope="session")
def scratch_repo(tmp_path_factory) -> Path:
    return make_scratch_repo(tmp_path_factory.mktemp("repo"))


def run_job(root: Path, instance, job: str, **kwargs):
    """Execute a job of the ``ci`` Definitions resolved against ``root``, in process."""
    from orchestration.definitions import make_definitions
    from orchestration.profiles import load_profile

    defs = make_definitions(load_profile("ci", root))
    return defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)


@pytest.fixture(scope="session")
def data_run(scratch_repo):
    """The data pipeline materialised once on the scratch repo: (root, instance, result)."""
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    result = run_job(scratch_repo, instance, "data_pipeline")
    return scratch_repo, instance, result
