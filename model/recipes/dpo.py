"""Stage 3 recipe: direct preference optimisation (DPO) on self-sampled, report-scored pairs.

Reads top to bottom (torchtune ``recipes/lora_dpo_single_device.py`` is the model):

1. ``setup``: process group, tokenizer + policy from the reasoning SFT checkpoint, a frozen
   reference copy, the prompts (the reasoning dataset's ``train`` rows, optionally a seeded subset),
   then the PREFERENCE PAIRS: for each prompt, K answers from ONE batched
   :func:`model.generation.sample_answers` call; each answer's step-5 report is scored by
   CheXpert-style F1 against the reference report (:class:`ReportScorer`, default
   ``validation.report_labeler``; with ``sampling.well_formed_only`` an answer failing
   ``sampling.format_check`` scores 0); (best, worst) become (chosen, rejected) when their scores differ, ties
   going to the sample the policy found most likely (:func:`select_pair`). The pairs are written
   to ``<output_dir>/preference_pairs.parquet`` (an artifact), or read from ``data.pairs_file``
   instead of sampling; then the DeepSpeed engine is built and a checkpoint resumed if configured.
2. ``train``: batches from :class:`~model.collators.PreferenceCollator` (chosen rows first, then
   rejected), sequence log-probs of policy and reference
   (:func:`model.generation.sequence_logprobs`), :func:`model.losses.dpo_loss` with ``beta``.
3. ``save_checkpoint`` / ``cleanup`` as in every recipe.

CLI: ``python -m model.recipes.dpo --config model/configs/recipes/dpo/demo.yaml [--set key=value ...]``
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, AutoTokenizer

from model.collators import PreferenceCollator
from model.data.io import atomic_file, iter_parquet_rows
from model.generation import batched_greedy, sample_answers, sequence_logprobs
from model.losses import chosen_nll, dpo_loss
from model.reasoning import (
    ReasoningFormatError,
    check_answer_layout,
    check_report_layout,
    prefix_before_step5,
    validate_reasoning,
)
from model.recipes._common import (
    DistInfo,
    ThroughputMeter,
    TrainResult,
    TrainState,
    barrier,
    check_finite_loss,
    epoch_batches,
    find_checkpoint,
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
from model.recipes.config import CheckpointInit, DPOConfig, FreezeSettings, LoraSettings, load_recipe_config
from model.recipes.metric_logging import MetricLogger, StdoutLogger, flatten_params, system_metrics
from model.recipes.reasoning_sft import (
    DatasetBuilder,
    dataset_summary_params,
    default_dataset_builder,
    reasoning_dataset,
)
from model.recipes.sft import TRAIN_SPLIT, CollateWithIds
from model.vlm import XMedProcessor, count_parameters, freeze
from model.vlm.processor import SequenceTooLongError

__all__ = [
    "PAIRS_FILE",
    "PAIR_SCHEMA",
    "DPORecipe",
    "LabelerScorer",
    "NoPreferencePairsError",
    "ReportScorer",
    "is_well_formed",
    "main",
    "read_pairs",
    "reference_report",
    "run_dpo",
    "select_pair",
]

log = logging.getLogger(__name__)

#: The preference pairs inside the run folder.
PAIRS_FILE = "preference_pairs.parquet"
#: Columns of the preference-pair artifact.
PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("images", pa.list_(pa.string())),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_score", pa.float64()),
        ("rejected_score", pa.float64()),
        ("reference", pa.string()),
    ]
)


class NoPreferencePairsError(ValueError):
    """Every prompt's K samples tied in score, so there is nothing to prefer."""


# ---------------------------------------------------------------------------------------------
# scoring and pair selection
# ---------------------------------------------------------------------------------------------


class ReportScorer(Protocol):
    """Scores a sampled 5-step answer against the reference report."""

    def score(self, answer: str, reference: str) -> float:
        """Report F1 (in [0, 1]) of the answer's step-5 report against ``reference``."""
        ...


class LabelerScorer:
    """:class:`ReportScorer` = ``validation.report_labeler.score_reasoning_output`` (imported lazily).

    CheXpert-style labels of the answer's step-5 report vs the reference's, F1 on positive labels
    (uncertain counted positive); an answer without a usable step 5 scores 0.0.

    Raises:
        ImportError: ``validation/report_labeler.py`` is not there.
    """

    def __init__(self) -> None:
        try:
            from validation.report_labeler import score_reasoning_output
        except ImportError as e:
            raise ImportError(
                "DPO scoring needs validation.report_labeler.score_reasoning_output; "
                "pass scorer=... to use another ReportScorer"
            ) from e
        self._score = score_reasoning_output

    def score(self, answer: str, reference: str) -> float:
        """Delegate to ``score_reasoning_output(answer, reference)``."""
        return float(self._score(answer, reference))


