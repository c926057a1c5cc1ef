"""The training resource: recipe configs of the active profile, resolved against the repository.

Recipe YAMLs (``model/configs/recipes/<stage>/<profile>.yaml``) hold values with repository-relative
paths; this resource makes every path absolute under the repository root, points each stage at its
parent stage's model and at a run folder under ``runs/<profile>/``, and stamps the provenance
(data version, Dagster run id) into the config. Nothing here can switch a gate or a check off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

__all__ = ["TrainingResource", "PATH_FIELDS"]

#: config fields that hold repository-relative paths
PATH_FIELDS = (
    "output_dir",
    "model.checkpoint_dir",
    "model.tokenizer_dir",
    "model.architecture",
    "audio_architecture",
    "data.shards",
    "data.data_root",
    "data.manifest_dir",
    "data.replay_shards",
    "train.deepspeed_config",
)


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


class TrainingResource(dg.ConfigurableResource):
    """Stage configs for one profile under one repository root."""

    root: str
    profile: str

    @property
    def runs_root(self) -> Path:
        return Path(self.root) / "runs" / self.profile

    def model_dir(self, stage: str) -> Path:
        """Where ``stage`` (``base_model``, ``sft``, ...) leaves its final ``save_pretrained`` model."""
        return self.runs_root / stage / "model"

    def architecture_path(self) -> Path:
        return Path(self.root) / "model" / "configs" / "model" / f"{self.profile}.yaml"

    def stage_config(
        self, stage: str, *, parent_model_dir: str | None, data_version: str, run_id: str
    ) -> Any:
        """The validated config of ``stage`` with absolute paths, parent model and provenance."""
        import yaml

        from model.recipes.config import load_recipe_config, recipe_config_path

        raw = yaml.safe_load(recipe_config_path(stage, self.profile).read_text()) or {}
        for name in PATH_FIELDS:
            value = _get(raw, name)
            if isinstance(value, str) and not Path(value).is_absolute():
                _set(raw, name, str(Path(self.root) / value))
        _set(raw, "output_dir", str(self.runs_root / stage))
        if parent_model_dir is not None:
            model = {k: v for k, v in (raw.get("model") or {}).items() if k in ("dtype", "trust_remote_code")}
            raw["model"] = {**model, "checkpoint_dir": parent_model_dir}
        _set(raw, "provenance.data_version", data_version)
        _set(raw, "provenance.dagster_run_id", run_id)
        path = self.runs_root / f"{stage}.config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_recipe_config(stage, path)
