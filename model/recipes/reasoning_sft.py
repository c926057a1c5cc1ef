"""Stage 2 recipe: SFT on the paper's 5-step clinical reasoning, starting from the SFT checkpoint.

The data is the reasoning dataset built by :func:`model.reasoning.build_reasoning_dataset` from the
image manifest (``train`` split): INSTRUCTION_SCHEMA rows of task ``report`` whose gpt answer is the
5-step reasoning (the report is step 5) and whose ``target`` holds the reference report. It is
written to ``<output_dir>/reasoning_train.parquet`` (and logged as an artifact).

Training is exactly the SFT loop, so this recipe COMPOSES :class:`model.recipes.sft.SFTRecipe`
(one loop to keep correct, not two copies) with a different dataset, starting point and stage name:

1. ``setup``: build the dataset (rank 0; kept as is when resuming so the batches replay exactly),
   then an :class:`~model.recipes.config.SFTConfig` pointing at it and the parent checkpoint;
2. ``train`` / ``save_checkpoint`` / ``cleanup``: the SFT recipe's, under the stage name
   ``reasoning_sft`` (metrics ``reasoning_sft/loss``..., provenance ``stage: reasoning_sft``).

With ``distill.weight > 0`` the replayed rows also learn the SFT model's answer distribution (a
frozen copy of it is the teacher; Learning without Forgetting, :mod:`model.recipes.distill`); the
reasoning rows learn from their targets only.

CLI: ``python -m model.recipes.reasoning_sft --config model/configs/recipes/reasoning_sft/demo.yaml``
"""

from __future__ import annotations

import functools
import heapq
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.data.io import atomic_file, iter_parquet_rows
from model.data.schema import INSTRUCTION_SCHEMA
from model.recipes._common import (
    TrainResult,
    barrier,
    find_checkpoint,
    init_distributed,
    parse_recipe_cli,
    run_recipe,
)
from model.recipes.config import (
    ReasoningSFTConfig,
    SFTConfig,
    SFTDataSettings,
    SFTDistillSettings,
    SFTModelInit,
    load_recipe_config,
)
from model.recipes.metric_logging import MetricLogger, StdoutLogger
from model.recipes.sft import TRAIN_SPLIT, SFTRecipe

__all__ = [
    "DATASET_FILE",
    "MIX_FILE",
    "DatasetBuilder",
    "ReasoningSFTRecipe",
    "dataset_summary_params",
    "main",
    "reasoning_dataset",
    "run_reasoning_sft",
    "with_replay",
]

#: The reasoning dataset inside the run folder.
DATASET_FILE = "reasoning_train.parquet"
#: the reasoning rows + the replayed stage-1 rows (when ``data.replay_rows`` > 0)
MIX_FILE = "reasoning_train_mix.parquet"


class DatasetBuilder(Protocol):
    """The signature of :func:`model.reasoning.build_reasoning_dataset`."""

    def __call__(
        self,
        manifest_dir: str | os.PathLike,
        *,
        out_path: str | os.PathLike,
        data_root: str | os.PathLike,
        split: str,
    ) -> Any:
        """Write the reasoning rows of ``split`` to ``out_path`` (Parquet); return a summary mapping."""
        ...


def default_dataset_builder(style: str = "full") -> DatasetBuilder:
    """:func:`model.reasoning.build_reasoning_dataset` with the deterministic writer, imported lazily.

    Args:
        style: the writer's answer style (``full`` or ``concise``).

    Raises:
        ImportError: ``model/reasoning.py`` is not there yet.
    """
    try:
        from model.reasoning import DeterministicReasoningWriter, build_reasoning_dataset
    except ImportError as e:
        raise ImportError(
            "reasoning recipes need model.reasoning.build_reasoning_dataset (model/reasoning.py); "
            "pass build_dataset=... to use another builder"
        ) from e
    return functools.partial(build_reasoning_dataset, writer=DeterministicReasoningWriter(style))


