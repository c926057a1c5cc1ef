"""The composition root: the one place where the profile is chosen and everything is wired.

``XMED_PROFILE`` (ci / demo / prod, default demo) selects the profile; ``XMED_ROOT`` (default:
this checkout) is the repository the data stages and stores live in.
"""

from __future__ import annotations

import os

import dagster as dg

from assets import data, evaluation, training
from orchestration.executors import build_executor
from orchestration.jobs import benchmark_job, data_job, prognosis_job, training_job, uncertainty_job
from orchestration.profiles import Profile, load_profile
from orchestration.resources import build_resources
from orchestration.sensors import data_version_sensor

__all__ = ["make_definitions", "defs"]


def make_definitions(profile: Profile) -> dg.Definitions:
    """All assets, checks, jobs and sensors, with the resources and executor of ``profile``."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules([data, training, evaluation]),
        asset_checks=dg.load_asset_checks_from_modules([data, training, evaluation]),
        jobs=[data_job, training_job, benchmark_job, uncertainty_job, prognosis_job],
        sensors=[data_version_sensor],
        resources=build_resources(profile),
        executor=build_executor(profile),
    )


defs = make_definitions(load_profile(os.environ.get("XMED_PROFILE", "demo"), os.environ.get("XMED_ROOT")))