def reference_report(row: dict[str, Any]) -> str:
    """The reference report of a reasoning row: ``target["reference_report"]`` (``model.reasoning``).

    Raises:
        ValueError: the target has no ``reference_report`` (names the row).
    """
    target = json.loads(row.get("target") or "{}")
    ref = target.get("reference_report")
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"reasoning row {row.get('id')!r}: field 'target' has no 'reference_report'")
    return ref


def read_pairs(path: str | os.PathLike, *, min_pairs: int = 1) -> list[dict[str, Any]]:
    """Preference pairs from a Parquet file with the columns of :data:`PAIR_SCHEMA`.

    Raises:
        ValueError: a column is missing, or a row has an empty prompt/chosen/rejected (names the row).
        NoPreferencePairsError: fewer than ``min_pairs`` rows.
    """
    table = pq.read_table(path)
    missing = [n for n in PAIR_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: preference dataset lacks column(s) {missing}; expected {PAIR_SCHEMA.names}"
        )
    rows = table.select(PAIR_SCHEMA.names).to_pylist()
    for i, r in enumerate(rows):
        empty = [k for k in ("prompt", "chosen", "rejected") if not (r[k] or "").strip()]
        if empty or not r["images"]:
            raise ValueError(f"{path}: row {i} (id {r['id']!r}) has no {empty or ['images']}")
    if len(rows) < min_pairs:
        raise NoPreferencePairsError(
            f"{path}: {len(rows)} preference pairs, below data.min_pairs={min_pairs}"
        )
    return rows


def select_pair(
    scores: Sequence[float], likelihoods: Sequence[float] | None = None
) -> tuple[int, int] | None:
    """Indices ``(best, worst)`` by score; None if all scores tie.

    Ties inside the best and inside the worst score go to the candidate the policy found most
    likely (``likelihoods``, e.g. the mean token log-probability of each sample): the most fluent
    of the best answers, and the most plausible of the worst (the failure greedy decoding is
    closest to, not the least likely garble). Without ``likelihoods``, the first occurrence wins.

    Example:
        >>> select_pair([0.2, 0.9, 0.2, 0.9])
        (1, 0)
        >>> select_pair([0.2, 0.9, 0.2, 0.9], likelihoods=[-2.0, -1.5, -0.5, -0.4])
        (3, 2)
        >>> select_pair([0.5, 0.5]) is None
        True
    """
    if likelihoods is not None and len(likelihoods) != len(scores):
        raise ValueError(f"select_pair: {len(likelihoods)} likelihoods for {len(scores)} scores")
    tie = list(likelihoods) if likelihoods is not None else [0.0] * len(scores)
    order = range(len(scores))
    best = max(order, key=lambda i: (scores[i], tie[i], -i))
    worst = min(order, key=lambda i: (scores[i], -tie[i], i))
    return None if scores[best] == scores[worst] else (best, worst)


def is_well_formed(answer: str, check: str = "steps") -> bool:
    """Whether a sampled answer passes the format ``check``.

    ``steps``: steps 1-5 once each, in order, non-empty, with a step-5 report
    (``model.reasoning.validate_reasoning``); ``report``: that plus a clean step 5
    (``model.reasoning.check_report_layout``); ``layout``: both plus the layout of a usable answer
    (``model.reasoning.check_answer_layout``: complete ref/box tags, possible boxes, no stray step lines).
    """
    checks = {"steps": validate_reasoning, "report": check_report_layout, "layout": check_answer_layout}
    if check not in checks:
        raise ValueError(f"is_well_formed: check must be one of {sorted(checks)}, got {check!r}")
    try:
        checks[check](answer)
    except ReasoningFormatError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# data pieces
# ---------------------------------------------------------------------------------------------


def _prompt_record(pair: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pair["id"],
        "images": pair["images"],
        "conversations": [{"from": "human", "value": pair["prompt"]}],
    }


class PreferenceRows(Dataset):
    """Preference pairs encoded on the fly with :meth:`XMedProcessor.encode_preference` (+ ``id``)."""

    def __init__(self, pairs: Sequence[dict], processor: XMedProcessor, data_root: str) -> None:
        self.pairs, self.processor, self.data_root = pairs, processor, data_root

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = self.pairs[i]
        ex = self.processor.encode_preference(
            _prompt_record(p), self.data_root, chosen=p["chosen"], rejected=p["rejected"]
        )
        ex["id"] = p["id"]
        return ex


