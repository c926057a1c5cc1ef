"""Tests of the prod model path (model.pretrained): checkpoint checks, loading, freeze policy, prod config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from model.pretrained import (
    CheckpointNotFoundError,
    apply_freeze_policy,
    check_checkpoint_dir,
    load_pretrained_vlm,
    load_prod_model_config,
    parameter_group,
    trainable_parameters_by_group,
)
from model.tokenizer import train_tokenizer
from model.vlm import build_tiny_vlm_for_tokenizer, count_parameters

PROD_YAML = Path(__file__).resolve().parents[3] / "model" / "configs" / "model" / "prod.yaml"
ARCH = {
    "image_size": 32,
    "grid": 4,
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 32,
    "text_layers": 2,
    "heads": 2,
    "intermediate": 64,
    "max_positions": 128,
}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(
        ["<image>\nIs there a lesion? Yes No", "<ref>liver</ref><box>[[1, 2, 3, 4]]</box>"] * 5,
        vocab_size=280,
    )


@pytest.fixture
def tiny(tok):
    return build_tiny_vlm_for_tokenizer(tok, seed=0, **ARCH).eval()


def _batch(tok, n_image_tokens=16):
    image = tok.convert_tokens_to_ids("<image>")
    text = tok("Is there a lesion? Yes")["input_ids"]
    ids = torch.tensor([[image] * n_image_tokens + text])
    return {
        "input_ids": ids,
        "pixel_values": torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
    }


# -- loading our own checkpoint -----------------------------------------------------------------


def test_xmed_checkpoint_round_trips_through_load_pretrained_vlm(tmp_path, tok, tiny):
    tiny.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_pretrained_vlm(tmp_path, dtype="float32")
    assert type(loaded) is type(tiny)
    want, got = tiny.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    batch = _batch(tok)
    with torch.no_grad():
        assert torch.equal(tiny(**batch).logits, loaded.eval()(**batch).logits)
    assert len(loaded_tok) == len(tok)
    assert loaded_tok("<ref>liver</ref> 347")["input_ids"] == tok("<ref>liver</ref> 347")["input_ids"]


def test_load_in_bfloat16_and_bad_dtype(tmp_path, tok, tiny):
    tiny.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = load_pretrained_vlm(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype 'int8'"):
        load_pretrained_vlm(tmp_path, dtype="int8")


# -- loading an InternVL2-style checkpoint with remote code (offline) -------------------------

REMOTE_CONFIG = """
from transformers import PretrainedConfig


class InternVLChatConfig(PretrainedConfig):
    model_type = "internvl_chat"

    def __init__(self, hidden=8, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
"""
REMOTE_MODELING = """
from torch import nn
from transformers import PreTrainedModel

from .configuration_internvl_chat import InternVLChatConfig


class InternVLChatModel(PreTrainedModel):
    config_class = InternVLChatConfig

    def __init__(self, config):
        super().__init__(config)
        h = config.hidden
        self.vision_model = nn.Sequential(nn.Linear(h, h))
        self.mlp1 = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h))
        self.language_model = nn.Module()
        self.language_model.wqkv = nn.Linear(h, 3 * h)
        self.language_model.output = nn.Linear(h, 4, bias=False)
        self.post_init()
