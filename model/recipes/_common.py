"""Small pieces shared by the training recipes (everything else is copied into each recipe).

* distributed init: one CPU process (gloo, no launcher) or the ``deepspeed`` launcher's ranks;
* DeepSpeed config loading: a JSON from ``model/configs/deepspeed/`` with ``"auto"`` values filled
  from the recipe config (as HF's ``HfTrainerDeepSpeedConfig`` does), explicit values checked;
* seeded data order (length-grouped, sharded per rank like ``DistributedSampler``) and the
  exact-resume bookkeeping (:class:`TrainState`, RNG capture/restore, checkpoint save/load through
  ``engine.save_checkpoint(..., client_state=...)``);
* the NaN/Inf guard (:class:`NonFiniteLossError`), the throughput meter, the warmup + cosine
  schedule, the final HF save with ``xmed_provenance.json`` and :class:`TrainResult`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from model.data.io import atomic_dir

__all__ = [
    "CHECKPOINTS_DIR",
    "PROVENANCE_FILE",
    "DistInfo",
    "NonFiniteLossError",
    "RecipeLifecycle",
    "ThroughputMeter",
    "TrainResult",
    "TrainState",
    "barrier",
    "capture_rng_state",
    "check_finite_loss",
    "epoch_batches",
    "find_checkpoint",
    "init_distributed",
    "load_deepspeed_config",
    "load_training_checkpoint",
    "mean_across_ranks",
    "parse_recipe_cli",
    "restore_rng_state",
    "resume_point",
    "run_recipe",
    "save_hf_model",
    "save_training_checkpoint",
    "seed_everything",
    "warmup_cosine",
]

log = logging.getLogger(__name__)

#: Resumable checkpoints live in ``<output_dir>/checkpoints/step_<n>``.
CHECKPOINTS_DIR = "checkpoints"
#: Lineage file written next to the final model.
PROVENANCE_FILE = "xmed_provenance.json"


# ---------------------------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the one that logs and writes shared files)."""
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> DistInfo:
    """Join the process group: the launcher's env vars, or a one-process group on this machine.

    Without ``RANK`` in the environment (no ``deepspeed``/``torchrun`` launcher) this sets
    ``RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=<free port>``. The backend
    is NCCL with CUDA, gloo otherwise. Calling it again in the same process is a no-op.
    """
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return info


def barrier(dist: DistInfo) -> None:
    """Wait for every rank (no-op with one process)."""
    if dist.world_size > 1:
        torch.distributed.barrier()


def mean_across_ranks(value: float, dist: DistInfo) -> float:
    """The mean of ``value`` over all ranks (collective: every rank must call it); itself with one process."""
    if dist.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    torch.distributed.all_reduce(t)
    return float(t.item()) / dist.world_size


# ---------------------------------------------------------------------------------------------
# DeepSpeed config
# ---------------------------------------------------------------------------------------------


def _fill(node: dict, key: str, value: Any, where: str) -> None:
    """Replace an ``"auto"`` entry by ``value``; an explicit entry must equal it."""
    current = node.get(key, "auto")
    if current == "auto":
        node[key] = value
    elif (list(current) if isinstance(current, (list, tuple)) else current) != (
        list(value) if isinstance(value, (list, tuple)) else value
    ):
        raise ValueError(
            f"DeepSpeed config {where}.{key}={current!r} disagrees with the recipe config ({value!r}); "
            f'set it to "auto" in the JSON so the recipe config decides'
        )