# ---------------------------------------------------------------------------------------------
# model pieces (same as sft.py, for a checkpoint start)
# ---------------------------------------------------------------------------------------------


def _load_model(m: CheckpointInit):
    """Tokenizer + model from a local HF checkpoint folder."""
    dtype = torch.bfloat16 if m.dtype == "bfloat16" else torch.float32
    kw = {"local_files_only": True, "trust_remote_code": m.trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(m.checkpoint_dir, **kw)
    model = AutoModelForImageTextToText.from_pretrained(m.checkpoint_dir, dtype=dtype, **kw)
    return tokenizer, model


def _check_layout(model, source: str) -> None:
    counts = count_parameters(model)
    missing = [g for g in ("vision", "projector", "llm") if counts[g] == 0]
    if missing:
        raise ValueError(
            f"{source}: the model has no {missing} parameters in the XMed layout (vision_tower, projector, "
            "language_model); the freeze policy cannot apply. Convert the checkpoint to xmed_vlm first"
        )


def _apply_freeze_and_lora(model, f: FreezeSettings, lora: LoraSettings):
    """Freeze parts per policy; with LoRA, wrap the LLM's linear layers in trainable adapters."""
    if not lora.enabled:
        freeze(model, **f.model_dump())
        return model
    from peft import LoraConfig, get_peft_model

    pattern = r"language_model\..*\.(" + "|".join(re.escape(t) for t in lora.target_modules) + r")"
    peft_cfg = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=pattern
    )
    model = get_peft_model(model, peft_cfg)
    freeze(model.get_base_model(), vision=f.vision, projector=f.projector, llm=True, audio=f.audio)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
    return model


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