"""


def test_internvl_remote_code_checkpoint_loads_offline_and_takes_the_policy(tmp_path, tok):
    (tmp_path / "configuration_internvl_chat.py").write_text(REMOTE_CONFIG)
    (tmp_path / "modeling_internvl_chat.py").write_text(REMOTE_MODELING)
    auto_map = {
        "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
        "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    }
    config = {"model_type": "internvl_chat", "hidden": 8, "auto_map": auto_map}
    (tmp_path / "config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(0)
    shapes = {
        "vision_model.0.weight": (8, 8),
        "vision_model.0.bias": (8,),
        "mlp1.0.weight": (8,),
        "mlp1.0.bias": (8,),
        "mlp1.1.weight": (8, 8),
        "mlp1.1.bias": (8,),
        "language_model.wqkv.weight": (24, 8),
        "language_model.wqkv.bias": (24,),
        "language_model.output.weight": (4, 8),
    }
    weights = {k: torch.randn(*v, generator=g) for k, v in shapes.items()}
    save_file(weights, tmp_path / "model.safetensors")
    tok.save_pretrained(tmp_path)
    model, loaded_tok = load_pretrained_vlm(tmp_path, dtype="float32")
    assert type(model).__name__ == "InternVLChatModel"
    assert all(torch.equal(model.state_dict()[k], w) for k, w in weights.items())
    assert len(loaded_tok) == len(tok)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_pretrained_vlm(tmp_path, trust_remote_code=False)
    apply_freeze_policy(model, {"vision": "frozen", "projector": "trained", "llm": "trained"})
    assert trainable_parameters_by_group(model) == {
        "vision": 0,
        "projector": 8 + 8 + 64 + 8,
        "llm": 24 * 8 + 24 + 32,
        "audio": 0,
        "lora": 0,
        "other": 0,
    }


# -- clear errors for missing or incomplete checkpoints -----------------------------------------


def test_missing_directory_error_names_the_path(tmp_path):
    missing = tmp_path / "models" / "InternVL2-8B"
    with pytest.raises(CheckpointNotFoundError) as err:
        load_pretrained_vlm(missing)
    msg = str(err.value)
    assert str(missing) in msg and "does not exist" in msg
    assert "config.json" in msg and "InternVL2-8B snapshot" in msg and "local_files_only" in msg


def test_fake_internvl_directory_without_weights_names_what_is_missing(tmp_path):
    config = {
        "model_type": "internvl_chat",
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}})
    )
    with pytest.raises(CheckpointNotFoundError) as err:
        load_pretrained_vlm(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "'internvl_chat'" in msg
    missing = msg.splitlines()[0].split("missing: ", 1)[1]  # first line lists what is missing
    for needed in (
        "model weights",
        "tokenizer.json or tokenizer.model",
        "remote-code file modeling_internvl_chat.py",
        "remote-code file configuration_internvl_chat.py",
        "remote-code file tokenization_internlm2.py",
    ):
        assert needed in missing, needed
    assert "tokenizer_config.json" not in missing  # it is there
    assert "copy the complete InternVL2-8B snapshot directory" in msg


def test_sharded_index_names_the_missing_shard(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="weight shard model-00002-of-00002.safetensors"):
        check_checkpoint_dir(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert check_checkpoint_dir(tmp_path)["model_type"] == "llava"


# -- freeze policy --------------------------------------------------------------------------------


def test_default_policy_on_our_model_trains_projector_and_llm_only(tiny):
    apply_freeze_policy(tiny, {"vision": "frozen", "projector": "trained", "llm": "trained"})
    counts, total = trainable_parameters_by_group(tiny), count_parameters(tiny)
    assert counts["vision"] == 0
    assert counts["projector"] == total["projector"] > 0
    assert counts["llm"] == total["llm"] > 0
    assert counts["lora"] == counts["other"] == 0
    apply_freeze_policy(tiny, {"vision": "trained", "projector": "frozen", "llm": "frozen"})
    counts = trainable_parameters_by_group(tiny)
    assert counts["vision"] == total["vision"] and counts["projector"] == counts["llm"] == 0


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention = nn.ModuleDict({"wqkv": nn.Linear(d, 3 * d), "wo": nn.Linear(d, d)})
        self.feed_forward = nn.ModuleDict({k: nn.Linear(d, d) for k in ("w1", "w2", "w3")})


class FakeInternVL(nn.Module):
    """InternVLChatModel's module names: vision_model / mlp1 / language_model (InternLM2)."""

    def __init__(self, d=8):
        super().__init__()
        self.vision_model = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
        self.mlp1 = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.language_model = nn.Module()
        self.language_model.model = nn.Module()
        self.language_model.model.layers = nn.ModuleList([_Block(d), _Block(d)])
        self.language_model.output = nn.Linear(d, 5, bias=False)


def _numel(module):
    return sum(p.numel() for p in module.parameters())


def test_internvl_policy_by_module_name():
    m = FakeInternVL()
    assert parameter_group("vision_model.0.weight") == "vision"
    assert parameter_group("mlp1.1.weight") == "projector"
    assert parameter_group("language_model.model.layers.0.attention.wqkv.weight") == "llm"
    apply_freeze_policy(m, {"vision": "frozen", "projector": "trained", "llm": "trained"})
    counts = trainable_parameters_by_group(m)
    assert counts["vision"] == 0
    assert counts["projector"] == _numel(m.mlp1)
    assert counts["llm"] == _numel(m.language_model)


