"""The Dagster executor of a profile: in-process (ci), multiprocess (demo), k8s / celery (prod)."""

from __future__ import annotations

import dagster as dg

from orchestration.profiles import Profile

__all__ = ["build_executor"]


def build_executor(profile: Profile) -> dg.ExecutorDefinition:
    """The executor named by ``profile.executor``; cluster executors are imported lazily."""
    settings = profile.executor
    if settings.kind == "in_process":
        return dg.in_process_executor
    if settings.kind == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": settings.max_concurrent})
    try:
        if settings.kind == "k8s":
            from dagster_k8s import k8s_job_executor as executor
        else:
            from dagster_celery import celery_executor as executor
    except ImportError as e:
        raise ImportError(
            f"profile {profile.name!r} runs on the {settings.kind} executor: install "
            f"dagster-{'k8s' if settings.kind == 'k8s' else 'celery'}==0.29.27 in the deployment image"
        ) from e
    return executor.configured({"max_concurrent": settings.max_concurrent, **settings.config})
