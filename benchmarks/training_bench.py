"""Training and sampling cost of the demo model (a benchmark, not a test).

Three measurements, each as a ratio taken inside one run so machine noise cancels out:

1. ``stages``: throughput of each training recipe (samples/s, tokens/s, s/step) on the demo
   profile, ``--stage-steps`` optimizer steps from the demo base model, into a scratch folder.
2. ``deepspeed``: the DeepSpeed engine (ZeRO-2, one CPU rank, gloo) against a plain PyTorch loop
   (:mod:`benchmarks._loop`) on the same model, the same batches and the same optimizer;
   alternating blocks, ratio of the median seconds per step.
3. ``sampling``: ``M = 10`` answers to one prompt in ONE batched ``generate`` call
   (:func:`model.generation.sample_answers`) against 10 single-answer calls, over several
   prompts; ratio of the medians.

Run: ``python benchmarks/training_bench.py [--parts stages deepspeed sampling]`` after the demo
data exist (``make run``) and the demo base model has been built (the training job, or
``python -m model.base``). Writes ``benchmarks/out/training_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._loop import batch_plan, train_plain
from model.data.io import iter_parquet_rows

BASE = Path("runs/demo/base_model/model")
STAGES = ("sft", "reasoning_sft", "dpo", "audio")


def bench_stages(steps: int) -> list[dict]:
    """Run every recipe for ``steps`` steps from the demo base model; their TrainResult throughput."""
    from model.recipes import load_recipe_config, run_audio, run_dpo, run_reasoning_sft, run_sft

    runners = {"sft": run_sft, "reasoning_sft": run_reasoning_sft, "dpo": run_dpo, "audio": run_audio}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in STAGES:
            overrides = [
                f"output_dir={tmp}/{stage}",
                f"model.checkpoint_dir={BASE}",
                f"train.max_steps={steps}",
                f"train.save_every={steps}",
                "train.progress_bar=false",
            ]
            if stage == "dpo":
                overrides += ["data.max_prompts=2", "sampling.num_samples=4", "sampling.max_new_tokens=200"]
            cfg = load_recipe_config(stage, "demo", overrides)
            t0 = time.perf_counter()
            res = runners[stage](cfg)
            out.append(
                {
                    "stage": stage,
                    "steps": res.steps,
                    "samples_per_s": round(res.samples_per_s, 2),
                    "tokens_per_s": round(res.tokens_per_s, 1),
                    "train_s": round(res.wall_s, 1),
                    "total_s": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


def _demo_model_and_rows():
    from model.pretrained import load_pretrained_vlm
    from model.vlm import XMedProcessor

    model, tok = load_pretrained_vlm(BASE, dtype="float32")
    proc = XMedProcessor.for_model(tok, model.config)
    rows = [r for r in iter_parquet_rows("data/demo/curated/shards") if r["split"] == "train"][:4000]
    return model, tok, proc, rows


def _deepspeed_engine(model):
    import deepspeed

    from model.recipes._common import init_distributed, load_deepspeed_config

    init_distributed()
    cfg = load_deepspeed_config(
        "model/configs/deepspeed/zero2_cpu.json",
        micro_batch_size=16,
        grad_accum_steps=1,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.01,
        grad_clip=1.0,
        bf16=False,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=cfg)
    return engine


def bench_deepspeed(steps: int, blocks: int) -> dict:
    """Median s/step of the DeepSpeed engine vs the plain loop, alternating blocks of ``steps``."""
    model_a, tok, proc, rows = _demo_model_and_rows()
    model_b, *_ = _demo_model_and_rows()
    engine = _deepspeed_engine(model_b)

    def ds_step(batch):
        batch = {k: v for k, v in batch.items() if v is not None}
        loss = engine(**batch, loss_only=True).loss
        engine.backward(loss)
        engine.step()
        return loss.detach()

    encode = lambda i: proc.encode_example(rows[i], "data/demo")
    plain, ds = [], []
    for b in range(blocks):
        plan = batch_plan(len(rows), steps=steps, batch_size=16, seed=b)
        plain.append(train_plain(model_a, encode, plan, pad_id=tok.pad_token_id).seconds / steps)
        engine.train()
        ds.append(
            train_plain(model_b, encode, plan, pad_id=tok.pad_token_id, step_fn=ds_step).seconds / steps
        )
        print(f"block {b}: plain {plain[-1]:.3f} s/step, deepspeed {ds[-1]:.3f} s/step", flush=True)
    p, d = statistics.median(plain), statistics.median(ds)
    return {
        "steps_per_block": steps,
        "blocks": blocks,
        "plain_s_per_step": round(p, 4),
        "deepspeed_s_per_step": round(d, 4),
        "ratio_deepspeed_over_plain": round(d / p, 3),
    }


@torch.no_grad()
def bench_sampling(prompts: int, m: int) -> dict:
    """Seconds for ``m`` samples in one batched call vs ``m`` single-sample calls, per prompt."""
    from model.generation import sample_answers

    model, _, proc, rows = _demo_model_and_rows()
    rows = [r for r in rows if r["task"] == "vqa_open"][:prompts]
    batched, separate = [], []
    for k, r in enumerate(rows):
        images = [Path("data/demo") / p for p in r["images"]]
        prompt = r["conversations"][0]["value"]
        kw = {"images": images, "prompt": prompt, "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 24}
        t0 = time.perf_counter()
        sample_answers(model, proc, num_samples=m, seed=k, **kw)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for j in range(m):
            sample_answers(model, proc, num_samples=1, seed=k * m + j, **kw)
        separate.append(time.perf_counter() - t0)
    b, s = statistics.median(batched), statistics.median(separate)
    return {
        "M": m,
        "prompts": len(rows),
        "batched_s": round(b, 4),
        "separate_s": round(s, 4),
        "ratio_separate_over_batched": round(s / b, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", default=["stages", "deepspeed", "sampling"])
    ap.add_argument("--stage-steps", type=int, default=20)
    ap.add_argument("--ds-steps", type=int, default=30)
    ap.add_argument("--ds-blocks", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out/training_bench.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    result: dict = {"threads": args.threads}
    if "stages" in args.parts:
        result["stages"] = bench_stages(args.stage_steps)
    if "deepspeed" in args.parts:
        result["deepspeed"] = bench_deepspeed(args.ds_steps, args.ds_blocks)
        print(json.dumps(result["deepspeed"]))
    if "sampling" in args.parts:
        result["sampling"] = bench_sampling(args.prompts, 10)
        print(json.dumps(result["sampling"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
