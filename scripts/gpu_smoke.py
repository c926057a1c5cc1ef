"""GPU smoke test of the training path: DeepSpeed ZeRO-3, bf16, a larger random-initialised XMed VLM.

It builds an ``xmed_vlm`` of about 200M parameters (LLM width 1024, 8 layers, vocabulary 32000;
vision tower width 256 on 256x256 images -> a 16x16 grid = 256 vision tokens; sequences of 512
tokens), wraps it in a single-process DeepSpeed engine (ZeRO stage 3, bf16, NCCL), runs a few warm-up
steps and then N timed optimizer steps on random token/pixel batches, and prints the step time
(mean, p50), tokens/s, samples/s and the peak GPU memory (``torch.cuda.max_memory_allocated``).
It takes well under a few minutes on one H100 and exits with status 2 and a clear message when
CUDA is not available.

``--cpu-dry-run`` runs the same code path for 2 steps of a very small model on CPU (ZeRO-2, fp32,
gloo) so it is tested without a GPU (``tests/unit/model/test_gpu_smoke_dry.py``).

Usage::

    python scripts/gpu_smoke.py                    # one GPU: ZeRO-3 bf16, 3 warm-up + 20 timed steps
    python scripts/gpu_smoke.py --steps 50 --batch-size 16 --json-out runs/gpu_smoke.json
    deepspeed --num_gpus 1 scripts/gpu_smoke.py    # same, through the launcher
    python scripts/gpu_smoke.py --cpu-dry-run      # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

# ---------------------------------------------------------------------------------------------
# model sizes and token ids (random tokens: no tokenizer needed)
# ---------------------------------------------------------------------------------------------

PAD_ID, EOS_ID, BOS_ID, IMAGE_ID = 0, 1, 2, 3
FIRST_TEXT_ID = 4

#: ~200M parameters: 256 vision tokens (256 px, 16x16 grid) + text in 512-token sequences.
GPU_ARCH: dict[str, Any] = {
    "vocab_size": 32000,
    "image_size": 256,
    "grid": 16,
    "vision_hidden": 256,
    "vision_layers": 4,
    "text_hidden": 1024,
    "text_layers": 8,
    "heads": 16,
    "intermediate": 4096,
    "max_positions": 1024,
    "projector_hidden": 1024,
}
#: A few hundred thousand parameters for the CPU dry run.
DRY_ARCH: dict[str, Any] = {
    "vocab_size": 256,
    "image_size": 32,
    "grid": 4,
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 64,
    "text_layers": 2,
    "heads": 2,
    "intermediate": 128,
    "max_positions": 128,
}


def deepspeed_config(*, stage: int, bf16: bool, micro_batch: int, lr: float) -> dict[str, Any]:
    """A single-GPU DeepSpeed config: AdamW (torch implementation: no JIT-built op), ZeRO ``stage``."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": stage > 0, "contiguous_gradients": stage > 0}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0, "torch_adam": True}},
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


# ---------------------------------------------------------------------------------------------
# data: random tokens with one image per row
# ---------------------------------------------------------------------------------------------


def random_batch(
    *,
    batch_size: int,
    seq_len: int,
    n_image_tokens: int,
    image_size: int,
    vocab_size: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """``<image>`` x ``n_image_tokens`` then random text per row; labels on the text only.

    Raises:
        ValueError: ``seq_len`` leaves no room for text after the image tokens.
    """
    n_text = seq_len - n_image_tokens
    if n_text < 2:
        raise ValueError(f"seq_len={seq_len} must exceed the {n_image_tokens} image tokens by at least 2")
    text = torch.randint(FIRST_TEXT_ID, vocab_size, (batch_size, n_text), generator=generator)
    input_ids = torch.cat([torch.full((batch_size, n_image_tokens), IMAGE_ID), text], dim=1)
    labels = input_ids.clone()
    labels[:, :n_image_tokens] = -100
    pixels = torch.rand(batch_size, 3, image_size, image_size, generator=generator) * 2 - 1
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": pixels,
    }


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_single_process(backend: str) -> None:
    """Single-process distributed env (kept when a launcher already set it), then init DeepSpeed."""
    import deepspeed

    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    deepspeed.init_distributed(dist_backend=backend)


def summarize(step_times: list[float], *, tokens_per_step: int, samples_per_step: int) -> dict[str, float]:
    """Mean / p50 step time (s) and throughput (tokens/s, samples/s at the mean step time)."""
    mean = statistics.fmean(step_times)
    return {
        "step_time_mean_s": mean,
        "step_time_p50_s": statistics.median(step_times),
        "tokens_per_s": tokens_per_step / mean,
        "samples_per_s": samples_per_step / mean,
    }