def reasoning_dataset(
    *,
    manifest_dir: str,
    data_root: str,
    output_dir: Path,
    resume_from: str | None,
    build: DatasetBuilder,
    is_main: bool,
) -> tuple[Path, dict[str, Any]]:
    """Build ``<output_dir>/reasoning_train.parquet`` on the main rank, unless a resumed run has it.

    A run that resumes from a checkpoint reuses the file it trained on, so the batches replay
    exactly; a fresh run rebuilds it.

    Returns:
        The Parquet path and the builder's summary (``{}`` when reused or on other ranks).

    Raises:
        FileNotFoundError: the builder returned without writing ``out_path``.
    """
    path = output_dir / DATASET_FILE
    resuming = find_checkpoint(output_dir, resume_from) is not None
    summary: dict[str, Any] = {}
    if is_main and not (resuming and path.is_file()):
        output_dir.mkdir(parents=True, exist_ok=True)
        out = build(manifest_dir, out_path=path, data_root=data_root, split=TRAIN_SPLIT)
        summary = dict(out) if isinstance(out, Mapping) else {}
        if not path.is_file():
            raise FileNotFoundError(f"the reasoning dataset builder returned but wrote nothing at {path}")
    return path, summary


def with_replay(
    dataset: Path,
    *,
    replay_shards: str,
    rows: int,
    seed: int,
    out_path: Path,
    is_main: bool,
    task_weights: Mapping[str, float] | None = None,
) -> tuple[Path, int]:
    """``dataset`` + ``rows`` train rows sampled (seeded) from ``replay_shards``, as one file.

    Replaying the stage-1 instruction mix while learning the long reasoning answers keeps the
    short-answer skills (modality, VQA, grounding, refusals) from being overwritten. The sample is
    a seeded weighted reservoir over the train rows (Efraimidis-Spirakis: each row draws
    ``u ** (1 / w)`` with ``w`` its task's weight, the ``rows`` largest keys are kept), so rare
    skills can be replayed more than their share of the shards, and the file is the same on every
    run and on resume. Without ``task_weights`` every row weighs 1 (a uniform sample).

    Args:
        task_weights: per-task replay weight; unlisted tasks 1.0, 0 never replayed.

    Returns:
        The mixed file and the number of replayed rows (fewer than ``rows`` when the shards hold
        fewer; ``rows`` on the other ranks).

    Raises:
        ValueError: ``replay_shards`` holds no train row of a task with a positive weight.
    """
    weights = dict(task_weights or {})
    replayed = rows
    if is_main:
        rng = np.random.default_rng(seed)
        heap: list[tuple[float, int, dict[str, Any]]] = []  # min-heap of (key, position, row)
        for pos, row in enumerate(r for r in iter_parquet_rows(replay_shards) if r["split"] == TRAIN_SPLIT):
            u = float(rng.random())  # one draw per row whatever its weight: the sample is stable
            w = weights.get(row["task"], 1.0)
            if w <= 0:
                continue
            key = math.log(u) / w if u > 0 else -math.inf  # log(u ** (1 / w)): same order, no underflow
            if len(heap) < rows:
                heapq.heappush(heap, (key, pos, row))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, pos, row))
        if not heap:
            raise ValueError(f"{replay_shards}: no '{TRAIN_SPLIT}' row to replay (task weights {weights})")
        kept = [row for _, _, row in sorted(heap, key=lambda t: t[1])]  # shard order
        replayed = len(kept)
        table = pa.concat_tables(
            [pq.read_table(dataset), pa.Table.from_pylist(kept, schema=INSTRUCTION_SCHEMA)]
        )
        with atomic_file(out_path, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
    return out_path, replayed


def dataset_summary_params(stage: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset builder's scalar summary fields (rows, sha256, ...) as ``<stage>.dataset.*`` params."""
    keep = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool))}
    return {f"{stage}.dataset.{k}": v for k, v in keep.items()}


