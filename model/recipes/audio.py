"""Stage 4 recipe: teach the model spoken queries by training ONLY the audio encoder + audio projector.

Reads top to bottom:

1. ``setup``: process group, tokenizer + model from the DPO checkpoint; if that model has no audio
   encoder yet, one is added (a Whisper encoder + :class:`~model.vlm.audio.AudioProjector` sized by
   the ``audio_*`` settings of ``audio_architecture``, the other weights copied unchanged); the
   vision tower, vision projector and LLM are frozen (:func:`model.vlm.modeling.freeze`), so only the
   audio path receives gradients; the spoken queries of the manifest's ``train`` images become
   instruction rows ``human: "<audio>\\n<image>\\n<instruction>"``, ``gpt: <answer>`` (log-mel
   features via :func:`model.vlm.audio.load_log_mel` inside the processor); DeepSpeed engine over
   the trainable parameters only; resume.
2. ``train``: the same loop as SFT (next-token cross-entropy on the answer).
3. ``save_checkpoint`` / ``cleanup``.

The frozen parts stay bit-identical (they are not given to the optimizer; tested).

CLI: ``python -m model.recipes.audio --config model/configs/recipes/audio/demo.yaml [--set key=value ...]``
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoTokenizer

from model.collators import SFTCollator
from model.data.io import iter_parquet_rows
from model.recipes._common import (
    DistInfo,
    ThroughputMeter,
    TrainResult,
    TrainState,
    check_finite_loss,
    epoch_batches,
    init_distributed,
    load_deepspeed_config,
    load_training_checkpoint,
    mean_across_ranks,
    optimizer_groups,
    parse_recipe_cli,
    resume_point,
    run_recipe,
    save_hf_model,
    save_training_checkpoint,
    seed_everything,
    warmup_cosine,
    zero_stage,
)
from model.recipes.config import AudioConfig, CheckpointInit, load_recipe_config
from model.recipes.metric_logging import MetricLogger, StdoutLogger, flatten_params, system_metrics
from model.recipes.sft import TRAIN_SPLIT, CollateWithIds, InstructionRows, token_lengths
from model.vlm import (
    XMedProcessor,
    XMedVLMConfig,
    XMedVLMForConditionalGeneration,
    count_parameters,
    freeze,
    read_architecture,
    tiny_whisper_config,
)
from model.vlm.processor import SequenceTooLongError

__all__ = ["AUDIO_INSTRUCTION", "AudioRecipe", "add_audio_encoder", "main", "run_audio", "spoken_query_rows"]

#: The human turn of a spoken query: the audio clip carries the question, the image follows.
AUDIO_INSTRUCTION = "<audio>\n<image>\nAnswer the spoken question about this image."
_AUDIO_KEYS = ("audio_hidden", "audio_layers", "audio_seconds", "audio_pool", "heads")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _answer_text(answer: str) -> str:
    """Closed answers as curation writes them ("Yes"/"No"); other answers unchanged."""
    return answer.capitalize() if answer.lower() in ("yes", "no") else answer


def spoken_query_rows(manifest_dir: str | Path, *, split: str = TRAIN_SPLIT) -> list[dict[str, Any]]:
    """One instruction row per spoken query of the manifest images of ``split``.

    Row fields: ``id`` (``<image_id>:spoken:<k>``), ``task`` (``vqa_spoken``), ``images``,
    ``audios`` (paths relative to the data root), ``conversations`` and ``question`` (the text
    that was spoken, kept for inspection; not shown to the model).

    Raises:
        ValueError: no spoken query in that split (names the manifest folder).
    """
    rows = []
    columns = ["image_id", "image_path", "split", "spoken_queries"]
    for rec in iter_parquet_rows(Path(manifest_dir) / "images", columns=columns):
        if rec["split"] != split:
            continue
        for k, q in enumerate(rec["spoken_queries"] or []):
            rows.append(
                {
                    "id": f"{rec['image_id']}:spoken:{k}",
                    "task": "vqa_spoken",
                    "images": [rec["image_path"]],
                    "audios": [q["audio_path"]],
                    "question": q["text"],
                    "conversations": [
                        {"from": "human", "value": AUDIO_INSTRUCTION},
                        {"from": "gpt", "value": _answer_text(q["answer"])},
                    ],
                }
            )
    if not rows:
        raise ValueError(
            f"{manifest_dir}/images: no spoken queries on '{split}' images (field 'spoken_queries')"
        )
    return rows


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------


def _load_model(m: CheckpointInit):
    """Tokenizer + model from a local HF checkpoint folder."""
    dtype = torch.bfloat16 if m.dtype == "bfloat16" else torch.float32
    kw = {"local_files_only": True, "trust_remote_code": m.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(m.checkpoint_dir, **kw)
    model = AutoModelForImageTextToText.from_pretrained(m.checkpoint_dir, dtype=dtype, **kw)
    return tokenizer, model


def add_audio_encoder(model, tokenizer, *, architecture: str, seed: int) -> XMedVLMForConditionalGeneration:
    """Return ``model`` if it has an audio encoder; else a copy with a fresh Whisper encoder + projector.

    The new model's config gets ``audio_config`` (from the ``audio_*`` and ``heads`` settings of the
    architecture YAML), ``audio_token_id`` and ``audio_pool``; every existing weight is copied over
    unchanged; only the new audio modules are initialised (seeded).

    Raises:
        ValueError: the YAML lacks an audio setting, or the copy would drop or miss a non-audio weight.
    """
    if getattr(model, "audio_encoder", None) is not None:
        return model
    arch, _ = read_architecture(architecture)
    missing = [k for k in _AUDIO_KEYS if k not in arch]
    if missing:
        raise ValueError(f"{architecture}: needs {missing} to add an audio encoder")
    audio = tiny_whisper_config(
        d_model=arch["audio_hidden"],
        layers=arch["audio_layers"],
        heads=arch["heads"],
        ffn_dim=2 * arch["audio_hidden"],
        seconds=arch["audio_seconds"],
    )
    spec = model.config.to_dict()
    spec.update(
        audio_config=audio.to_dict(),
        audio_token_id=tokenizer.convert_tokens_to_ids("<audio>"),
        audio_pool=arch["audio_pool"],
        audio_projector_hidden_size=arch.get("projector_hidden") or model.config.projector_hidden_size,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = XMedVLMForConditionalGeneration(XMedVLMConfig.from_dict(spec)).to(model.dtype)
    missing_keys, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    dropped = [k for k in missing_keys if not k.startswith(("audio_encoder.", "audio_projector."))]
    if unexpected or dropped:
        raise ValueError(
            f"adding the audio encoder changed the model: unexpected {unexpected}, missing {dropped}"
        )
    new.generation_config = model.generation_config
    return new


def _check_max_length(max_length: int | None, model) -> None:
    """``data.max_length`` may not exceed the model's context (positions beyond it were never trained)."""
    context = model.config.get_text_config().max_position_embeddings
    if max_length is not None and max_length > context:
        raise ValueError(
            f"data.max_length={max_length} exceeds the model context ({context} positions, "
            "text_config.max_position_embeddings); lower it or build the model with a longer context"
        )


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------


