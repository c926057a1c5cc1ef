"""Recipe configs: every shipped YAML validates (prod included, on CPU), overrides, cross-field checks,
clear errors, and the DeepSpeed JSON loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.recipes._common import load_deepspeed_config, zero_stage
from model.recipes.config import (
    CONFIG_ROOT,
    PROFILES,
    STAGES,
    AudioConfig,
    DPOConfig,
    RecipeConfigError,
    SFTConfig,
    apply_overrides,
    load_recipe_config,
)

REPO = Path(__file__).resolve().parents[4]
DS = REPO / "model" / "configs" / "deepspeed"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_shipped_config_validates(stage, profile):
    cfg = load_recipe_config(stage, profile)
    assert isinstance(cfg, STAGES[stage]) and cfg.stage == stage
    assert (REPO / cfg.train.deepspeed_config).is_file()


def test_no_stray_config_files():
    found = {(p.parent.name, p.stem) for p in CONFIG_ROOT.glob("*/*.yaml")}
    assert found == {(s, p) for s in STAGES for p in PROFILES}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_prod_validates_on_cpu_and_check_paths_names_the_checkpoint(stage):
    cfg = load_recipe_config(stage, "prod")
    assert cfg.model.dtype == "bfloat16" and cfg.train.deepspeed_config.endswith("zero3_bf16.json")
    if stage != "audio":
        assert cfg.freeze.vision and not cfg.freeze.projector and not cfg.freeze.llm
    with pytest.raises(
        FileNotFoundError, match=r"model\.checkpoint_dir: nothing at '(/models/InternVL2-8B|runs/prod/)"
    ):
        cfg.check_paths()


def test_prod_deepspeed_config_loads_on_cpu():
    cfg = load_recipe_config("sft", "prod")
    ds = load_deepspeed_config(
        REPO / cfg.train.deepspeed_config,
        micro_batch_size=cfg.train.micro_batch_size,
        grad_accum_steps=cfg.train.grad_accum_steps,
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        grad_clip=cfg.optim.grad_clip,
        bf16=True,
    )
    assert zero_stage(ds) == 3 and ds["bf16"]["enabled"]
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["optimizer"]["params"]["lr"] == 4e-5 and ds["gradient_accumulation_steps"] == 8


def test_check_paths_passes_when_inputs_exist(world, tmp_path):
    from tests.unit.model.recipes._world import sft_config, stage_config

    sft_config(world, tmp_path).check_paths()
    for stage in ("reasoning_sft", "dpo", "audio"):
        stage_config(stage, world, tmp_path).check_paths()


def test_overrides_are_typed_and_nested():
    cfg = load_recipe_config(
        "dpo",
        "ci",
        [
            "loss.beta=0.25",
            "sampling.num_samples=6",
            "train.max_steps=null",
            "provenance.dagster_run_id=abc",
            "lora.target_modules=[q_proj]",
        ],
    )
    assert isinstance(cfg, DPOConfig)
    assert cfg.loss.beta == 0.25 and cfg.sampling.num_samples == 6 and cfg.train.max_steps is None
    assert cfg.provenance.dagster_run_id == "abc" and cfg.lora.target_modules == ["q_proj"]
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}


@pytest.mark.parametrize(
    ("stage", "overrides", "message"),
    [
        ("sft", ["train.micro_batch_sise=3"], "micro_batch_sise"),
        ("sft", ["train.micro_batch_size=zero"], "micro_batch_size"),
        ("sft", ["train.micro_batch_size=0"], "greater than or equal to 1"),
        ("sft", ["model.tokenizer_dir=/t"], "EITHER checkpoint_dir"),
        ("sft", ["model.checkpoint_dir=null"], "EITHER checkpoint_dir"),
        (
            "sft",
            ["model.checkpoint_dir=null", "model.tokenizer_dir=/t"],
            "needs both tokenizer_dir and architecture",
        ),
        ("sft", ["lora.enabled=true", "freeze.llm=true"], "freeze.llm=True"),
        ("sft", ["freeze.vision=true", "freeze.projector=true", "freeze.llm=true"], "nothing would train"),
        ("sft", ["optim.warmup_steps=6"], "never reach the peak"),
        ("sft", ["data.task_weights={vqa: 2.0}"], "unknown task"),
        ("sft", ["data.task_weights={guardrail: -1}"], ">= 0"),
        ("sft", ["data.warmup={steps: 2, task_weights: {vqa: 1}}"], "unknown task"),
        ("sft", ["data.warmup={steps: 2, task_weights: {guardrail: 0}}"], "drop every task"),
        ("sft", ["data.warmup={steps: 6, task_weights: {guardrail: 1}}"], "below train.max_steps"),
        ("dpo", ["sampling.num_samples=1"], "num_samples"),
        ("dpo", ["loss.beta=0"], "beta"),
        ("audio", ["freeze.llm=false"], "ONLY the audio encoder"),
        ("audio", ["freeze.audio=true"], "audio"),
        ("reasoning_sft", ["stage=sft"], "stage is 'sft'"),
    ],
)
def test_invalid_configs_name_the_field(stage, overrides, message):
    with pytest.raises(RecipeConfigError, match=message) as err:
        load_recipe_config(stage, "ci", overrides)
    assert f"{stage}/ci.yaml" in str(err.value)


def test_bad_inputs_to_the_loader():
    with pytest.raises(RecipeConfigError, match="unknown stage"):
        load_recipe_config("pretrain", "ci")
    with pytest.raises(RecipeConfigError, match="no recipe config at"):
        load_recipe_config("sft", "staging")
    with pytest.raises(RecipeConfigError, match="key.sub=value"):
        load_recipe_config("sft", "ci", ["train.seed"])


def test_every_field_has_help_text():
    def walk(model_cls, seen):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{model_cls.__name__}.{name} has no help text"
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields") and sub not in seen:
                seen.add(sub)
                walk(sub, seen)

    for cls in STAGES.values():
        walk(cls, set())


def test_audio_default_freeze_policy_trains_only_audio():
    cfg = AudioConfig.model_validate(
        {
            "output_dir": "x",
            "model": {"checkpoint_dir": "m"},
            "audio_architecture": "a.yaml",
            "data": {"manifest_dir": "m", "data_root": "d"},
        }
    )
    assert (cfg.freeze.vision, cfg.freeze.projector, cfg.freeze.llm, cfg.freeze.audio) == (
        True,
        True,
        True,
        False,
    )
    sft = SFTConfig.model_validate(
        {"output_dir": "x", "model": {"checkpoint_dir": "m"}, "data": {"shards": "s", "data_root": "d"}}
    )
    assert sft.freeze.audio and not sft.freeze.llm and sft.train.num_epochs == 1


@pytest.mark.parametrize(
    ("json_text", "message"),
    [
        ('{"train_micro_batch_size_per_gpu": 2}', "disagrees with the recipe config"),
        ('{"optimizer": {"type": "AdamW", "params": {"lr": 0.5}}}', "disagrees with the recipe config"),
        ('{"bf16": {"enabled": true}}', "bf16.enabled=True"),
    ],
)
def test_deepspeed_loader_refuses_contradictions(tmp_path, json_text, message):
    path = tmp_path / "ds.json"
    path.write_text(json_text)
    kw = {
        "micro_batch_size": 4,
        "grad_accum_steps": 1,
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "bf16": False,
    }
    with pytest.raises(ValueError, match=message):
        load_deepspeed_config(path, **kw)
    with pytest.raises(FileNotFoundError, match="no DeepSpeed config"):
        load_deepspeed_config(tmp_path / "none.json", **kw)


def test_deepspeed_loader_fills_auto():
    ds = load_deepspeed_config(
        DS / "zero2_cpu.json",
        micro_batch_size=3,
        grad_accum_steps=2,
        lr=1e-3,
        betas=(0.8, 0.9),
        eps=1e-6,
        weight_decay=0.1,
        grad_clip=0.5,
        bf16=False,
    )
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["gradient_clipping"] == 0.5 and zero_stage(ds) == 2
    assert ds["optimizer"]["params"] == {
        "lr": 1e-3,
        "betas": [0.8, 0.9],
        "eps": 1e-6,
        "weight_decay": 0.1,
        "torch_adam": True,
    }
