"""A stage's run folder belongs to one Dagster run lineage: retries resume, new runs start fresh."""

from __future__ import annotations

import json

from assets._training import LINEAGE_FILE, claim_run_folder


def test_a_new_lineage_claims_the_folder_and_a_retry_keeps_it(tmp_path):
    out = tmp_path / "sft"
    assert claim_run_folder(out, "run-a") is True  # nobody's yet: fresh start
    assert claim_run_folder(out, "run-a") is False  # a retry / re-execution of run-a: resume
    assert claim_run_folder(out, "run-b") is True  # a new materialisation: fresh start
    record = json.loads((out / LINEAGE_FILE).read_text())
    assert record == {"root_run_id": "run-b", "previous": "run-a"}
    assert [p.name for p in out.iterdir()] == [LINEAGE_FILE]  # no temporary file left behind
