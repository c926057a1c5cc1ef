"""``optim.head_lr_scale``: the LLM's output projection trains at its own multiple of the learning rate."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from model.recipes._common import init_distributed, load_deepspeed_config, optimizer_groups, warmup_cosine
from model.recipes.config import OptimizerSettings


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 3, bias=False)

    def get_output_embeddings(self):
        return self.head

    def forward(self, x):
        return self.head(self.body(x))


def test_one_group_unless_scaled_and_the_head_trains():
    m = _Toy()
    (only,) = optimizer_groups(m, lr=1e-3)
    assert len(only["params"]) == 3 and "lr" not in only
    m.head.requires_grad_(False)
    (only,) = optimizer_groups(m, lr=1e-3, head_lr_scale=0.1)
    assert len(only["params"]) == 2
    m.head.requires_grad_(True)
    rest, head = optimizer_groups(m, lr=1e-3, head_lr_scale=0.1)
    assert head["params"] == [m.head.weight] and head["lr"] == pytest.approx(1e-4)
    assert all(p is not m.head.weight for p in rest["params"]) and len(rest["params"]) == 2


def test_deepspeed_engine_keeps_the_ratio_through_the_schedule():
    import deepspeed

    init_distributed()
    m = _Toy()
    cfg = load_deepspeed_config(
        "model/configs/deepspeed/zero2_cpu.json",
        micro_batch_size=2,
        grad_accum_steps=1,
        lr=1e-2,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        grad_clip=1.0,
        bf16=False,
    )
    schedule = functools.partial(warmup_cosine, warmup_steps=0, total_steps=10, min_ratio=0.1)
    engine, *_ = deepspeed.initialize(
        model=m,
        model_parameters=optimizer_groups(m, lr=1e-2, head_lr_scale=0.1),
        config=cfg,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
    )
    head0, body0 = m.head.weight.detach().clone(), m.body.weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        engine.backward(engine(torch.randn(2, 4, generator=gen)).pow(2).sum())
        engine.step()
    lrs = [g["lr"] for g in engine.optimizer.param_groups]
    assert lrs[0] < 1e-2 and lrs[1] == pytest.approx(0.1 * lrs[0])  # scheduled, ratio kept
    # Adam steps are about lr in size: the head moved several times less than the body
    assert (m.head.weight - head0).abs().mean() * 3 < (m.body.weight - body0).abs().mean()


def test_scale_must_be_positive():
    with pytest.raises(ValueError, match="head_lr_scale"):
        OptimizerSettings(head_lr_scale=0)
