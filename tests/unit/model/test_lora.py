"""Tests of LoRA on the LLM of our tiny VLM (model.lora, model.pretrained.apply_freeze_policy)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from model.lora import add_lora, is_lora_parameter, lora_target_regex, merge_lora
from model.pretrained import apply_freeze_policy, trainable_parameters_by_group
from model.vlm import build_tiny_vlm, count_parameters

IMAGE = 5
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def tiny():
    return build_tiny_vlm(
        vocab_size=64,
        image_size=32,
        grid=4,
        vision_hidden=32,
        vision_layers=1,
        text_hidden=32,
        text_layers=2,
        heads=2,
        intermediate=64,
        max_positions=64,
        image_token_id=IMAGE,
        pad_token_id=0,
        eos_token_id=1,
        seed=0,
    )


def batch():
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 64, (2, 8), generator=g)
    ids = torch.cat([torch.full((2, 16), IMAGE), text], dim=1)
    labels = ids.clone()
    labels[:, :16] = -100
    return {"input_ids": ids, "labels": labels, "pixel_values": torch.randn(2, 3, 32, 32, generator=g)}


def test_target_regex_is_scoped_to_the_language_model():
    rx = lora_target_regex(["q_proj", "wqkv"])
    assert re.fullmatch(rx, "language_model.model.layers.0.self_attn.q_proj")
    assert re.fullmatch(rx, "model.language_model.layers.3.attention.wqkv")  # HF-native VLM layout
    assert not re.fullmatch(rx, "vision_tower.layers.0.self_attn.q_proj")
    assert not re.fullmatch(rx, "language_model.model.layers.0.self_attn.q_proj_extra")


def test_only_lora_parameters_train_and_initial_output_is_unchanged():
    base = tiny().eval()
    b = batch()
    with torch.no_grad():
        before = base(**b).logits
    model = add_lora(base, **LORA)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    # 2 layers x 3 targets x (lora_A, lora_B)
    assert len(trainable) == 12 and all(is_lora_parameter(n) and "language_model" in n for n in trainable)
    with torch.no_grad():
        assert torch.equal(model(**b).logits, before)  # lora_B starts at zero


def test_lora_trains_and_merge_restores_names_and_shapes():
    base = tiny()
    shapes = {k: v.shape for k, v in base.state_dict().items()}
    model = add_lora(base, **LORA).train()
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    b = batch()
    for _ in range(2):
        loss = model(**b).loss
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, frozen_before[n]) for n, p in model.named_parameters() if n in frozen_before)
    model.eval()
    with torch.no_grad():
        adapted = model(**b).logits
    merged = merge_lora(model)
    assert type(merged).__name__ == "XMedVLMForConditionalGeneration"
    assert {k: v.shape for k, v in merged.state_dict().items()} == shapes
    assert not any(is_lora_parameter(n) for n, _ in merged.named_parameters())
    with torch.no_grad():
        after = merged(**b).logits
    assert torch.allclose(after, adapted, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(after, tiny()(**b).logits, atol=1e-4)  # the update is real


def test_lora_policy_on_our_model_keeps_the_projector_trainable():
    model = apply_freeze_policy(
        tiny(), {"vision": "frozen", "projector": "trained", "llm": "lora"}, lora=LORA
    )
    counts = trainable_parameters_by_group(model)
    total = count_parameters(model.get_base_model())
    assert counts["vision"] == 0 and counts["llm"] == 0
    assert counts["projector"] == total["projector"]
    # q_proj, v_proj (32 -> 32): 4*32 + 32*4 = 256 each; down_proj (64 -> 32): 4*64 + 32*4 = 384
    assert counts["lora"] == 2 * (256 + 256 + 384)


def test_lora_errors():
    with pytest.raises(ValueError, match=r"match no linear layer.*q_proj"):
        add_lora(tiny(), r=2, alpha=4, dropout=0.0, target_modules=["wqkv"])
    with pytest.raises(ValueError, match="r >= 1"):
        add_lora(tiny(), r=0, alpha=4, dropout=0.0, target_modules=["q_proj"])
    with pytest.raises(TypeError, match="PeftModel"):
        merge_lora(nn.Linear(2, 2))
