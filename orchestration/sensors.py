"""Sensors: start the data pipeline when a new data version appears in ``dvc.lock``.

A new version arrives when someone runs ``dvc repro`` / ``dvc pull`` / ``git pull`` outside Dagster.
The sensor compares the curated output md5 in ``dvc.lock`` with the data version of the last
``curated_dataset`` materialisation and requests a run when they differ; the run key is the md5,
so one version triggers at most one run.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.jobs import data_job
from orchestration.resources import DvcError, PathsResource, out_md5, read_lock_entry

__all__ = ["data_version_sensor", "lock_data_version"]

CURATED = dg.AssetKey("curated_dataset")


def lock_data_version(root: str | Path, data_profile: str) -> str:
    """md5 of ``curate@<profile>``'s output as recorded in ``<root>/dvc.lock``."""
    stage = f"curate@{data_profile}"
    return out_md5(read_lock_entry(Path(root) / "dvc.lock", stage), stage)


@dg.sensor(job=data_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def data_version_sensor(context: dg.SensorEvaluationContext, paths: PathsResource):
    """Request a data-pipeline run for a ``dvc.lock`` data version Dagster has not recorded."""
    try:
        version = lock_data_version(paths.root, paths.data_profile)
    except DvcError as e:
        return dg.SkipReason(str(e))
    event = context.instance.get_latest_materialization_event(CURATED)
    recorded = None
    if event is not None and event.asset_materialization is not None:
        recorded = (event.asset_materialization.tags or {}).get("dagster/data_version")
    if recorded == version:
        return dg.SkipReason(f"data version {version} already materialised")
    return dg.RunRequest(run_key=f"data-{version}", tags={"xmed.data_version": version})