class DPORecipe:
    """DPO of the reasoning model on (best, worst) of K sampled answers (see the module docstring).

    Args:
        cfg: the validated :class:`~model.recipes.config.DPOConfig`.
        logger: metrics backend (default :class:`StdoutLogger`).
        scorer: the report scorer (default :class:`LabelerScorer`).
        build_dataset: the reasoning dataset builder (default ``model.reasoning.build_reasoning_dataset``).

    Raises:
        TypeError: ``cfg`` is not a ``DPOConfig``.
    """

    def __init__(
        self,
        cfg: DPOConfig,
        logger: MetricLogger | None = None,
        *,
        scorer: ReportScorer | None = None,
        build_dataset: DatasetBuilder | None = None,
    ) -> None:
        if not isinstance(cfg, DPOConfig):
            raise TypeError(f"DPORecipe needs a DPOConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.stage = cfg.stage
        self.logger = logger or StdoutLogger()
        self.scorer = scorer
        self.build_dataset = build_dataset
        self.output_dir = Path(cfg.output_dir)
        self._bf16 = cfg.model.dtype == "bfloat16"
        self.engine = None
        self.reference = None
        self.state = TrainState()
        self.resumed_from: str | None = None
        self.last_loss = float("nan")
        self._plan: tuple[int, list[list[int]]] | None = None

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Build everything in dependency order; sample + score the pairs before the engine exists."""
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
        # 3. Policy, processor and the frozen reference (a copy of the policy BEFORE any update).
        self.tokenizer, model = _load_model(cfg.model)
        _check_layout(model, cfg.model.checkpoint_dir)
        _check_max_length(cfg.data.max_length, model)
        self.processor = XMedProcessor.for_model(self.tokenizer, model.config, max_length=cfg.data.max_length)
        self.device = (
            torch.device("cuda", self.dist.local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
        model.to(self.device)
        self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        # 4. Preference pairs: sampled with the policy before training (or reused when resuming).
        resuming = find_checkpoint(self.output_dir, cfg.train.resume_from) is not None
        pairs_path = self.output_dir / PAIRS_FILE
        if resuming and pairs_path.is_file():
            self.pairs = read_pairs(pairs_path, min_pairs=0)
        elif cfg.data.pairs_file is not None:
            self.pairs = read_pairs(cfg.data.pairs_file, min_pairs=cfg.data.min_pairs)
            if self.dist.is_main:
                self._write_pairs(pairs_path)
        else:
            prompts = self._load_prompts()
            self._check_prompt_room(prompts)
            self.pairs = self._make_pairs(model, prompts)
            if self.dist.is_main:
                self._write_pairs(pairs_path)
        barrier(self.dist)
        # 5. Freeze / LoRA before the optimizer; exact lengths (validates every pair encodes).
        model = _apply_freeze_and_lora(model.train(), cfg.freeze, cfg.lora)
        self.lengths = self._pair_lengths()
        self.collate = CollateWithIds(PreferenceCollator(self.tokenizer.pad_token_id))
        self.total_steps = self._total_steps()
        # 6. Engine, then resume.
        self.engine = self._setup_engine(model)
        ckpt = resume_point(self.output_dir, cfg.train.resume_from, dist=self.dist)
        if ckpt is not None:
            self.state = load_training_checkpoint(
                self.engine, ckpt, dist=self.dist, resume_key=self._resume_key()
            )
            self.resumed_from = str(ckpt)

    def _load_prompts(self) -> list[dict]:
        d = self.cfg.data
        path, summary = reasoning_dataset(
            manifest_dir=d.manifest_dir,
            data_root=d.data_root,
            output_dir=self.output_dir,
            resume_from=None,
            build=self.build_dataset or default_dataset_builder(),
            is_main=self.dist.is_main,
        )
        barrier(self.dist)
        if self.dist.is_main:
            self.logger.log_params(dataset_summary_params(self.stage, summary))
        rows = [r for r in iter_parquet_rows(path) if r["split"] == TRAIN_SPLIT]
        if not rows:
            raise ValueError(f"{path}: the reasoning dataset has no 'train' rows")
        if d.max_prompts is not None and d.max_prompts < len(rows):
            keep = np.random.default_rng(self.cfg.sampling.seed).choice(
                len(rows), d.max_prompts, replace=False
            )
            rows = [rows[i] for i in sorted(keep.tolist())]
        return rows

    def _check_prompt_room(self, prompts: list[dict]) -> None:
        """Fail BEFORE sampling when the longest prompt + ``max_new_tokens`` exceeds ``max_length``."""
        limit, budget = self.processor.max_length, self.cfg.sampling.max_new_tokens
        root = self.cfg.data.data_root
        longest = max(len(self.processor.encode_prompt(r, root)["input_ids"]) for r in prompts)
        if limit is not None and longest + budget > limit:
            raise SequenceTooLongError(
                f"dpo: the longest prompt has {longest} tokens; + sampling.max_new_tokens={budget} exceeds "
                f"max_length={limit}; lower max_new_tokens or use a model with a longer context"
            )

    def _make_pairs(self, model, prompts: list[dict]) -> list[dict]:
        """Sample K answers per prompt (this rank's share), score their step-5 reports, keep (best, worst)."""
        s, scorer = self.cfg.sampling, self.scorer or LabelerScorer()
        root = Path(self.cfg.data.data_root)
        mine = list(range(self.dist.rank, len(prompts), self.dist.world_size))
        local: list[tuple[int, dict | None, list[float], list[bool]]] = []
        model.eval()
        prefixes = self._greedy_answers(model, prompts, mine) if s.resample_from == "step5" else {}
        for i in tqdm(
            mine, desc="dpo: sampling", disable=not (self.cfg.train.progress_bar and self.dist.is_main)
        ):
            row = prompts[i]
            prompt = row["conversations"][0]["value"]
            prefix = ""
            if s.resample_from == "step5":
                prefix = prefix_before_step5(prefixes[i]) or ""
                if not prefix:
                    local.append((i, None, [], []))
                    continue
            answers = sample_answers(
                model,
                self.processor,
                images=[root / p for p in row["images"]],
                prompt=prompt,
                num_samples=s.num_samples,
                temperature=s.temperature,
                top_p=s.top_p,
                max_new_tokens=s.step5_new_tokens if prefix else s.max_new_tokens,
                seed=s.seed + i,
                answer_prefix=prefix,
            )
            texts = [prefix + a.text for a in answers]
            ref = reference_report(row)
            formed = [is_well_formed(t, s.format_check) for t in texts]
            scores = [
                scorer.score(t, ref) if ok or not s.well_formed_only else 0.0 for t, ok in zip(texts, formed)
            ]
            fluency = [float(np.mean(a.token_logprobs)) if a.token_logprobs else -np.inf for a in answers]
            pick = select_pair(scores, fluency)
            pair = None
            if pick is not None:
                best, worst = pick
                pair = {
                    "id": row["id"],
                    "prompt": prompt,
                    "images": list(row["images"]),
                    "chosen": texts[best],
                    "rejected": texts[worst],
                    "chosen_score": float(scores[best]),
                    "rejected_score": float(scores[worst]),
                    "reference": ref,
                }
            local.append((i, pair, scores, formed))
        gathered = [local]
        if self.dist.world_size > 1:
            gathered = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, local)
        results = sorted((item for part in gathered for item in part), key=lambda t: t[0])
        pairs = [p for _, p, _, _ in results if p is not None]
        self._log_pair_stats(results, pairs)
        if len(pairs) < self.cfg.data.min_pairs:
            raise NoPreferencePairsError(
                f"dpo: {len(pairs)} of {len(prompts)} prompts gave samples whose report F1 differ (the rest "
                f"tied across {s.num_samples} samples), below data.min_pairs={self.cfg.data.min_pairs}; raise "
                "sampling.num_samples or sampling.temperature, or train reasoning_sft longer"
            )
        if not pairs:
            log.warning(
                "dpo: every prompt's samples tied in report F1; no pair, so no DPO step (min_pairs=0)"
            )
        return pairs

    def _greedy_answers(self, model, prompts: list[dict], mine: list[int]) -> dict[int, str]:
        """Greedy answers of this rank's prompts (the shared starts of step-5 resampling)."""
        enc = [self.processor.encode_prompt(prompts[i], self.cfg.data.data_root) for i in mine]
        answers = batched_greedy(model, self.processor, enc, max_new_tokens=self.cfg.sampling.max_new_tokens)
        return {i: a.text for i, a in zip(mine, answers, strict=True)}

    def _log_pair_stats(self, results: list, pairs: list[dict]) -> None:
        if not self.dist.is_main:
            return
        all_scores = [x for _, _, sc, _ in results for x in sc]
        formed = [x for *_, ok in results for x in ok]
        metrics = {
            "dpo/prompts": float(len(results)),
            "dpo/pairs": float(len(pairs)),
            "dpo/pair_rate": len(pairs) / max(len(results), 1),
            "dpo/prompts_sampled": float(sum(1 for _, _, sc, _ in results if sc)),
        }
        # a mean over nothing is undefined: it is left out, never logged as a placeholder
        if all_scores:
            metrics["dpo/sample_f1_mean"] = float(np.mean(all_scores))
            metrics["dpo/well_formed_rate"] = float(np.mean(formed))
        if pairs:
            metrics["dpo/chosen_f1_mean"] = float(np.mean([p["chosen_score"] for p in pairs]))
            metrics["dpo/rejected_f1_mean"] = float(np.mean([p["rejected_score"] for p in pairs]))
        self.logger.log_metrics(metrics, step=0)

    def _write_pairs(self, path: Path) -> None:
        table = pa.Table.from_pylist(self.pairs, schema=PAIR_SCHEMA)
        with atomic_file(path, "wb") as fh:
            pq.write_table(table, fh)
        self.logger.log_artifact(path)

    def _pair_lengths(self) -> list[int]:
        data = PreferenceRows(self.pairs, self.processor, self.cfg.data.data_root)
        out = []
        for i in range(len(data)):
            ex = data[i]
            n = len(ex["prompt_input_ids"])
            out.append(2 * n + len(ex["chosen_input_ids"]) + len(ex["rejected_input_ids"]))
        return out

    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches (pair indices) of ``epoch``; a pure function of config + epoch."""
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
        if not self.pairs:
            return 0
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
            "num_rows": len(self.pairs),
        }

    # -- train -----------------------------------------------------------------------------
    def _batches(self, epoch: int, start: int) -> Iterator[dict[str, Any]]:
        plan = self._epoch_plan(epoch)[start:]
        data = PreferenceRows(self.pairs, self.processor, self.cfg.data.data_root)
        return iter(
            DataLoader(
                data, batch_sampler=plan, collate_fn=self.collate, num_workers=self.cfg.train.num_workers
            )
        )

    def _forward_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """DPO loss of one micro-batch (rows ``:B`` chosen, ``B:`` rejected) and its reward statistics."""
        n = batch["input_ids"].shape[0] // 2
        policy = sequence_logprobs(self.engine, batch)
        with torch.no_grad():
            reference = sequence_logprobs(self.reference, batch)
        loss, chosen, rejected = dpo_loss(
            policy[:n], policy[n:], reference[:n], reference[n:], beta=self.cfg.loss.beta
        )
        chosen_tokens = (batch["labels"][:n, 1:] != -100).sum(-1).to(policy.device)
        nll = chosen_nll(policy[:n], chosen_tokens)
        stats = {
            "rewards_chosen": float(chosen.mean()),
            "rewards_rejected": float(rejected.mean()),
            "rewards_accuracy": float((chosen > rejected).float().mean()),
            "rewards_margin": float((chosen - rejected).mean()),
            "nll_chosen": float(nll.detach()),
        }
        if self.cfg.loss.rpo_alpha > 0:
            loss = loss + self.cfg.loss.rpo_alpha * nll
        return loss, stats

    def _log_params(self) -> None:
        derived = {
            "derived.total_steps": self.total_steps,
            "derived.num_pairs": len(self.pairs),
            "derived.trainable_params": sum(
                p.numel() for p in self.engine.module.parameters() if p.requires_grad
            ),
            "derived.world_size": self.dist.world_size,
            "derived.zero_stage": zero_stage(self.ds_config),
        }
        params = {**flatten_params(self.cfg.model_dump(mode="json")), **derived}
        self.logger.log_params({f"{self.stage}.{k}": v for k, v in params.items()})
        if self.resumed_from is not None:  # a metric, not a param: a retried run may log it again
            self.logger.log_metrics(
                {f"{self.stage}/resumed_from_step": float(self.state.step)}, step=self.state.step
            )

    def _log(
        self, losses: list[float], stats: list[dict[str, float]], meter: ThroughputMeter
    ) -> dict[str, float]:
        s, w = self.stage, self.dist.world_size
        rates = meter.window()
        metrics = {
            f"{s}/loss": mean_across_ranks(float(np.mean(losses)), self.dist),
            f"{s}/lr": float(self.engine.get_lr()[0]),
            f"{s}/epoch": self.state.epoch
            + self.state.batch_in_epoch / max(len(self._epoch_plan(self.state.epoch)), 1),
            f"{s}/samples_per_s": rates["samples_per_s"] * w,
            f"{s}/tokens_per_s": rates["tokens_per_s"] * w,
            **{f"{s}/{k}": float(np.mean([x[k] for x in stats])) for k in stats[0]},
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
            A :class:`TrainResult` (``samples`` count preference pairs).

        Raises:
            NonFiniteLossError: the loss of a micro-batch is NaN/Inf (names the step and pair ids).
        """
        cfg, st, engine = self.cfg.train, self.state, self.engine
        if self.dist.is_main:
            self._log_params()
        meter, losses, stats, metrics = ThroughputMeter(), [], [], {}
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
                loss, batch_stats = self._forward_loss(batch)
                losses.append(
                    check_finite_loss(loss, stage=self.stage, step=st.step + 1, batch_ids=ids, dist=self.dist)
                )
                stats.append(batch_stats)
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
                bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{batch_stats['rewards_accuracy']:.2f}")
                if st.step % cfg.log_every == 0 or st.step == self.total_steps:
                    metrics = self._log(losses, stats, meter)
                    self.last_loss, losses, stats = metrics[f"{self.stage}/loss"], [], []
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
            num_examples=len(self.pairs),
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
            "preference_pairs": str(self.output_dir / PAIRS_FILE),
            "num_pairs": len(self.pairs),
            "steps": self.state.step,
            "final_loss": self.last_loss,
            "resumed_from": self.resumed_from,
            "config": self.cfg.model_dump(mode="json"),
        }
        return save_hf_model(
            self.engine,
            self.tokenizer,
            self.output_dir / "model",
            dist=self.dist,
            provenance=provenance,
            merge_lora=self.cfg.lora.enabled,
        )

    def cleanup(self) -> None:
        """Drop the engine and the reference model (the process group stays for the next recipe)."""
        self.engine = None
        self.reference = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_dpo(
    cfg: DPOConfig, logger: MetricLogger | None = None, *, scorer: ReportScorer | None = None
) -> TrainResult:
    """Set up (incl. pair sampling), train, save, clean up: the entry point of the Dagster asset.

    Args:
        cfg: validated DPO config.
        logger: metrics backend.
        scorer: report scorer (default :class:`LabelerScorer`).
    """
    return run_recipe(DPORecipe(cfg, logger, scorer=scorer))


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m model.recipes.dpo --config <yaml|profile> [--set key=value ...]``."""
    args = parse_recipe_cli("XMed stage 3: DPO on report-F1-ranked samples", argv)
    result = run_dpo(load_recipe_config("dpo", args.config, args.set))
    print(f"dpo: {result.steps} steps on {result.num_examples} pairs, final loss {result.final_loss:.4f}")


if __name__ == "__main__":
    main()
