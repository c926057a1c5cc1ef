"""Test tiers.

* default (``make test``): unit tests plus the ``integration`` tier on the ``ci`` profile
  (in-process Dagster runs over a scratch DVC repository, the dagster CLI, MLflow on SQLite).
* ``slow``: multi-minute runs, excluded by default (``make test-all`` includes them).
* ``gpu``: skipped without CUDA.
"""

from __future__ import annotations

import os

for key, value in {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(key, value)


def pytest_collection_modifyitems(config, items):
    import pytest

    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
