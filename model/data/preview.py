"""Small markdown previews of the data stages, shown in Dagster metadata and logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

__all__ = ["instruction_preview", "manifest_preview", "markdown_table"]


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table (cells have ``|`` and newlines escaped)."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _counts(table, columns: list[str]) -> list[list[object]]:
    grouped = table.group_by(columns).aggregate([([], "count_all")]).sort_by([(c, "ascending") for c in columns])
    return [[*(grouped[c][i].as_py() for c in columns), grouped["count_all"][i].as_py()] for i in range(grouped.num_rows)]


def manifest_preview(data_root: str | Path) -> dict[str, str]:
    """Image counts by modality x split and by site x split of ``<data_root>/manifest``."""
    table = ds.dataset(Path(data_root) / "manifest" / "images", format="parquet").to_table(
        columns=["modality", "site", "split"]
    )
    return {
        "counts_by_modality_split": markdown_table(["modality", "split", "images"], _counts(table, ["modality", "split"])),
        "counts_by_site_split": markdown_table(["site", "split", "images"], _counts(table, ["site", "split"])),
    }


def instruction_preview(data_root: str | Path, *, per_task: int = 1) -> dict[str, str]:
    """Counts per task x split, and ``per_task`` sample conversations of each task."""
    dataset = ds.dataset(Path(data_root) / "curated" / "shards", format="parquet")
    counts = dataset.to_table(columns=["task", "split"])
    rows = []
    for task in sorted(set(counts["task"].to_pylist())):
        sample = dataset.to_table(filter=pc.field("task") == task).slice(0, per_task).to_pylist()
        for rec in sample:
            turns = rec["conversations"]
            rows.append([task, rec["split"], turns[0]["value"][:160], turns[1]["value"][:160], json.loads(rec["target"]) and rec["target"][:80]])
    return {
        "counts_by_task_split": markdown_table(["task", "split", "pairs"], _counts(counts, ["task", "split"])),
        "sample_preview": markdown_table(["task", "split", "human", "gpt", "target"], rows),
    }
