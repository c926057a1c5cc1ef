"""DVC lock reading and metric flattening (no DVC or MLflow process needed)."""

from __future__ import annotations

import pytest

from assets._dvc_stage import flatten_numbers
from orchestration.resources import DvcError, DvcResource, out_md5, read_lock_entry

LOCK = """\
schema: '2.0'
stages:
  curate@ci:
    cmd: python -m model.data.curation --params params.yaml --profile ci --root data/ci
    outs:
    - path: data/ci/curated
      hash: md5
      md5: 3f1c0e2b9d1a4c7e8f00112233445566.dir
      size: 1234
      nfiles: 7
"""


def test_lock_entry_and_md5(tmp_path):
    (tmp_path / "dvc.lock").write_text(LOCK)
    entry = read_lock_entry(tmp_path / "dvc.lock", "curate@ci")
    assert out_md5(entry, "curate@ci") == "3f1c0e2b9d1a4c7e8f00112233445566.dir"


def test_missing_lock_and_stage_say_what_to_run(tmp_path):
    with pytest.raises(DvcError, match="run `dvc repro curate@ci` first"):
        read_lock_entry(tmp_path / "dvc.lock", "curate@ci")
    (tmp_path / "dvc.lock").write_text(LOCK)
    with pytest.raises(DvcError, match="no entry for stage 'ingest@ci'"):
        read_lock_entry(tmp_path / "dvc.lock", "ingest@ci")


def test_missing_dvc_binary_is_a_clear_error(tmp_path):
    dvc = DvcResource(repo_dir=str(tmp_path), binary=str(tmp_path / "nope" / "dvc"))
    with pytest.raises(DvcError, match="make setup"):
        dvc.repro("generate@ci")


def test_flatten_numbers_keeps_numeric_leaves_only():
    assert flatten_numbers({"a": 1, "b": {"c": 2.5, "d": "x", "e": True}, "f": [1]}) == {"a": 1.0, "b.c": 2.5}