class AudioRecipe:
    """Train the audio encoder + audio projector on spoken queries, everything else frozen.

    Args:
        cfg: the validated :class:`~model.recipes.config.AudioConfig`.
        logger: metrics backend (default :class:`StdoutLogger`).

    Raises:
        TypeError: ``cfg`` is not an ``AudioConfig``.
    """

    def __init__(self, cfg: AudioConfig, logger: MetricLogger | None = None) -> None:
        if not isinstance(cfg, AudioConfig):
            raise TypeError(f"AudioRecipe needs an AudioConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.stage = cfg.stage
        self.logger = logger or StdoutLogger()
        self.output_dir = Path(cfg.output_dir)
        self._bf16 = cfg.model.dtype == "bfloat16"
        self.engine = None
        self.state = TrainState()
        self.resumed_from: str | None = None
        self.last_loss = float("nan")
        self._plan: tuple[int, list[list[int]]] | None = None

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Build everything in dependency order; resume from a checkpoint if one is configured."""
        cfg = self.cfg
        cfg.check_paths()
        # 1. Process group and seeds first.
        self.dist: DistInfo = init_distributed()
        if cfg.train.torch_threads is not None:
            torch.set_num_threads(cfg.train.torch_threads)
        seed_everything(cfg.train.seed)
        # 2. DeepSpeed JSON before the model (ZeRO-3 shards at load).
        self.ds_config = load_deepspeed_config(
            cfg.train.deepspeed_config,
            micro_batch_size=cfg.train.micro_batch_size,
            grad_accum_steps=cfg.train.grad_accum_steps,
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
            grad_clip=cfg.optim.grad_clip,
            bf16=self._bf16,
        )
        if zero_stage(self.ds_config) == 3:
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds = HfDeepSpeedConfig(self.ds_config)
        # 3. Model: the DPO checkpoint, with an audio encoder added if it has none.
        self.tokenizer, model = _load_model(cfg.model)
        model = add_audio_encoder(
            model, self.tokenizer, architecture=cfg.audio_architecture, seed=cfg.train.seed
        )
        # 4. Freeze everything but the audio path BEFORE the optimizer sees the parameters.
        f = cfg.freeze
        freeze(model, **f.model_dump())
        self.trainable = count_parameters(model)["audio"]
        # 5. Processor (audio tokens per clip, clip length follow the config) and data.
        _check_max_length(cfg.data.max_length, model)
        self.processor = XMedProcessor.for_model(self.tokenizer, model.config, max_length=cfg.data.max_length)
        self.rows = spoken_query_rows(cfg.data.manifest_dir)
        self.lengths = token_lengths(self.rows, self.processor)
        self._check_lengths()
        self.collate = CollateWithIds(SFTCollator(self.tokenizer.pad_token_id))
        self.total_steps = self._total_steps()
        # 6. Engine over the trainable (audio) parameters only, then resume.
        self.engine = self._setup_engine(model)
        ckpt = resume_point(self.output_dir, cfg.train.resume_from, dist=self.dist)
        if ckpt is not None:
            self.state = load_training_checkpoint(
                self.engine, ckpt, dist=self.dist, resume_key=self._resume_key()
            )
            self.resumed_from = str(ckpt)

    def _check_lengths(self) -> None:
        limit = self.processor.max_length
        too_long = [(r["id"], n) for r, n in zip(self.rows, self.lengths, strict=True) if limit and n > limit]
        if too_long:
            raise SequenceTooLongError(
                f"{len(too_long)} spoken-query rows exceed max_length={limit} tokens, e.g. {too_long[:3]}; "
                "raise data.max_length (up to the model context)"
            )

    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches (row indices) of ``epoch``; a pure function of config + epoch."""
        if self._plan is None or self._plan[0] != epoch:
            t = self.cfg.train
            self._plan = (
                epoch,
                epoch_batches(
                    self.lengths,
                    batch_size=t.micro_batch_size,
                    seed=t.seed,
                    epoch=epoch,
                    group_window=t.group_window if t.group_by_length else None,
                    world_size=self.dist.world_size,
                    rank=self.dist.rank,
                ),
            )
        return self._plan[1]

    def _total_steps(self) -> int:
        t = self.cfg.train
        if t.max_steps is not None:
            return t.max_steps
        return t.num_epochs * max(len(self._epoch_plan(0)) // t.grad_accum_steps, 1)

    def _setup_engine(self, model):
        import deepspeed
        from torch.optim.lr_scheduler import LambdaLR

        o = self.cfg.optim
        schedule = functools.partial(
            warmup_cosine, warmup_steps=o.warmup_steps, total_steps=self.total_steps, min_ratio=o.min_lr_ratio
        )
        params = optimizer_groups(model, lr=o.lr, head_lr_scale=o.head_lr_scale)
        engine, *_ = deepspeed.initialize(
            model=model,
            model_parameters=params,
            config=self.ds_config,
            lr_scheduler=lambda opt: LambdaLR(opt, schedule),
        )
        return engine

    def _resume_key(self) -> dict[str, Any]:
        t = self.cfg.train
        return {
            "stage": self.stage,
            "micro_batch_size": t.micro_batch_size,
            "grad_accum_steps": t.grad_accum_steps,
            "seed": t.seed,
            "world_size": self.dist.world_size,
            "num_rows": len(self.rows),
        }

    # -- train -----------------------------------------------------------------------------
    def _batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        plan = self._epoch_plan(epoch)[start:]
        data = InstructionRows(self.rows, self.processor, self.cfg.data.data_root)
        return iter(
            DataLoader(
                data, batch_sampler=plan, collate_fn=self.collate, num_workers=self.cfg.train.num_workers
            )
        )

    def _to_device(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dtype = torch.bfloat16 if self._bf16 else torch.float32
        dev = self.engine.device
        return {
            k: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev))
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }

    def _forward_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens of one micro-batch."""
        return self.engine(
            **self._to_device(batch), loss_only=True, loss_weighting=self.cfg.train.loss_weighting
        ).loss

    def _log_params(self) -> None:
        derived = {
            "derived.total_steps": self.total_steps,
            "derived.num_rows": len(self.rows),
            "derived.trainable_params": self.trainable,
            "derived.world_size": self.dist.world_size,
            "derived.zero_stage": zero_stage(self.ds_config),
        }
        params = {**flatten_params(self.cfg.model_dump(mode="json")), **derived}
        self.logger.log_params({f"{self.stage}.{k}": v for k, v in params.items()})
        if self.resumed_from is not None:  # a metric, not a param: a retried run may log it again
            self.logger.log_metrics(
                {f"{self.stage}/resumed_from_step": float(self.state.step)}, step=self.state.step
            )

    def _log(self, losses: list[float], meter: ThroughputMeter) -> dict[str, float]:
        s, w = self.stage, self.dist.world_size
        rates = meter.window()
        metrics = {
            f"{s}/loss": mean_across_ranks(float(np.mean(losses)), self.dist),
            f"{s}/lr": float(self.engine.get_lr()[0]),
            f"{s}/epoch": self.state.epoch
            + self.state.batch_in_epoch / max(len(self._epoch_plan(self.state.epoch)), 1),
            f"{s}/samples_per_s": rates["samples_per_s"] * w,
            f"{s}/tokens_per_s": rates["tokens_per_s"] * w,
            **system_metrics(),
        }
        grad_norm = self.engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics[f"{s}/grad_norm"] = float(grad_norm)
        if self.dist.is_main:
            self.logger.log_metrics(metrics, step=self.state.step)
        return metrics

    def _save_state(self) -> None:
        save_training_checkpoint(
            self.engine,
            self.output_dir,
            self.state,
            dist=self.dist,
            resume_key=self._resume_key(),
            keep=self.cfg.train.keep_checkpoints,
        )

    def train(self) -> TrainResult:
        """Run optimizer steps until ``total_steps``; log every ``log_every``, checkpoint every ``save_every``.

        Returns:
            A :class:`TrainResult` (``model_dir`` is None until :meth:`save_checkpoint`).

        Raises:
            NonFiniteLossError: the loss of a micro-batch is NaN/Inf (names the step and record ids).
        """
        cfg, st, engine = self.cfg.train, self.state, self.engine
        if self.dist.is_main:
            self._log_params()
        meter, losses, metrics = ThroughputMeter(), [], {}
        bar = tqdm(
            total=self.total_steps,
            initial=st.step,
            desc=self.stage,
            disable=not (cfg.progress_bar and self.dist.is_main),
        )
        engine.train()
        while st.step < self.total_steps:
            for batch in self._batches(st.epoch, st.batch_in_epoch):
                ids = batch.pop("ids")
                loss = self._forward_loss(batch)
                losses.append(
                    check_finite_loss(loss, stage=self.stage, step=st.step + 1, batch_ids=ids, dist=self.dist)
                )
                boundary = engine.is_gradient_accumulation_boundary()
                engine.backward(loss)
                engine.step()
                n_tokens = int(batch["attention_mask"].sum())
                st.micro_step, st.batch_in_epoch = st.micro_step + 1, st.batch_in_epoch + 1
                st.samples, st.tokens = st.samples + len(ids), st.tokens + n_tokens
                meter.update(len(ids), n_tokens)
                if not boundary:
                    continue
                st.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{engine.get_lr()[0]:.2e}")
                if st.step % cfg.log_every == 0 or st.step == self.total_steps:
                    metrics = self._log(losses, meter)
                    self.last_loss, losses = metrics[f"{self.stage}/loss"], []
                if st.step % cfg.save_every == 0:
                    self._save_state()
                if st.step >= self.total_steps:
                    break
            else:  # the epoch ran out before total_steps: next epoch
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
        bar.close()
        overall = meter.overall()
        return TrainResult(
            stage=self.stage,
            output_dir=str(self.output_dir),
            model_dir=None,
            steps=st.step,
            final_loss=self.last_loss,
            samples_per_s=overall["samples_per_s"] * self.dist.world_size,
            tokens_per_s=overall["tokens_per_s"] * self.dist.world_size,
            wall_s=overall["wall_s"],
            num_examples=len(self.rows),
            resumed_from=self.resumed_from,
            metrics=metrics,
        )

    # -- final model -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Save ``<output_dir>/model`` (safetensors + tokenizer + ``xmed_provenance.json``)."""
        p = self.cfg.provenance
        provenance = {
            "stage": self.stage,
            "parent_checkpoint": self.cfg.model.checkpoint_dir,
            "data_version": p.data_version,
            "dagster_run_id": p.dagster_run_id,
            "data": self.cfg.data.model_dump(mode="json"),
            "trained_parts": ["audio_encoder", "audio_projector"],
            "steps": self.state.step,
            "final_loss": self.last_loss,
            "resumed_from": self.resumed_from,
            "config": self.cfg.model_dump(mode="json"),
        }
        return save_hf_model(
            self.engine, self.tokenizer, self.output_dir / "model", dist=self.dist, provenance=provenance
        )

    def cleanup(self) -> None:
        """Drop the engine and free memory (the process group stays for the next recipe)."""
        self.engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_audio(cfg: AudioConfig, logger: MetricLogger | None = None) -> TrainResult:
    """Set up, train, save, clean up: the entry point of the Dagster asset."""
    return run_recipe(AudioRecipe(cfg, logger))


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m model.recipes.audio --config <yaml|profile> [--set key=value ...]``."""
    args = parse_recipe_cli("XMed stage 4: audio encoder + projector on spoken queries", argv)
    result = run_audio(load_recipe_config("audio", args.config, args.set))
    print(f"audio: {result.steps} steps, final loss {result.final_loss:.4f}, model at {result.model_dir}")


if __name__ == "__main__":
    main()
