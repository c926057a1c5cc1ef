"""Profiles load and validate (prod included, on CPU); bad profiles fail loudly."""

from __future__ import annotations

import pytest
import yaml

from orchestration import profiles
from orchestration.profiles import load_data_params, load_profile


@pytest.mark.parametrize("name", ["ci", "demo", "prod"])
def test_every_profile_validates(name, tmp_path):
    p = load_profile(name, root=tmp_path)
    assert p.name == name
    assert "{root}" not in p.model_dump_json()


def test_embedded_profiles_use_sqlite_and_local_paths(tmp_path):
    p = load_profile("demo", root=tmp_path)
    assert p.mlflow.tracking_uri == f"sqlite:///{tmp_path.resolve()}/.mlflow/mlflow.db"
    assert p.executor.kind == "multiprocess"
    assert load_profile("ci", root=tmp_path).executor.kind == "in_process"


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="unknown profile 'staging'.*XMED_PROFILE"):
        load_profile("staging")


def test_invalid_profile_names_the_field(tmp_path, monkeypatch):
    bad = yaml.safe_load((profiles.PROFILE_DIR / "ci.yaml").read_text())
    bad["executor"]["kind"] = "threads"
    (tmp_path / "ci.yaml").write_text(yaml.safe_dump(bad))
    monkeypatch.setattr(profiles, "PROFILE_DIR", tmp_path)
    with pytest.raises(ValueError, match="executor.kind"):
        load_profile("ci")


def test_data_params_of_missing_profile_say_how_to_fix(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  ci: {}\n")
    with pytest.raises(ValueError, match="no block data.prod"):
        load_data_params(tmp_path, "prod")