def run(
    *,
    arch: dict[str, Any],
    zero_stage: int,
    bf16: bool,
    backend: str,
    device: torch.device,
    batch_size: int,
    seq_len: int,
    warmup: int,
    steps: int,
    lr: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the model, wrap it in DeepSpeed, train ``warmup + steps`` steps; return the metrics.

    Raises:
        FloatingPointError: a non-finite loss.
    """
    import deepspeed

    from model.vlm.modeling import build_tiny_vlm  # imported here: the no-CUDA exit stays fast

    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL init, so the process group binds this GPU
        torch.cuda.reset_peak_memory_stats(device)
    init_single_process(backend)
    model = build_tiny_vlm(
        **arch,
        image_token_id=IMAGE_ID,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        seed=seed,
    )
    n_params = sum(p.numel() for p in model.parameters())
    config = deepspeed_config(stage=zero_stage, bf16=bf16, micro_batch=batch_size, lr=lr)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    dtype = torch.bfloat16 if bf16 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    n_image_tokens = arch["grid"] ** 2
    step_times, losses = [], []
    for step in range(warmup + steps):
        batch = random_batch(
            batch_size=batch_size,
            seq_len=seq_len,
            n_image_tokens=n_image_tokens,
            image_size=arch["image_size"],
            vocab_size=arch["vocab_size"],
            generator=gen,
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        _sync(device)
        start = time.perf_counter()
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        _sync(device)
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}")
        losses.append(loss.item())
        if step >= warmup:
            step_times.append(time.perf_counter() - start)
    metrics = summarize(step_times, tokens_per_step=batch_size * seq_len, samples_per_step=batch_size)
    metrics.update(
        parameters=n_params,
        zero_stage=zero_stage,
        dtype=str(dtype).removeprefix("torch."),
        batch_size=batch_size,
        seq_len=seq_len,
        vision_tokens=n_image_tokens,
        timed_steps=steps,
        first_loss=losses[0],
        last_loss=losses[-1],
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        peak_gpu_memory_gib=(torch.cuda.max_memory_allocated(device) / 2**30)
        if device.type == "cuda"
        else None,
    )
    engine.destroy()
    return metrics


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(metrics: dict[str, Any]) -> str:
    """The human-readable summary printed at the end."""
    peak = metrics["peak_gpu_memory_gib"]
    return (
        f"gpu_smoke: {metrics['parameters'] / 1e6:.1f}M params, ZeRO-{metrics['zero_stage']} {metrics['dtype']} "
        f"on {metrics['device']}, batch {metrics['batch_size']} x {metrics['seq_len']} tokens "
        f"({metrics['vision_tokens']} vision), {metrics['timed_steps']} timed steps\n"
        f"  step time mean {metrics['step_time_mean_s'] * 1e3:.1f} ms, p50 {metrics['step_time_p50_s'] * 1e3:.1f} ms\n"
        f"  tokens/s {metrics['tokens_per_s']:.0f}, samples/s {metrics['samples_per_s']:.1f}\n"
        f"  peak GPU memory {'n/a (CPU)' if peak is None else f'{peak:.2f} GiB'}\n"
        f"  loss {metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}"
    )


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run on GPU (or the CPU dry run), print the summary; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cpu-dry-run", action="store_true", help="2 steps of a tiny model on CPU (ZeRO-2, fp32, gloo)"
    )
    ap.add_argument("--steps", type=int, default=20, help="timed steps (GPU)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (GPU)")
    ap.add_argument("--batch-size", type=int, default=8, help="micro-batch size (GPU)")
    ap.add_argument("--seq-len", type=int, default=512, help="tokens per row incl. 256 vision tokens (GPU)")
    ap.add_argument(
        "--zero-stage", type=int, default=None, help="override the ZeRO stage (3 on GPU, 2 dry run)"
    )
    ap.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the metrics as JSON here")
    args = ap.parse_args(argv)
    if args.cpu_dry_run:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # also on a GPU host
        stage = 2 if args.zero_stage is None else args.zero_stage
        device, arch, backend, bf16 = torch.device("cpu"), DRY_ARCH, "gloo", False
        batch_size, seq_len, warmup, steps = 2, 32, 0, 2
    else:
        if not torch.cuda.is_available():
            print(
                "gpu_smoke: CUDA is not available (torch.cuda.is_available() is False; torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU host with the CUDA "
                "build of torch, or use --cpu-dry-run to check the code path on CPU.",
                file=sys.stderr,
            )
            return 2
        local_rank = int(os.environ.get("LOCAL_RANK", args.local_rank or 0))
        stage = 3 if args.zero_stage is None else args.zero_stage
        device, arch, backend, bf16 = torch.device("cuda", local_rank), GPU_ARCH, "nccl", True
        batch_size, seq_len, warmup, steps = args.batch_size, args.seq_len, args.warmup, args.steps
    metrics = run(
        arch=arch,
        zero_stage=stage,
        bf16=bf16,
        backend=backend,
        device=device,
        batch_size=batch_size,
        seq_len=seq_len,
        warmup=warmup,
        steps=steps,
    )
    print(report(metrics), flush=True)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