def load_deepspeed_config(
    path: str | os.PathLike,
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    lr: float,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
    grad_clip: float,
    bf16: bool,
) -> dict[str, Any]:
    """Read a DeepSpeed JSON and fill its ``"auto"`` values from the recipe config.

    Args:
        path: the JSON (``model/configs/deepspeed/zero2_cpu.json`` or ``zero3_bf16.json``).
        micro_batch_size: ``train_micro_batch_size_per_gpu``.
        grad_accum_steps: ``gradient_accumulation_steps``.
        lr: AdamW learning rate.
        betas: AdamW betas.
        eps: AdamW epsilon.
        weight_decay: AdamW weight decay.
        grad_clip: ``gradient_clipping``.
        bf16: whether the recipe trains in bfloat16 (must match ``bf16.enabled``).

    Returns:
        The config dict for ``deepspeed.initialize(config=...)``.

    Raises:
        FileNotFoundError: no JSON at ``path``.
        ValueError: an explicit JSON value contradicts the recipe config, or ``bf16`` disagrees.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no DeepSpeed config at {p}; see model/configs/deepspeed/")
    cfg = json.loads(p.read_text(encoding="utf-8"))
    _fill(cfg, "train_micro_batch_size_per_gpu", micro_batch_size, p.name)
    _fill(cfg, "gradient_accumulation_steps", grad_accum_steps, p.name)
    _fill(cfg, "gradient_clipping", grad_clip, p.name)
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    params = cfg.setdefault("optimizer", {"type": "AdamW"}).setdefault("params", {})
    for key, value in (("lr", lr), ("betas", list(betas)), ("eps", eps), ("weight_decay", weight_decay)):
        _fill(params, key, value, f"{p.name}:optimizer.params")
    if bool(cfg.get("bf16", {}).get("enabled", False)) != bf16:
        raise ValueError(
            f"{p}: bf16.enabled={cfg.get('bf16', {}).get('enabled', False)} but the recipe's model.dtype is "
            f"{'bfloat16' if bf16 else 'float32'}; use zero3_bf16.json with bfloat16, zero2_cpu.json with float32"
        )
    return cfg


def optimizer_groups(
    model: torch.nn.Module, *, lr: float, head_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: the LLM's output projection at ``lr * head_lr_scale``.

    With ``head_lr_scale == 1`` (or a frozen / absent output projection) there is one group at the
    optimizer's learning rate. The LR schedule multiplies each group's own rate, so the ratio holds
    for the whole run.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    weight = getattr(head, "weight", None)
    if head_lr_scale == 1.0 or weight is None or not weight.requires_grad:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p is not weight]},
        {"params": [weight], "lr": lr * head_lr_scale},
    ]


def zero_stage(ds_config: dict[str, Any]) -> int:
    """The ZeRO stage of a DeepSpeed config (0 when absent)."""
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


# ---------------------------------------------------------------------------------------------
# data order, RNG, schedule
# ---------------------------------------------------------------------------------------------


def epoch_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    group_window: int | None,
    world_size: int = 1,
    rank: int = 0,
) -> list[list[int]]:
    """This rank's micro-batches (lists of example indices) for one epoch; a pure function of its inputs.

    The order is a seeded permutation per ``(seed, epoch)``. With ``group_window``, each window of
    ``group_window * batch_size`` shuffled examples is sorted by length (longest first) and cut into
    batches, and the batches are shuffled again (seeded): batches hold similar lengths, so little
    padding, while the order stays random. Ranks take every ``world_size``-th batch (the list is
    wrapped around so every rank has the same number), as ``DistributedSampler`` shards examples.

    Example:
        >>> epoch_batches([5, 1, 4, 2], batch_size=2, seed=0, epoch=0, group_window=2)
        [[3, 1], [0, 2]]
    """
    if batch_size < 1 or not lengths:
        raise ValueError(f"need batch_size >= 1 and at least one example, got {batch_size}, {len(lengths)}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if group_window:
        span = group_window * batch_size
        grouped: list[int] = []
        for start in range(0, len(order), span):
            window = order[start : start + span]
            grouped += sorted(window, key=lambda i: -lengths[i])
        batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if world_size > 1:
        batches += batches[: (-len(batches)) % world_size]
        batches = batches[rank::world_size]
    return batches


@dataclass
class TrainState:
    """Where a run is: everything beyond the engine's weights/optimizer needed to resume exactly.

    Attributes:
        step: optimizer steps done.
        micro_step: micro-batches done (all epochs).
        epoch: current epoch.
        batch_in_epoch: micro-batches of this rank consumed in the current epoch.
        samples: examples seen by this rank.
        tokens: non-padding tokens seen by this rank.
    """

    step: int = 0
    micro_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        """Plain dict for ``client_state``."""
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup ``(step+1)/warmup`` then cosine from 1 to ``min_ratio`` at ``total_steps``.

    Example:
        >>> [round(warmup_cosine(s, warmup_steps=2, total_steps=6, min_ratio=0.0), 3) for s in range(6)]
        [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# NaN guard, throughput
# ---------------------------------------------------------------------------------------------


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/Inf; the run stops before the backward pass, so nothing broken is saved.

    Attributes:
        stage: the recipe.
        step: the optimizer step being computed (1-based).
        batch_ids: record ids of the micro-batch.
    """

    def __init__(self, stage: str, step: int, batch_ids: Sequence[str], value: float) -> None:
        self.stage, self.step, self.batch_ids = stage, step, list(batch_ids)
        where = (
            f"loss is {value} at step {step} on batch ids {self.batch_ids}"
            if not math.isfinite(value)
            else f"another rank's loss is not finite at step {step} (this rank's batch {self.batch_ids}: {value})"
        )
        super().__init__(
            f"{stage}: {where}; the run stopped without saving a checkpoint. "
            "Check those records, lower optim.lr or raise optim.grad_clip"
        )


