"""A plain PyTorch SFT loop on the curated mix, shared by the training benchmarks.

It does what one SFT recipe step does (same collator, loss, AdamW, warmup + cosine schedule,
gradient clipping) without the DeepSpeed engine, so the benchmarks can (a) measure the engine's
overhead and (b) compare model designs at equal cost.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from model.collators import SFTCollator


@dataclass
class LoopResult:
    """What a loop run measured."""

    steps: int
    seconds: float
    samples: int
    tokens: int
    first_loss: float
    last_loss: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def batch_plan(n_rows: int, *, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """``steps`` seeded random batches of row indices (with replacement across batches)."""
    rng = random.Random(seed)
    return [rng.sample(range(n_rows), batch_size) for _ in range(steps)]


def lr_at(step: int, *, total: int, peak: float, warmup: int, min_ratio: float = 0.05) -> float:
    """Linear warmup then cosine decay to ``min_ratio * peak`` (the recipes' schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_plain(
    model: torch.nn.Module,
    encode: Callable[[int], dict],
    plan: Sequence[Sequence[int]],
    *,
    pad_id: int,
    lr: float = 2e-3,
    warmup: int = 50,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    step_fn: Callable[[dict], torch.Tensor] | None = None,
    loss_weighting: str = "token",
) -> LoopResult:
    """Train ``model`` on the batches of ``plan`` (``encode(i)`` gives the example of row ``i``).

    ``step_fn(batch) -> loss`` replaces the default forward/backward/step (used to drive a
    DeepSpeed engine over the very same batches).
    """
    collate = SFTCollator(pad_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    samples = tokens = 0
    t0 = time.perf_counter()
    for step, idx in enumerate(plan):
        batch = collate([encode(i) for i in idx])
        samples += len(idx)
        tokens += int(batch["attention_mask"].sum())
        if step_fn is not None:
            loss = step_fn(batch)
        else:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total=len(plan), peak=lr, warmup=warmup)
            inputs = {k: v for k, v in batch.items() if v is not None}
            loss = model(**inputs, loss_only=True, loss_weighting=loss_weighting).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    model.eval()
    return LoopResult(len(plan), seconds, samples, tokens, losses[0], sum(losses[-20:]) / len(losses[-20:]))