def test_internvl_lora_policy_adapts_only_the_llm():
    m = FakeInternVL(d=8)
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["wqkv", "wo", "w1", "w2", "w3"]}
    wrapped = apply_freeze_policy(m, {"vision": "frozen", "projector": "trained", "llm": "lora"}, lora=lora)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    lora_names = [n for n in names if ".lora_" in n]
    # 2 layers x 5 targets x (A, B)
    assert len(lora_names) == 20 and all("language_model" in n for n in lora_names)
    assert set(names) - set(lora_names) == {n for n in names if ".mlp1." in n} and any(
        ".mlp1." in n for n in names
    )
    counts = trainable_parameters_by_group(wrapped)
    assert counts["vision"] == 0 and counts["llm"] == 0
    # wqkv (8 -> 24): A 2x8 + B 24x2 = 64; wo/w1/w2/w3 (8 -> 8): 16 + 16 = 32 each -> 192 per layer
    assert counts["lora"] == 2 * (64 + 4 * 32)


def test_policy_errors():
    with pytest.raises(ValueError, match="needs lora settings"):
        apply_freeze_policy(FakeInternVL(), {"llm": "lora"})
    with pytest.raises(ValueError, match="vision"):
        apply_freeze_policy(FakeInternVL(), {"vision": "thawed"})
    odd = FakeInternVL()
    odd.extra_head = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="extra_head"):
        apply_freeze_policy(odd, {})


# -- prod config ------------------------------------------------------------------------------------


def test_shipped_prod_config_validates_on_cpu_without_checkpoint():
    cfg = load_prod_model_config(PROD_YAML)
    assert cfg.checkpoint.path == "/models/InternVL2-8B" and cfg.checkpoint.dtype == "bfloat16"
    assert cfg.freeze.model_dump() == {
        "vision": "frozen",
        "projector": "trained",
        "llm": "trained",
        "audio": "frozen",
    }
    assert cfg.lora.enabled is False and cfg.lora_kwargs() is None
    assert cfg.lora.target_modules == ["wqkv", "wo", "w1", "w2", "w3"] and (cfg.lora.r, cfg.lora.alpha) == (
        16,
        32,
    )
    assert (cfg.tiling.image_size, cfg.tiling.max_num, cfg.tiling.use_thumbnail) == (448, 12, True)
    assert cfg.max_length == 4096


def _write(tmp_path, doc):
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d["freeze"].update(llm="lora"), "lora.enabled=False but freeze.llm='lora'"),
        (lambda d: d["lora"].update(enabled=True), "lora.enabled=True but freeze.llm='trained'"),
        (lambda d: d["checkpoint"].update(dtype="int4"), "dtype"),
        (lambda d: d.update(batch_size=8), "batch_size"),
        (lambda d: d["tiling"].update(min_num=13), "min_num=13 > tiling.max_num=12"),
        (lambda d: d["lora"].update(target_modules=[]), "target_modules"),
    ],
)
def test_prod_config_rejects_bad_values_naming_the_file(tmp_path, edit, match):
    doc = yaml.safe_load(PROD_YAML.read_text())
    edit(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=match) as err:
        load_prod_model_config(path)
    assert str(path) in str(err.value)


def test_prod_lora_kwargs_when_enabled(tmp_path):
    doc = yaml.safe_load(PROD_YAML.read_text())
    doc["freeze"]["llm"], doc["lora"]["enabled"] = "lora", True
    cfg = load_prod_model_config(_write(tmp_path, doc))
    assert cfg.lora_kwargs() == {
        "r": 16,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": ["wqkv", "wo", "w1", "w2", "w3"],
    }


def test_check_paths_missing_then_complete(tmp_path):
    ckpt = tmp_path / "InternVL2-8B"
    doc = yaml.safe_load(PROD_YAML.read_text())
    doc["checkpoint"]["path"] = str(ckpt)
    cfg = load_prod_model_config(_write(tmp_path, doc))
    with pytest.raises(CheckpointNotFoundError, match=f"{ckpt} does not exist"):
        cfg.check_paths()
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    with pytest.raises(CheckpointNotFoundError, match="modeling_internvl_chat.py"):
        cfg.check_paths()
    for name in (
        "model.safetensors",
        "tokenizer_config.json",
        "tokenizer.model",
        "modeling_internvl_chat.py",
        "configuration_internvl_chat.py",
    ):
        (ckpt / name).write_text("{}")
    cfg.check_paths()  # complete: no error