def check_finite_loss(
    loss: torch.Tensor, *, stage: str, step: int, batch_ids: Sequence[str], dist: DistInfo | None = None
) -> float:
    """Return ``loss`` as a float, or raise :class:`NonFiniteLossError` naming the step and batch ids.

    With several ranks the verdict is shared (one all-reduce), so every rank stops together instead
    of the healthy ones waiting forever in the next collective; each names its own batch.
    """
    value = float(loss.detach())
    bad = not math.isfinite(value)
    if dist is not None and dist.world_size > 1:
        flag = torch.tensor([float(bad)], device=loss.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = bool(flag.item() > 0)
    if bad:
        raise NonFiniteLossError(stage, step, batch_ids, value)
    return value


class ThroughputMeter:
    """Samples/s and tokens/s over the window since the last :meth:`window` call, and overall."""

    def __init__(self) -> None:
        self.start = self._mark = time.perf_counter()
        self.samples = self.tokens = 0
        self._win_samples = self._win_tokens = 0

    def update(self, samples: int, tokens: int) -> None:
        """Count one micro-batch."""
        self.samples += samples
        self.tokens += tokens
        self._win_samples += samples
        self._win_tokens += tokens

    def window(self) -> dict[str, float]:
        """Rates since the previous call (then start a new window)."""
        now = time.perf_counter()
        dt = max(now - self._mark, 1e-9)
        out = {"samples_per_s": self._win_samples / dt, "tokens_per_s": self._win_tokens / dt}
        self._mark, self._win_samples, self._win_tokens = now, 0, 0
        return out

    def overall(self) -> dict[str, float]:
        """Rates since construction, and the elapsed seconds."""
        dt = max(time.perf_counter() - self.start, 1e-9)
        return {"samples_per_s": self.samples / dt, "tokens_per_s": self.tokens / dt, "wall_s": dt}


# ---------------------------------------------------------------------------------------------
# resumable checkpoints
# ---------------------------------------------------------------------------------------------


def _step_dirs(ckpt_root: Path) -> list[Path]:
    dirs = [p for p in ckpt_root.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def save_training_checkpoint(
    engine, output_dir: str | os.PathLike, state: TrainState, *, dist: DistInfo, resume_key: dict, keep: int
) -> Path:
    """``engine.save_checkpoint`` into ``<output_dir>/checkpoints/step_<n>`` with the resume state.

    ``client_state`` carries the :class:`TrainState`, rank 0's RNG states and ``resume_key`` (the
    settings a resumed run must share: batch sizes, seed, world size). Other ranks write their RNG
    states to ``rng_state_rank<r>.pt`` in the same folder. Only the newest ``keep`` checkpoints stay.
    """
    root = Path(output_dir) / CHECKPOINTS_DIR
    tag = f"step_{state.step}"
    client = {"xmed_state": state.to_dict(), "xmed_rng": capture_rng_state(), "xmed_resume_key": resume_key}
    engine.save_checkpoint(str(root), tag=tag, client_state=client)
    if dist.rank > 0:
        torch.save(capture_rng_state(), root / tag / f"rng_state_rank{dist.rank}.pt")
    barrier(dist)
    if dist.is_main:
        for old in _step_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return root / tag


def find_checkpoint(output_dir: str | os.PathLike, resume_from: str | None) -> Path | None:
    """The checkpoint folder to resume from: ``latest`` (DeepSpeed's ``latest`` file), a path, or None.

    Raises:
        FileNotFoundError: ``resume_from`` names a folder that does not exist.
    """
    if resume_from is None:
        return None
    if resume_from != "latest":
        path = Path(resume_from)
        if not path.is_dir():
            raise FileNotFoundError(
                f"train.resume_from={resume_from!r}: no checkpoint folder there; use 'latest' or a "
                f"<output_dir>/{CHECKPOINTS_DIR}/step_N folder"
            )
        return path
    root = Path(output_dir) / CHECKPOINTS_DIR
    latest = root / "latest"
    if latest.is_file():
        path = root / latest.read_text(encoding="utf-8").strip()
        if path.is_dir():
            return path
    return None


def resume_point(output_dir: str | os.PathLike, resume_from: str | None, *, dist: DistInfo) -> Path | None:
    """The checkpoint to resume from (:func:`find_checkpoint`); on a fresh start, stale ones are removed.

    A run that does not resume must not share ``<output_dir>/checkpoints`` with an earlier run's
    ``step_N`` folders: the newest-``keep`` retention would delete this run's own checkpoints in
    their favour and a later ``resume_from: latest`` could land in the other run. So when nothing
    is resumed, the main process removes the ``step_N`` folders and the ``latest`` pointer there
    (their run's final model is in its ``model`` folder and MLflow run) and logs what it removed.

    Raises:
        FileNotFoundError: as :func:`find_checkpoint`.
    """
    ckpt = find_checkpoint(output_dir, resume_from)
    if ckpt is None and dist.is_main:
        root = Path(output_dir) / CHECKPOINTS_DIR
        stale = _step_dirs(root)
        for old in stale:
            shutil.rmtree(old)
        (root / "latest").unlink(missing_ok=True)
        if stale:
            log.warning(
                "%s: fresh start; removed %d checkpoint(s) of an earlier run (%s)",
                root,
                len(stale),
                ", ".join(p.name for p in stale),
            )
    barrier(dist)
    return ckpt


def load_training_checkpoint(engine, ckpt: Path, *, dist: DistInfo, resume_key: dict) -> TrainState:
    """Restore weights, optimizer, LR schedule (DeepSpeed) and the data position + RNG states.

    Raises:
        RuntimeError: DeepSpeed could not load the folder.
        ValueError: the checkpoint was written with other batch sizes / seed / world size, so the
            data position would not mean the same batches.
    """
    loaded, client = engine.load_checkpoint(str(ckpt.parent), tag=ckpt.name)
    if loaded is None or client is None or "xmed_state" not in client:
        raise RuntimeError(f"could not load the training checkpoint {ckpt} (DeepSpeed returned nothing)")
    saved_key = client.get("xmed_resume_key", {})
    if saved_key != resume_key:
        raise ValueError(
            f"{ckpt} was written with {saved_key} but this run has {resume_key}; resuming would not "
            "replay the same batches. Restore those settings or set train.resume_from=null"
        )
    rng = (
        client["xmed_rng"]
        if dist.rank == 0
        else torch.load(ckpt / f"rng_state_rank{dist.rank}.pt", weights_only=False)
    )
    restore_rng_state(rng)
    return TrainState(**client["xmed_state"])


# ---------------------------------------------------------------------------------------------
# final model
# ---------------------------------------------------------------------------------------------


def save_hf_model(
    engine,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    dist: DistInfo,
    provenance: dict[str, Any],
    merge_lora: bool = False,
) -> Path:
    """Write the final HF model: ``save_pretrained(safe_serialization=True)`` + tokenizer + provenance.

    Rank 0 writes (atomically: a crash leaves the previous ``model/`` or none); under ZeRO-3 every
    rank joins the gather of the 16-bit weights first. With ``merge_lora`` the adapters are merged
    into the base weights so the folder loads with plain ``from_pretrained``.

    Args:
        engine: the DeepSpeed engine (its ``module`` is the HF model).
        tokenizer: saved next to the weights (the processor is rebuilt from config + tokenizer).
        out_dir: ``<output_dir>/model``.
        dist: this process's rank.
        provenance: written as ``xmed_provenance.json``.
        merge_lora: the module is a peft model whose adapters must be merged.
    """
    module = engine.module
    state_dict = None
    if engine.zero_optimization_stage() == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # collective: all ranks call it
    if dist.is_main:
        if merge_lora:
            module = module.merge_and_unload()
        with atomic_dir(out_dir) as tmp:
            module.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            record = {**provenance, "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    barrier(dist)
    return Path(out_dir)


@dataclass
class TrainResult:
    """What a recipe run returns to its caller (the Dagster asset records it).

    Attributes:
        stage: recipe name.
        output_dir: the run folder.
        model_dir: ``<output_dir>/model`` once saved (None before).
        steps: optimizer steps done in total (including steps before a resume).
        final_loss: mean loss of the last logging window.
        samples_per_s: examples per second over this process's run (this rank).
        tokens_per_s: non-padding tokens per second (this rank).
        wall_s: seconds spent in ``train()``.
        num_examples: training examples (rows, pairs or spoken queries) per epoch.
        resumed_from: the checkpoint folder resumed from, if any.
        metrics: the last logged metrics.
    """

    stage: str
    output_dir: str
    model_dir: str | None
    steps: int
    final_loss: float
    samples_per_s: float
    tokens_per_s: float
    wall_s: float
    num_examples: int
    resumed_from: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# entry points shared by the recipes
# ---------------------------------------------------------------------------------------------


class RecipeLifecycle(Protocol):
    """``setup -> train -> save_checkpoint -> cleanup`` (see :class:`model.recipes.Recipe`)."""

    def setup(self) -> None: ...

    def train(self) -> TrainResult: ...

    def save_checkpoint(self) -> Path: ...

    def cleanup(self) -> None: ...


def run_recipe(recipe: RecipeLifecycle) -> TrainResult:
    """Set up, train, save, clean up (always): the result with ``model_dir`` set."""
    try:
        recipe.setup()
        result = recipe.train()
        return replace(result, model_dir=str(recipe.save_checkpoint()))
    finally:
        recipe.cleanup()


def parse_recipe_cli(description: str, argv: list[str] | None) -> argparse.Namespace:
    """``--config <yaml|profile> [--set key=value ...]``; the deepspeed launcher's extra args are ignored."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", required=True, help="recipe YAML or profile name (ci, demo, prod)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    args, _ = ap.parse_known_args(argv)  # the deepspeed launcher appends --local_rank
    return args
