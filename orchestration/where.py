"""Print where to look after a run: Dagster UI, MLflow UI, Data Docs, data folders."""

from __future__ import annotations

import os
from pathlib import Path

from orchestration.profiles import load_profile


def main() -> None:
    profile = load_profile(os.environ.get("XMED_PROFILE", "demo"))
    root = Path(profile.root)
    docs = Path(profile.gx_root) / "uncommitted" / "data_docs" / "local_site" / "index.html"
    print(
        "\nWhere to look:\n"
        f"  Dagster UI : make ui        -> http://127.0.0.1:3000 (asset graph, lineage, checks; DAGSTER_HOME=.dagster)\n"
        f"  MLflow UI  : make mlflow-ui -> {profile.mlflow.ui_url} (experiment {profile.mlflow.experiment})\n"
        f"  Data Docs  : {docs}\n"
        f"  Data       : {root / 'data' / profile.data_profile} (versions in dvc.lock, remote .dvcstore)"
    )


if __name__ == "__main__":
    main()