class ReasoningSFTRecipe:
    """Stage 2: build the 5-step reasoning dataset, then run the SFT recipe on it.

    Args:
        cfg: the validated :class:`~model.recipes.config.ReasoningSFTConfig`.
        logger: metrics backend (default :class:`StdoutLogger`).
        build_dataset: the dataset builder (default ``model.reasoning.build_reasoning_dataset``).

    Raises:
        TypeError: ``cfg`` is not a ``ReasoningSFTConfig``.
    """

    def __init__(
        self,
        cfg: ReasoningSFTConfig,
        logger: MetricLogger | None = None,
        *,
        build_dataset: DatasetBuilder | None = None,
    ) -> None:
        if not isinstance(cfg, ReasoningSFTConfig):
            raise TypeError(f"ReasoningSFTRecipe needs a ReasoningSFTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.logger = logger or StdoutLogger()
        self.build_dataset = build_dataset
        self.sft: SFTRecipe | None = None
        self.reasoning_rows_path: Path | None = None  # set by setup()

    def setup(self) -> None:
        """Build the dataset (main rank), then set up the SFT recipe on it from the parent checkpoint."""
        cfg = self.cfg
        cfg.check_paths()
        dist = init_distributed()
        self.dataset_path, summary = reasoning_dataset(
            manifest_dir=cfg.data.manifest_dir,
            data_root=cfg.data.data_root,
            output_dir=Path(cfg.output_dir),
            resume_from=cfg.train.resume_from,
            build=self.build_dataset or default_dataset_builder(cfg.data.answer_style),
            is_main=dist.is_main,
        )
        barrier(dist)
        self.reasoning_rows_path = self.dataset_path
        if dist.is_main:
            self.logger.log_artifact(self.dataset_path)
            self.logger.log_params(dataset_summary_params(cfg.stage, summary))
        if cfg.data.replay_rows:
            self.dataset_path, n = with_replay(
                self.dataset_path,
                replay_shards=cfg.data.replay_shards,
                rows=cfg.data.replay_rows,
                seed=cfg.train.seed,
                out_path=Path(cfg.output_dir) / MIX_FILE,
                is_main=dist.is_main,
                task_weights=cfg.data.replay_task_weights,
            )
            barrier(dist)
            if dist.is_main:
                self.logger.log_params({f"{cfg.stage}.dataset.replay_rows": n})
        self.sft = SFTRecipe(self.sft_config(), self.logger, stage=cfg.stage)
        self.sft.setup()

    def sft_config(self) -> SFTConfig:
        """The SFT config this stage runs: the reasoning dataset, the parent checkpoint, same loop settings."""
        cfg = self.cfg
        own_rows = self.reasoning_rows_path
        if cfg.distill.enabled and own_rows is None:
            raise RuntimeError("reasoning SFT with distillation: setup() builds the reasoning rows first")
        return SFTConfig(
            output_dir=cfg.output_dir,
            model=SFTModelInit(
                checkpoint_dir=cfg.model.checkpoint_dir,
                dtype=cfg.model.dtype,
                trust_remote_code=cfg.model.trust_remote_code,
            ),
            data=SFTDataSettings(
                shards=str(self.dataset_path),
                data_root=cfg.data.data_root,
                max_length=cfg.data.max_length,
                **cfg.data.evidence_options(),
            ),
            train=cfg.train,
            optim=cfg.optim,
            freeze=cfg.freeze,
            lora=cfg.lora,
            distill=SFTDistillSettings(
                weight=cfg.distill.weight,
                temperature=cfg.distill.temperature,
                teacher_dir=None,  # the SFT model this stage starts from
                target_only_rows=None if own_rows is None else str(own_rows),
            ),
            provenance=cfg.provenance,
        )

    def train(self) -> TrainResult:
        """The SFT loop on the reasoning rows (see :meth:`SFTRecipe.train`)."""
        return self.sft.train()

    def save_checkpoint(self) -> Path:
        """Save ``<output_dir>/model`` with provenance ``stage: reasoning_sft``."""
        return self.sft.save_checkpoint()

    def cleanup(self) -> None:
        """Free the engine."""
        if self.sft is not None:
            self.sft.cleanup()


def run_reasoning_sft(cfg: ReasoningSFTConfig, logger: MetricLogger | None = None) -> TrainResult:
    """Set up, train, save, clean up: the entry point of the Dagster asset."""
    return run_recipe(ReasoningSFTRecipe(cfg, logger))


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m model.recipes.reasoning_sft --config <yaml|profile> [--set key=value ...]``."""
    args = parse_recipe_cli("XMed stage 2: 5-step clinical reasoning SFT", argv)
    result = run_reasoning_sft(load_recipe_config("reasoning_sft", args.config, args.set))
    print(
        f"reasoning_sft: {result.steps} steps, final loss {result.final_loss:.4f}, model at {result.model_dir}"
    )


if __name__ == "__main__":
    main()
