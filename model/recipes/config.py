"""Typed, validated configurations of the four training recipes (sft, reasoning_sft, dpo, audio).

One pydantic model per stage; every default is declared ONCE here, with its help text as the
field ``description``. YAML files under ``model/configs/recipes/<stage>/<profile>.yaml`` hold the
values of each profile (ci, demo, prod); :func:`load_recipe_config` reads one, applies CLI-style
``key.sub=value`` overrides and validates it. Unknown keys are errors ("airtight configs", as in
torchtune's ``config/_validate.py``), and cross-field checks (freeze policy vs LoRA, the audio
stage's frozen parts, checkpoint cadence) run at load time.

Validation never touches the file system, so the prod config (an InternVL2-8B checkpoint under
``/models``) validates on a laptop; :meth:`check_paths` is the separate, explicit check that the
inputs exist, with an error that names the missing path and what belongs there.

Example:
    >>> cfg = load_recipe_config("sft", "ci", ["train.max_steps=3"])
    >>> cfg.train.max_steps
    3
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model.data.schema import TASKS

#: the pseudo-task of the synthetic in-context lookup rows of SFT (``data.lookup_drills``): it can be
#: weighted in ``data.task_weights`` and ``data.warmup.task_weights`` like a curated task
DRILL_TASK = "lookup_drill"
#: the tasks an SFT mix can weight: the curated ones and the drills
MIX_TASKS = (*TASKS, DRILL_TASK)

__all__ = [
    "CONFIG_ROOT",
    "PROFILES",
    "STAGES",
    "AudioConfig",
    "AudioDataSettings",
    "CheckpointInit",
    "DPOConfig",
    "DPODataSettings",
    "DPOLossSettings",
    "DistillSettings",
    "EvidenceAnswers",
    "FreezeSettings",
    "LoraSettings",
    "OptimizerSettings",
    "ProvenanceSettings",
    "ReasoningDataSettings",
    "ReasoningSFTConfig",
    "RecipeConfigError",
    "SFTConfig",
    "SFTDataSettings",
    "SFTDistillSettings",
    "SFTModelInit",
    "SamplingSettings",
    "TrainSettings",
    "apply_overrides",
    "load_recipe_config",
    "recipe_config_path",
]

#: Folder of the shipped per-stage, per-profile YAML files.
CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs" / "recipes"
#: Profile names accepted by :func:`load_recipe_config` in place of a path.
PROFILES: tuple[str, ...] = ("ci", "demo", "prod")


class RecipeConfigError(ValueError):
    """A recipe config file or override is invalid; the message names the file and the field."""


class _Settings(BaseModel):
    """Base of every settings block: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _missing(field: str, path: str | None, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{field}: nothing at {path!r}; expected {what} (or override {field}=...)")


def _require_file(field: str, path: str | None, what: str) -> None:
    if path is None or not Path(path).is_file():
        raise _missing(field, path, what)


def _require_dir(field: str, path: str | None, what: str) -> None:
    if path is None or not Path(path).is_dir():
        raise _missing(field, path, what)


# ---------------------------------------------------------------------------------------------
# blocks shared by the stages
# ---------------------------------------------------------------------------------------------


class OptimizerSettings(_Settings):
    """AdamW and the learning-rate schedule (linear warmup, then cosine decay to a floor)."""

    lr: float = Field(2e-4, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warmup from 0 to lr")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm (DeepSpeed gradient_clipping)")
    head_lr_scale: float = Field(
        1.0, gt=0, description="learning rate of the LLM's output projection as a multiple of lr"
    )


class TrainSettings(_Settings):
    """The training loop: batch, length, cadence of logging/checkpoints, DeepSpeed, resume."""

    micro_batch_size: int = Field(8, ge=1, description="examples per forward pass per process")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")
    num_epochs: int = Field(1, ge=1, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps to run; None = num_epochs")
    log_every: int = Field(10, ge=1, description="log metrics every N optimizer steps")
    save_every: int = Field(500, ge=1, description="write a resumable checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1, description="resumable checkpoints kept (oldest deleted)")
    seed: int = Field(0, description="seed of the data order and of every RNG")
    group_by_length: bool = Field(True, description="batch examples of similar token length together")
    group_window: int = Field(
        16, ge=1, description="length grouping sorts within windows of this many batches (seeded)"
    )
    deepspeed_config: str = Field(
        "model/configs/deepspeed/zero2_cpu.json", description="DeepSpeed JSON ('auto' values filled here)"
    )
    gradient_checkpointing: bool = Field(False, description="recompute LLM activations in backward")
    loss_weighting: Literal["token", "sample", "square"] = Field(
        "token",
        description="how answers of different lengths count in the loss: every token alike (token), every "
        "example alike (sample) or n**-0.5 per token (square); see model.vlm.modeling.LOSS_WEIGHTINGS",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads of this process; None = PyTorch default (all cores)"
    )
    progress_bar: bool = Field(True, description="show a tqdm progress bar on the main process")
    resume_from: str | None = Field(
        "latest",
        description="'latest' = newest checkpoint under output_dir/checkpoints if any; a checkpoint "
        "folder (.../checkpoints/step_N); None = always start fresh",
    )


class FreezeSettings(_Settings):
    """Which parts of the model stay frozen (True) or train (False); see ``model.vlm.freeze``."""

    vision: bool = Field(False, description="freeze the vision tower")
    projector: bool = Field(False, description="freeze the vision->LLM MLP projector")
    llm: bool = Field(False, description="freeze the language model (embeddings and head included)")
    audio: bool = Field(True, description="freeze the audio encoder + audio projector")
    lm_head: bool = Field(
        False,
        description="also freeze the LLM's output projection (a fixed classifier) while the LLM trains",
    )
    llm_attention: bool = Field(
        False,
        description="also freeze the attention projections of every LLM layer while its MLPs, norms, "
        "embeddings and head train (keeps the in-context matches an earlier stage formed)",
    )

    @model_validator(mode="after")
    def _something_trains(self) -> FreezeSettings:
        if all((self.vision, self.projector, self.llm, self.audio)):
            raise ValueError("freeze: every part is frozen, nothing would train; unfreeze at least one")
        return self


class LoraSettings(_Settings):
    """Low-rank adapters on the language model (peft); merged into the weights at the final save."""

    enabled: bool = Field(False, description="train LoRA adapters instead of the full LLM")
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="adapter scale numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="LLM linear layer names that get adapters",
    )


class DistillSettings(_Settings):
    """Learning without Forgetting: answer tokens also learn the parent model's distribution.

    On a distilled row each answer token's loss is ``(1 - weight) * CE(target) + weight * T^2 *
    KL(teacher_T || student_T)`` (``_T``: softmax at temperature ``T``); the teacher is a frozen
    copy of the model the stage starts from. Rows of the stage's own new data learn from their
    targets only.
    """

    weight: float = Field(
        0.0, ge=0, le=1, description="share of a distilled answer token's loss from the teacher (0 = off)"
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the KL term (scaled by T^2)")

    @property
    def enabled(self) -> bool:
        """True when the KL term is on."""
        return self.weight > 0


class SFTDistillSettings(DistillSettings):
    """Distillation in an SFT run: which rows, and from which frozen teacher."""

    teacher_dir: str | None = Field(
        None, description="frozen teacher model folder; None = the starting checkpoint (model.checkpoint_dir)"
    )
    target_only_rows: str | None = Field(
        None,
        description="Parquet file whose row ids learn from their targets only (the stage's new rows); "
        "None = every row is distilled",
    )


class ProvenanceSettings(_Settings):
    """Lineage written into ``xmed_provenance.json`` next to the final model."""

    data_version: str | None = Field(None, description="DVC md5 of the training data (set by Dagster)")
    dagster_run_id: str | None = Field(None, description="the Dagster run that trains (set by Dagster)")


class CheckpointInit(_Settings):
    """Start from a saved HF checkpoint (the previous stage's ``<output_dir>/model``)."""

    checkpoint_dir: str = Field(..., description="HF model folder (config.json, safetensors, tokenizer)")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="parameter dtype while training")
    trust_remote_code: bool = Field(False, description="allow a checkpoint's own modelling code")

    def check_paths(self) -> None:
        """Raise FileNotFoundError unless ``checkpoint_dir`` holds an HF model and its tokenizer."""
        what = "the previous stage's <output_dir>/model (save_pretrained weights + tokenizer): run that stage first"
        _require_dir("model.checkpoint_dir", self.checkpoint_dir, what)
        _require_file("model.checkpoint_dir", str(Path(self.checkpoint_dir) / "config.json"), what)


class SFTModelInit(_Settings):
    """SFT starts from a pretrained checkpoint (prod) OR builds a tiny VLM from scratch (ci/demo)."""

    checkpoint_dir: str | None = Field(None, description="pretrained HF model folder (with tokenizer)")
    tokenizer_dir: str | None = Field(None, description="trained tokenizer folder (scratch models)")
    architecture: str | None = Field(
        None, description="model/configs/model/<profile>.yaml: build_tiny_vlm arguments (scratch models)"
    )
    init_seed: int = Field(0, description="initialisation seed of a scratch model")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="parameter dtype while training")
    trust_remote_code: bool = Field(False, description="allow a checkpoint's own modelling code")

    @model_validator(mode="after")
    def _one_source(self) -> SFTModelInit:
        scratch = self.tokenizer_dir is not None or self.architecture is not None
        if (self.checkpoint_dir is None) == (not scratch):
            raise ValueError(
                "model: set EITHER checkpoint_dir (pretrained) OR tokenizer_dir + architecture (scratch)"
            )
        if scratch and (self.tokenizer_dir is None or self.architecture is None):
            raise ValueError("model: a scratch model needs both tokenizer_dir and architecture")
        return self

    def check_paths(self) -> None:
        """Raise FileNotFoundError naming the missing checkpoint, tokenizer or architecture file."""
        if self.checkpoint_dir is not None:
            _require_file(
                "model.checkpoint_dir",
                str(Path(self.checkpoint_dir) / "config.json"),
                "a local HF checkpoint (e.g. InternVL2-8B: config.json, *.safetensors, tokenizer files)",
            )
            return
        _require_file(
            "model.tokenizer_dir",
            str(Path(self.tokenizer_dir) / "tokenizer.json"),
            "a tokenizer from `python -m model.tokenizer --out ...`",
        )
        _require_file("model.architecture", self.architecture, "a model/configs/model/<profile>.yaml")


def _check_lora_vs_freeze(lora: LoraSettings, freeze: FreezeSettings) -> None:
    if lora.enabled and freeze.llm:
        raise ValueError(
            "lora.enabled trains the LLM through adapters but freeze.llm=True; set freeze.llm=false"
        )


class _StageConfig(_Settings):
    """Fields every stage has."""

    output_dir: str = Field(..., description="run folder: checkpoints/, model/, logs and artifacts")
    train: TrainSettings = Field(default_factory=TrainSettings, description="training loop settings")
    optim: OptimizerSettings = Field(default_factory=OptimizerSettings, description="AdamW + schedule")
    provenance: ProvenanceSettings = Field(
        default_factory=ProvenanceSettings, description="lineage of the output"
    )

    @model_validator(mode="after")
    def _warmup_within_run(self) -> _StageConfig:
        steps = self.train.max_steps
        if steps is not None and self.optim.warmup_steps >= steps:
            raise ValueError(
                f"optim.warmup_steps={self.optim.warmup_steps} >= train.max_steps={steps}: the run would "
                "never reach the peak learning rate; lower warmup_steps"
            )
        return self

    def _check_common_paths(self) -> None:
        _require_file("train.deepspeed_config", self.train.deepspeed_config, "a DeepSpeed JSON config")


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------


def _check_task_weights(
    name: str, weights: Mapping[str, float], default: float, known: Sequence[str] = MIX_TASKS
) -> None:
    """Known tasks, weights >= 0, and at least one task kept (unlisted tasks weigh ``default``)."""
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown task(s) {unknown}; tasks are {list(known)}")
    bad = {k: v for k, v in weights.items() if v < 0}
    if bad:
        raise ValueError(f"{name} must be >= 0, got {bad}")
    if all(weights.get(t, default) == 0 for t in known):
        raise ValueError(f"{name} drop every task")


class WarmupMix(_Settings):
    """A first phase of training on its own task mix (a curriculum step), before the main mix.

    The phase draws its batches from the listed tasks only; image-grounded short-answer tasks
    (modality, boxes) make a small model read the image before the text-heavy tasks join in, as
    LLaVA/InternVL align the projector on image-grounded data first.
    """

    steps: int = Field(..., ge=1, description="optimizer steps of the phase (part of train.max_steps)")
    task_weights: dict[str, float] = Field(
        ...,
        min_length=1,
        description="per-task multiplier of its rows in the phase; unlisted tasks are left out",
    )

    @model_validator(mode="after")
    def _known_tasks(self) -> WarmupMix:
        _check_task_weights("data.warmup.task_weights", self.task_weights, default=0.0)
        return self


class EvidenceAnswers(_Settings):
    """Evidence-first answer formats of the instruction rows (SFT, and the rows reasoning SFT replays;
    keep the two stages equal so they agree)."""

    modality_evidence: bool = Field(
        False,
        description="answer closed 'Is the imaging modality X?' rows evidence first ('The imaging "
        "modality is CT. No.'): the model states the modality it sees, then compares it with X",
    )
    modality_format: Literal["sentence", "restate", "mirror", "adjacent"] = Field(
        "sentence",
        description="with modality_evidence, the answer's form (model.recipes.sft.MODALITY_FORMATS): "
        "'sentence' ('The imaging modality is CT. No.'), 'restate' ('Asked: imaging modality MRI. Seen: "
        "CT. No.'), 'mirror' ('Seen: the imaging modality CT. No.') or 'adjacent' ('The imaging modality "
        "is CT No.': the yes/no right after the seen name, so the token that predicts it is the name)",
    )
    mcq_evidence: bool = Field(
        False,
        description="answer multiple-choice rows evidence first ('CT. The answer is B.'): the option's "
        "text, then its letter",
    )
    mcq_format: Literal["sentence", "bracket"] = Field(
        "sentence",
        description="with mcq_evidence, the answer's form (model.recipes.sft.MCQ_FORMATS): 'sentence' "
        "('CT. The answer is B.') or 'bracket' ('The answer is CT (B).': the letter right after the "
        "option's text as the prompt spells it, so an induction head reads it off the prompt's option line)",
    )

    @model_validator(mode="after")
    def _format_needs_evidence(self) -> EvidenceAnswers:
        if self.modality_format != "sentence" and not self.modality_evidence:
            raise ValueError(
                f"data.modality_format={self.modality_format!r} needs data.modality_evidence: true"
            )
        if self.mcq_format != "sentence" and not self.mcq_evidence:
            raise ValueError(f"data.mcq_format={self.mcq_format!r} needs data.mcq_evidence: true")
        return self

    def evidence_options(self) -> dict[str, bool]:
        """These options by name (to pass them from one stage's settings to another's)."""
        return {name: getattr(self, name) for name in EvidenceAnswers.model_fields}


class SFTDataSettings(EvidenceAnswers):
    """Curated instruction shards (INSTRUCTION_SCHEMA); only the ``train`` split is read."""

    shards: str = Field(..., description="curated shards folder (or one Parquet file)")
    data_root: str = Field(..., description="data/<profile>: image paths in the rows are relative to it")
    task_weights: dict[str, float] = Field(
        default_factory=dict,
        description="per-task multiplier of its rows per epoch (2.0 = twice, 0.5 = a seeded half, "
        "0 = dropped); unlisted tasks 1.0",
    )
    warmup: WarmupMix | None = Field(
        None, description="an optional first phase on its own task mix (curriculum); None = main mix only"
    )
    max_length: int | None = Field(None, ge=8, description="token limit per example; None = model context")
    balanced_tasks: list[str] = Field(
        default_factory=list,
        description="tasks whose rows are resampled so that every distinct answer gets the same share "
        "of the task (rare answers repeated, e.g. prognosis: ~20% 'Yes'); the task weight applies after",
    )
    complement_modality_questions: bool = Field(
        False,
        description="add, for each closed 'Is the imaging modality X?' row, the same image asked about "
        "another modality with the opposite answer (complementary pairs: the answer needs both the "
        "question and the image)",
    )
    image_label_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the auxiliary image-level loss: every image of a row is labelled with the "
        "row's modality, scored by the model's image classifier (architecture key image_label_names) "
        "on its mean projected token; 0 = off",
    )
    mcq_shuffles: int = Field(
        0,
        ge=0,
        description="add, for each multiple-choice row, this many copies with the option texts in a "
        "seeded new order (the right letter moves with its text, so it must be read off the prompt); 0 = none",
    )
    lookup_drills: int = Field(
        0,
        ge=0,
        description=f"number of synthetic in-context lookup rows (task '{DRILL_TASK}': find the letter of a "
        "named option, say whether two named things are the same) added to the mix; 0 = none",
    )

    @model_validator(mode="after")
    def _known_tasks(self) -> SFTDataSettings:
        _check_task_weights("data.task_weights", self.task_weights, default=1.0)
        unknown = sorted(set(self.balanced_tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"data.balanced_tasks: unknown task(s) {unknown}; tasks are {list(TASKS)}")
        return self

    def kept_tasks(self) -> set[str]:
        """Tasks with a positive weight in the main mix or the warm-up phase."""
        main = {t for t in MIX_TASKS if self.task_weights.get(t, 1.0) > 0}
        warm = {t for t, w in self.warmup.task_weights.items() if w > 0} if self.warmup else set()
        return main | warm


class SFTConfig(_StageConfig):
    """Stage 1: instruction tuning on the curated mix."""

    stage: Literal["sft"] = Field("sft", description="stage name (fixed)")
    model: SFTModelInit = Field(..., description="where the model comes from")
    data: SFTDataSettings = Field(..., description="training data")
    freeze: FreezeSettings = Field(default_factory=FreezeSettings, description="frozen parts")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA option")
    distill: SFTDistillSettings = Field(
        default_factory=SFTDistillSettings, description="distillation from a frozen teacher (off by default)"
    )

    @model_validator(mode="after")
    def _cross(self) -> SFTConfig:
        _check_lora_vs_freeze(self.lora, self.freeze)
        d = self.distill
        if d.enabled and d.teacher_dir is None and self.model.checkpoint_dir is None:
            raise ValueError(
                "distill.weight > 0 needs a teacher: set distill.teacher_dir (a scratch model has no parent)"
            )
        if d.enabled and self.data.image_label_weight > 0:
            raise ValueError(
                "data.image_label_weight and distill.weight cannot both be on: the distilled loss is "
                "recomputed from the answer logits and would drop the image-level term"
            )
        w, max_steps = self.data.warmup, self.train.max_steps
        if w is not None and max_steps is not None and w.steps >= max_steps:
            raise ValueError(
                f"data.warmup.steps ({w.steps}) must be below train.max_steps ({max_steps}): "
                "the main mix would never be trained"
            )
        return self

    def check_paths(self) -> None:
        """Raise FileNotFoundError naming the first missing input (model, data, DeepSpeed JSON)."""
        self.model.check_paths()
        if not Path(self.data.shards).exists():
            raise _missing("data.shards", self.data.shards, "curated shards (dvc repro curate@<profile>)")
        if self.distill.enabled and self.distill.teacher_dir is not None:
            _require_dir("distill.teacher_dir", self.distill.teacher_dir, "a saved model folder")
        if self.distill.enabled and self.distill.target_only_rows is not None:
            _require_file("distill.target_only_rows", self.distill.target_only_rows, "a Parquet file of rows")
        _require_dir("data.data_root", self.data.data_root, "the profile's data root (data/<profile>)")
        self._check_common_paths()


class ReasoningDataSettings(_Settings):
    """The 5-step reasoning dataset, built from the image manifest by ``model.reasoning``."""

    manifest_dir: str = Field(..., description="ingest output (data/<profile>/manifest)")
    data_root: str = Field(..., description="data/<profile>: image paths are relative to it")
    max_length: int | None = Field(None, ge=8, description="token limit per example; None = model context")


class ReasoningSFTDataSettings(ReasoningDataSettings, EvidenceAnswers):
    """The reasoning dataset, plus an optional replay of the stage-1 instruction mix."""

    answer_style: Literal["full", "concise"] = Field(
        "full",
        description="deterministic answer style (model.reasoning.build_reasoning_answer): full, or concise "
        "(abnormal regions only in step 3, no repeated history in step 4; same steps, boxes and report)",
    )

    replay_shards: str | None = Field(
        None, description="curated instruction shards replayed alongside (the SFT mix); None = no replay"
    )
    replay_rows: int = Field(
        0,
        ge=0,
        description="train rows sampled (seeded) from replay_shards so stage 1's skills are not forgotten",
    )
    replay_task_weights: dict[str, float] = Field(
        default_factory=dict,
        description="per-task sampling weight of the replayed rows (unlisted 1.0, 0 = never replayed)",
    )

    @model_validator(mode="after")
    def _replay(self) -> ReasoningSFTDataSettings:
        if self.replay_rows and not self.replay_shards:
            raise ValueError("data.replay_rows > 0 needs data.replay_shards")
        _check_task_weights("data.replay_task_weights", self.replay_task_weights, default=1.0, known=TASKS)
        return self


class ReasoningSFTConfig(_StageConfig):
    """Stage 2: SFT on the paper's 5-step clinical reasoning, from the SFT checkpoint."""

    stage: Literal["reasoning_sft"] = Field("reasoning_sft", description="stage name (fixed)")
    model: CheckpointInit = Field(..., description="the SFT output model")
    data: ReasoningSFTDataSettings = Field(..., description="reasoning data source (+ replay)")
    freeze: FreezeSettings = Field(default_factory=FreezeSettings, description="frozen parts")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA option")
    distill: DistillSettings = Field(
        default_factory=DistillSettings,
        description="the replayed rows also learn the SFT model's answer distribution (Learning without "
        "Forgetting); the reasoning rows learn from their targets only",
    )

    @model_validator(mode="after")
    def _cross(self) -> ReasoningSFTConfig:
        _check_lora_vs_freeze(self.lora, self.freeze)
        if self.distill.enabled and not self.data.replay_rows:
            raise ValueError(
                "distill.weight > 0 needs replayed rows (data.replay_rows > 0): nothing to distill"
            )
        return self

    def check_paths(self) -> None:
        """Raise FileNotFoundError naming the first missing input."""
        self.model.check_paths()
        _require_dir(
            "data.manifest_dir", self.data.manifest_dir, "the ingest output (dvc repro ingest@<profile>)"
        )
        _require_dir("data.data_root", self.data.data_root, "the profile's data root (data/<profile>)")
        if self.data.replay_shards:
            _require_dir(
                "data.replay_shards",
                self.data.replay_shards,
                "the curated shards (dvc repro curate@<profile>)",
            )
        self._check_common_paths()


class DPODataSettings(ReasoningDataSettings):
    """Prompts for preference sampling: the reasoning dataset's train rows."""

    max_prompts: int | None = Field(None, ge=1, description="use a seeded subset of this many prompts")
    min_pairs: int = Field(
        1,
        ge=0,
        description="fewer preference pairs than this stop the run (NoPreferencePairsError); 0 lets a run "
        "whose samples all tie finish with zero DPO steps and the model saved unchanged (ci only)",
    )
    pairs_file: str | None = Field(
        None,
        description="train on this preference dataset instead of sampling (Parquet with the columns of "
        "model.recipes.dpo.PAIR_SCHEMA: an earlier run's preference_pairs.parquet or a reviewed set)",
    )


class SamplingSettings(_Settings):
    """How the K candidate answers per prompt are drawn (``model.generation.sample_answers``)."""

    num_samples: int = Field(4, ge=2, description="K answers sampled per prompt")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus mass")
    max_new_tokens: int = Field(256, ge=1, description="generation budget per answer")
    seed: int = Field(0, description="sampling seed (prompt i uses seed + i)")
    resample_from: Literal["start", "step5"] = Field(
        "start",
        description="'start': K whole answers per prompt; 'step5': one greedy answer per prompt, then K "
        "samples of its step 5 after its own steps 1-4 (step-level pairs as in Step-DPO: chosen and "
        "rejected differ only in the judged report; prompts whose greedy answer has no steps 1-4 "
        "before a step-5 header give no pair)",
    )
    step5_new_tokens: int = Field(192, ge=1, description="generation budget of one step-5 sample ('step5')")
    well_formed_only: bool = Field(
        False,
        description="a candidate without steps 1-5 once each, in order (model.reasoning.validate_reasoning) "
        "scores 0 before the (best, worst) choice, so a garbled answer is never the chosen one",
    )
    format_check: Literal["steps", "report", "layout"] = Field(
        "steps",
        description="what well_formed_only requires: 'steps' = steps 1-5 once each, in order "
        "(model.reasoning.validate_reasoning); 'report' = that plus a clean step 5 (one 'Final report' "
        "at its start, no tags or stray step lines: model.reasoning.check_report_layout, for "
        "resample_from 'step5' whose steps 1-4 are shared); 'layout' = 'report' plus complete ref/box tags with "
        "possible boxes, no stray 'Step' lines, one 'Final report' (model.reasoning.check_answer_layout)",
    )


class DPOLossSettings(_Settings):
    """The DPO objective (``model.losses.dpo_loss``, plus ``model.losses.chosen_nll`` for RPO)."""

    beta: float = Field(0.1, gt=0, description="KL-strength beta of the sigmoid DPO loss")
    rpo_alpha: float = Field(
        0.0,
        ge=0,
        description="weight of the chosen answers' per-token NLL added to the DPO loss (RPO; 0 = plain DPO)",
    )


class DPOConfig(_StageConfig):
    """Stage 3: direct preference optimisation on (best, worst) of K sampled reports."""

    stage: Literal["dpo"] = Field("dpo", description="stage name (fixed)")
    model: CheckpointInit = Field(..., description="the reasoning SFT output model (policy and reference)")
    data: DPODataSettings = Field(..., description="prompt source")
    sampling: SamplingSettings = Field(default_factory=SamplingSettings, description="candidate sampling")
    loss: DPOLossSettings = Field(default_factory=DPOLossSettings, description="DPO loss")
    freeze: FreezeSettings = Field(default_factory=FreezeSettings, description="frozen parts")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA option")

    @model_validator(mode="after")
    def _cross(self) -> DPOConfig:
        _check_lora_vs_freeze(self.lora, self.freeze)
        return self

    def check_paths(self) -> None:
        """Raise FileNotFoundError naming the first missing input."""
        self.model.check_paths()
        _require_dir(
            "data.manifest_dir", self.data.manifest_dir, "the ingest output (dvc repro ingest@<profile>)"
        )
        _require_dir("data.data_root", self.data.data_root, "the profile's data root (data/<profile>)")
        if self.data.pairs_file is not None:
            _require_file(
                "data.pairs_file", self.data.pairs_file, "a preference dataset (preference_pairs.parquet)"
            )
        self._check_common_paths()


class AudioDataSettings(_Settings):
    """Spoken queries of the image manifest (``spoken_queries``: text, audio_path, answer)."""

    manifest_dir: str = Field(..., description="ingest output (data/<profile>/manifest)")
    data_root: str = Field(..., description="data/<profile>: image and WAV paths are relative to it")
    max_length: int | None = Field(None, ge=8, description="token limit per example; None = model context")


class AudioConfig(_StageConfig):
    """Stage 4: add/train the audio encoder + audio projector with everything else frozen."""

    stage: Literal["audio"] = Field("audio", description="stage name (fixed)")
    model: CheckpointInit = Field(..., description="the DPO output model")
    audio_architecture: str = Field(
        ...,
        description="model/configs/model/<profile>.yaml: audio_* settings used when the loaded model "
        "has no audio encoder yet",
    )
    data: AudioDataSettings = Field(..., description="spoken-query source")
    freeze: FreezeSettings = Field(
        default_factory=lambda: FreezeSettings(vision=True, projector=True, llm=True, audio=False),
        description="must freeze vision, projector and llm and train audio",
    )

    @model_validator(mode="after")
    def _audio_only(self) -> AudioConfig:
        f = self.freeze
        if not (f.vision and f.projector and f.llm) or f.audio:
            raise ValueError(
                "audio stage trains ONLY the audio encoder + projector: set freeze to "
                "{vision: true, projector: true, llm: true, audio: false}"
            )
        return self

    def check_paths(self) -> None:
        """Raise FileNotFoundError naming the first missing input."""
        self.model.check_paths()
        _require_file("audio_architecture", self.audio_architecture, "a model/configs/model/<profile>.yaml")
        _require_dir(
            "data.manifest_dir", self.data.manifest_dir, "the ingest output (dvc repro ingest@<profile>)"
        )
        _require_dir("data.data_root", self.data.data_root, "the profile's data root (data/<profile>)")
        self._check_common_paths()


#: Stage name -> its config class.
STAGES: dict[str, type[_StageConfig]] = {
    "sft": SFTConfig,
    "reasoning_sft": ReasoningSFTConfig,
    "dpo": DPOConfig,
    "audio": AudioConfig,
}


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def recipe_config_path(stage: str, profile: str) -> Path:
    """``model/configs/recipes/<stage>/<profile>.yaml``."""
    return CONFIG_ROOT / stage / f"{profile}.yaml"


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a raw config dict (values parsed as YAML scalars).

    Example:
        >>> apply_overrides({"train": {"seed": 0}}, ["train.seed=3", "output_dir=/tmp/x"])
        {'train': {'seed': 3}, 'output_dir': '/tmp/x'}

    Raises:
        RecipeConfigError: an override has no ``=`` or walks into a non-mapping value.
    """
    out = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeConfigError(f"override {item!r} must look like key.sub=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            if not isinstance(child, Mapping):
                raise RecipeConfigError(f"override {item!r}: {part!r} is not a mapping")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return out


def load_recipe_config(
    stage: str, profile_or_path: str | os.PathLike, overrides: Iterable[str] = ()
) -> _StageConfig:
    """Read, override and validate one stage's config.

    Args:
        stage: ``sft``, ``reasoning_sft``, ``dpo`` or ``audio``.
        profile_or_path: ``ci``/``demo``/``prod`` (the shipped YAML) or a YAML path.
        overrides: ``dotted.key=value`` strings (the CLI's ``--set``).

    Returns:
        The validated stage config (e.g. :class:`SFTConfig`).

    Raises:
        RecipeConfigError: unknown stage, unreadable file, a stage mismatch, an unknown key, a wrong
            type or a failed cross-field check (the message names the file and the field).
    """
    if stage not in STAGES:
        raise RecipeConfigError(f"unknown stage {stage!r}; stages are {sorted(STAGES)}")
    name = os.fspath(profile_or_path)
    path = recipe_config_path(stage, name) if name in PROFILES else Path(name)
    if not path.is_file():
        raise RecipeConfigError(f"no recipe config at {path} (profiles: {list(PROFILES)} or a YAML path)")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise RecipeConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    if raw.get("stage", stage) != stage:
        raise RecipeConfigError(f"{path}: stage is {raw['stage']!r} but {stage!r} was asked for")
    try:
        return STAGES[stage].model_validate(raw)
    except ValidationError as e:
        raise RecipeConfigError(f"{path}: invalid {stage} config:\n{e}") from e
