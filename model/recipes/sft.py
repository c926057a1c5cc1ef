"""Stage 1 recipe: supervised instruction tuning (SFT) of the XMed VLM on the curated mix.

Reads top to bottom like a torchtune recipe (``recipes/lora_dpo_single_device.py``):
``SFTRecipe.__init__`` (validate) -> :meth:`~SFTRecipe.setup` (process group, tokenizer + model,
freeze/LoRA, data, DeepSpeed engine, resume) -> :meth:`~SFTRecipe.train` (the one loop) ->
:meth:`~SFTRecipe.save_checkpoint` (final HF model + provenance) -> :meth:`~SFTRecipe.cleanup`.

Data: the ``train`` rows of the curated shards (INSTRUCTION_SCHEMA: image-level, region-level,
guardrail and prognosis tasks), re-weighted per task (``data.task_weights``), optionally preceded by
a warm-up phase of ``data.warmup.steps`` steps on its own task mix (a curriculum), encoded on the fly by
:class:`~model.vlm.processor.XMedProcessor` (images relative to ``data.data_root``) and batched by
:class:`~model.collators.SFTCollator`. Batches are length-grouped within windows (seeded), so an
interrupted run replays exactly the same batches after ``resume``.

Loss: mean next-token cross-entropy over the answer tokens (``loss_only=True`` forward), weighted per
answer length (``train.loss_weighting``); with ``distill.weight > 0`` the distilled rows' tokens also
learn a frozen teacher's distribution (:mod:`model.recipes.distill`); with
``data.image_label_weight > 0`` the model's image classifier adds its cross-entropy on each image's
modality (the image-level auxiliary loss; not with distillation).
A NaN/Inf loss stops the run with :class:`~model.recipes._common.NonFiniteLossError` before the
backward pass, so no broken checkpoint is written.

CLI: ``python -m model.recipes.sft --config model/configs/recipes/sft/demo.yaml [--set key=value ...]``
(multi-GPU: ``deepspeed --num_gpus N -m model.recipes.sft --config ...``).
"""

from __future__ import annotations

import copy
import functools
import gc
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
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
from model.recipes.config import (
    DRILL_TASK,
    FreezeSettings,
    LoraSettings,
    SFTConfig,
    SFTModelInit,
    load_recipe_config,
)
from model.recipes.distill import AnswerDistiller
from model.recipes.metric_logging import MetricLogger, StdoutLogger, flatten_params, system_metrics
from model.tokenizer import ROLE_NAMES, load_tokenizer
from model.vlm import XMedProcessor, build_tiny_vlm_for_tokenizer, count_parameters, freeze, read_architecture
from model.vlm.processor import SequenceTooLongError

__all__ = [
    "TRAIN_SPLIT",
    "WARMUP_EPOCH",
    "CollateWithIds",
    "InstructionRows",
    "SFTRecipe",
    "complementary_modality_questions",
    "lookup_drills",
    "main",
    "mcq_evidence_answers",
    "modality_evidence_answers",
    "run_sft",
    "shuffled_mcq_rows",
    "token_lengths",
]

#: The only split a training recipe reads.
TRAIN_SPLIT = "train"
#: ``TrainState.epoch`` of the warm-up phase (``data.warmup``); the main mix's epochs count from 0.
WARMUP_EPOCH = -1
#: seed key of the warm-up phase's pool and batch order (kept apart from the main epochs' keys)
_WARMUP_SEED_KEY = 1_000_003
_COLUMNS = ["id", "task", "images", "conversations", "split", "modality"]


# ---------------------------------------------------------------------------------------------
# data pieces
# ---------------------------------------------------------------------------------------------


def balance_by_answer(idx: Sequence[int], answers: Sequence[str], rng: np.random.Generator) -> list[int]:
    """``idx`` resampled so that every distinct answer has as many rows as the most common one.

    Answers are compared stripped and lower-cased. A rarer answer's rows are repeated
    ``int(n_max / n)`` times plus a seeded sample of the remainder (without replacement), so the
    share of each answer is exact and the result is a pure function of ``rng``'s seed.

    Args:
        idx: row indices of one task.
        answers: the answer of each row of ``idx`` (same order).
        rng: the epoch's generator.

    Returns:
        row indices, grouped by answer in sorted answer order.
    """
    if len(idx) != len(answers):
        raise ValueError(f"balance_by_answer: {len(idx)} rows but {len(answers)} answers")
    groups: dict[str, list[int]] = {}
    for i, a in zip(idx, answers):
        groups.setdefault(a.strip().lower(), []).append(i)
    if not groups:
        return []
    target = max(len(g) for g in groups.values())
    out: list[int] = []
    for _, g in sorted(groups.items()):
        out += g * (target // len(g))
        rest = target % len(g)
        if rest:
            out += sorted(rng.choice(g, size=rest, replace=False).tolist())
    return out


#: closed question naming the image's modality; ``slot`` is the modality's display name
MODALITY_QUESTION = re.compile(r"Is the imaging modality (?P<slot>[^?\n]+)\?")


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """One seeded pick from ``items`` (an element, not a numpy scalar)."""
    return items[int(rng.integers(len(items)))]


def _modality_questions(rows: Sequence[dict]) -> tuple[list[tuple[dict, re.Match, str]], dict[str, str]]:
    """The closed "Is the imaging modality X?" rows (row, match, "yes"/"no") and each modality's display.

    The display name of a modality is read from the rows answered "Yes" (the row's ``modality``
    field names the truth).

    Raises:
        ValueError: a "Yes" row names a modality whose display differs from another "Yes" row's.
    """
    display: dict[str, str] = {}
    matched: list[tuple[dict, re.Match, str]] = []
    for r in rows:
        conv = r["conversations"]
        if r["task"] != "vqa_closed" or len(conv) != 2:
            continue
        m = MODALITY_QUESTION.search(conv[0]["value"])
        answer = conv[1]["value"].strip().rstrip(".").lower()
        if m is None or answer not in ("yes", "no"):
            continue
        matched.append((r, m, answer))
        if answer == "yes":
            known = display.setdefault(r["modality"], m["slot"])
            if known != m["slot"]:
                raise ValueError(
                    f"row {r['id']}: modality {r['modality']!r} asked as {m['slot']!r}, elsewhere as {known!r}"
                )
    return matched, display


def _with_answer(row: dict, answer: str) -> dict:
    """A copy of a two-turn row with its answer replaced (the row itself is left as it is)."""
    question, reply = row["conversations"]
    return {**row, "conversations": [question, {**reply, "value": answer}]}


#: the evidence-first answers of a closed modality question, by ``data.modality_format`` (see
#: :func:`modality_evidence_answers`); ``{asked}`` is the modality the question names
MODALITY_FORMATS = {
    "sentence": "The imaging modality is {display}. {answer}.",
    "restate": "Asked: imaging modality {asked}. Seen: {display}. {answer}.",
    "mirror": "Seen: the imaging modality {display}. {answer}.",
    "adjacent": "The imaging modality is {display} {answer}.",
}


def modality_evidence_answers(rows: Sequence[dict], *, form: str = "sentence") -> list[dict]:
    """Closed modality questions answered evidence first: "The imaging modality is CT. No."

    "Is the imaging modality X?" asks the model to compare a word of the question with what the
    image shows; the tiny demo LLM names the modality reliably (macro-F1 ~1.0) but answers the
    comparison with one fixed word whatever X is. Stating the recognised modality first turns the
    yes/no into a comparison of two words of the text, and the answer says what it rests on (a
    reviewer sees *why* it is "No"). The answer holds exactly one of "Yes"/"No" and no negation
    word, so MultiMedEval's closed accuracy reads it as before. Rows whose modality has no "Yes"
    row (display unknown) are left as they are, and so is every other row.

    The forms (:data:`MODALITY_FORMATS`):

    * ``sentence``: "The imaging modality is CT. No." The yes/no is predicted at the full stop, so
      the model must first move the name it wrote one position on (a previous-token head) and then
      match it against the question: a two-step circuit the demo LLM forms slowly.
    * ``restate``: "Asked: imaging modality MRI. Seen: CT. No." The model first copies the name the
      question holds. The demo model did not learn the copy in 2,000 steps: it filled "Asked" with
      the modality it sees (benchmarks/README.md, ninth round).
    * ``mirror``: "Seen: the imaging modality CT. No." The seen name follows the same tokens as the
      asked one does in the question. No better than ``sentence`` (eleventh round).
    * ``adjacent``: "The imaging modality is CT No." The yes/no follows the seen name directly, so
      the position that predicts it holds the name itself and one attention step that finds the
      same token in the question (what a mimetic head does from initialisation) decides it
      (``benchmarks/lookup_capacity.py --task compare --no-arrow``, twelfth round).

    Args:
        rows: instruction rows (``task``, ``modality``, ``conversations``, ...).
        form: one of :data:`MODALITY_FORMATS`.

    Returns:
        the rows in their order, the matched ones as copies with the new answer.

    Raises:
        ValueError: as :func:`_modality_questions`, or an unknown form.
    """
    if form not in MODALITY_FORMATS:
        raise ValueError(f"modality answer form {form!r} is not one of {sorted(MODALITY_FORMATS)}")
    matched, display = _modality_questions(rows)
    template = MODALITY_FORMATS[form]
    new_answer = {
        id(r): template.format(asked=m["slot"], display=display[r["modality"]], answer=answer.capitalize())
        for r, m, answer in matched
        if r["modality"] in display
    }
    out = []
    for r in rows:
        if id(r) not in new_answer:
            out.append(r)
            continue
        out.append(_with_answer(r, new_answer[id(r)]))
    return out


#: one lettered option line of a multiple-choice prompt ("B. CT")
MCQ_OPTION = re.compile(r"^([A-H])\. (.+?)\s*$", re.MULTILINE)
#: the evidence-first answers of a multiple-choice question, by ``data.mcq_format`` (see
#: :func:`mcq_evidence_answers`)
MCQ_FORMATS = {
    "sentence": "{option}. The answer is {letter}.",
    "bracket": "The answer is {option} ({letter}).",
}


def mcq_evidence_answers(rows: Sequence[dict], *, form: str = "sentence") -> list[dict]:
    """Multiple-choice questions answered evidence first: "CT. The answer is B." (form ``sentence``)
    or "The answer is CT (B)." (form ``bracket``).

    The letter of the right option is a lookup the tiny demo LLM does badly from the image alone
    (it must find which option line names what it sees and copy the letter in front of it); said
    after the option's text, the letter is a copy of the letter before that text in the prompt.
    In the ``bracket`` form the option's text is spelled as in the prompt (" CT", after a space) and
    the letter follows it at once, which is what an induction head
    (:func:`model.vlm.modeling.init_induction_heads`) completes: the token before "(" is found on its
    option line and the letter two tokens before it is read. The MCQ parser reads the stated letter
    in either form (an answer whose letter and text disagree is scored by its letter). Rows whose
    answer is not one option letter of their prompt's "X. text" lines are left as they are, and so
    is every other row.

    Args:
        rows: instruction rows (``task``, ``conversations``, ...).
        form: a key of :data:`MCQ_FORMATS`.

    Returns:
        the rows in their order, the matched ones as copies with the new answer.

    Raises:
        ValueError: an unknown ``form``.
    """
    if form not in MCQ_FORMATS:
        raise ValueError(f"unknown multiple-choice answer form {form!r}; forms are {list(MCQ_FORMATS)}")
    template = MCQ_FORMATS[form]
    out = []
    for r in rows:
        parts = _mcq_parts(r)
        if parts is None:
            out.append(r)
            continue
        lines, letter = parts
        option = next(m.group(2) for m in lines if m.group(1) == letter)
        out.append(_with_answer(r, template.format(option=option, letter=letter)))
    return out


def _mcq_parts(row: dict) -> tuple[list[re.Match], str] | None:
    """A two-turn MCQ row's option lines ("B. CT" matches) and its answer letter; None when the row
    is no such row or its answer is not the letter of one of its option lines."""
    conv = row["conversations"]
    if row["task"] != "mcq" or len(conv) != 2:
        return None
    lines = list(MCQ_OPTION.finditer(conv[0]["value"]))
    letter = conv[1]["value"].strip().rstrip(".").strip("()")
    return (lines, letter) if letter in {m.group(1) for m in lines} else None


def shuffled_mcq_rows(rows: Sequence[dict], copies: int, rng: np.random.Generator) -> list[dict]:
    """For each multiple-choice row, ``copies`` copies with the option texts in a seeded new order.

    The letters stay in place ("A." to "D." in order) and the texts move, so the right letter
    changes while the image, the question and the right option's text do not: the letter can only
    be read off the prompt's option lines, not remembered from the image. Each permutation differs
    from the row's own order and from the other copies' (fewer copies when the options have fewer
    orders). Rows whose answer is not one option letter of their "X. text" lines are skipped.

    Args:
        rows: instruction rows; only ``task == "mcq"`` two-turn rows are used.
        copies: permuted copies per row (>= 0).
        rng: seeded generator (the permutations).

    Returns:
        the new rows only (ids suffixed ``#perm<k>``), in the order of their originals.

    Raises:
        ValueError: ``copies`` is negative.
    """
    if copies < 0:
        raise ValueError(f"shuffled_mcq_rows: copies must be >= 0, got {copies}")
    out: list[dict] = []
    for r in rows:
        parts = _mcq_parts(r)
        if parts is None or len(parts[0]) < 2:
            continue
        lines, letter = parts
        question, reply = r["conversations"]
        letters, texts = [m.group(1) for m in lines], [m.group(2) for m in lines]
        seen = {tuple(range(len(texts)))}
        n_orders = math.factorial(len(texts))
        for k in range(min(copies, n_orders - 1)):
            order = tuple(range(len(texts)))
            while order in seen:
                order = tuple(int(i) for i in rng.permutation(len(texts)))
            seen.add(order)
            moved = [texts[i] for i in order]
            text = question["value"]
            for m, new_text in sorted(zip(lines, moved), key=lambda x: -x[0].start()):
                text = text[: m.start(2)] + new_text + text[m.end(2) :]
            new_letter = letters[order.index(letters.index(letter))]
            out.append(
                {
                    **r,
                    "id": f"{r['id']}#perm{k}",
                    "conversations": [{**question, "value": text}, {**reply, "value": new_letter}],
                }
            )
    return out


def complementary_modality_questions(rows: Sequence[dict], rng: np.random.Generator) -> list[dict]:
    """For each closed "Is the imaging modality X?" row, the same image asked about another modality.

    Complementary pairs in the manner of VQA v2's balancing: the pair differs only in the named
    modality and has opposite answers, so neither the image alone nor the question alone predicts
    the answer. The display name of each modality is read from the rows answered "Yes" (the row's
    ``modality`` field names the truth). A "Yes" row gets a "No" twin naming a seeded other
    modality; a "No" row gets a "Yes" twin naming its own modality.

    Args:
        rows: instruction rows (``task``, ``modality``, ``conversations``, ...).
        rng: seeded generator (the pick of the other modality).

    Returns:
        the new rows only (ids suffixed ``#complement``), in the order of their originals.

    Raises:
        ValueError: a "Yes" row names a modality whose display differs from another "Yes" row's.
    """
    matched, display = _modality_questions(rows)
    names = sorted(display)
    out: list[dict] = []
    for r, m, answer in matched:
        if answer == "yes":
            others = [display[k] for k in names if k != r["modality"]]
            if not others:
                continue
            slot, flipped = _pick(rng, others), "No"
        else:
            if r["modality"] not in display:
                continue
            slot, flipped = display[r["modality"]], "Yes"
        question, reply = r["conversations"]
        text = question["value"]
        out.append(
            {
                **r,
                "id": f"{r['id']}#complement",
                "conversations": [
                    {**question, "value": text[: m.start("slot")] + slot + text[m.end("slot") :]},
                    {**reply, "value": flipped},
                ],
            }
        )
    return out


#: how a lookup drill names the option to find (the modality one is the corpus' own MCQ wording)
_DRILL_LOOKUP_LEADS = ("Which option is {word}?", "Find {word} among the options.")
_DRILL_MODALITY_LOOKUP = "Based on this {word} image, answer the multiple-choice question.\nWhich imaging modality was used for this image?"
_DRILL_COMPARE = "Is {first} the same as {second}? Answer yes or no."
_DRILL_MODALITY_COMPARE = "Based on this {first} image, Is the imaging modality {second}?"


def lookup_drills(rows: Sequence[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """Synthetic in-context lookup rows: the answer is in the prompt, found by matching a word.

    Multiple-choice letters and closed "Is the imaging modality X?" answers both need the model to
    match a word against the words of its prompt (which option line names it; does the question
    name it). The tiny demo LLM does not learn that match from the curated rows: it answers "Based
    on this CT image ... A. MRI B. CT ..." at chance. Half of these rows are lookups (four options
    drawn from the MCQ rows' option texts; the prompt names one; the answer is its letter), half
    comparisons (two such words, the same in half of them; "Yes"/"No"). Half the named words are
    modality names (the closed questions' displays). Where the named word is a modality, half the
    rows use the corpus' "Based on this <modality> image" wording with an image of that modality;
    the others borrow any row's image (the prompt format has one). Every row is ``split="train"``,
    task :data:`~model.recipes.config.DRILL_TASK`. Measured: 8,000 of them in the demo SFT leave
    drill lookups at chance (benchmarks/README.md, seventh round).

    Args:
        rows: the curated ``train`` rows (their MCQ options, modality displays, footers and images).
        n: number of rows to make.
        rng: seeded generator.

    Returns:
        ``n`` new rows, ids ``lookup_drill-<i>``.

    Raises:
        ValueError: fewer than four distinct option texts, or no MCQ or single-image row to copy.
    """
    words: set[str] = set()
    footers: set[str] = set()
    for r in rows:
        if r["task"] == "mcq":
            prompt = r["conversations"][0]["value"]
            words.update(text for _, text in MCQ_OPTION.findall(prompt))
            footers.add(prompt.rsplit("\n", 1)[-1])
    vocab = sorted(words)
    image_rows = [r for r in rows if len(r["images"]) == 1]
    if len(vocab) < 4 or not image_rows:
        raise ValueError(
            f"lookup drills need MCQ rows with >= 4 distinct option texts and single-image rows; "
            f"got {len(vocab)} option texts, {len(image_rows)} single-image rows"
        )
    _, display = _modality_questions(rows)
    by_display = {display[m]: [r for r in image_rows if r["modality"] == m] for m in display}
    by_display = {k: v for k, v in by_display.items() if v}
    footer_list = sorted(footers)
    modality_names = sorted(by_display)
    out: list[dict] = []
    for i in range(n):
        names = modality_names if modality_names and rng.random() < 0.5 else vocab
        word = _pick(rng, names)
        in_corpus_wording = word in by_display and rng.random() < 0.5
        pool = by_display[word] if in_corpus_wording else image_rows
        image_row = _pick(rng, pool)
        if i % 2 == 0:
            others = [w for w in vocab if w != word]
            options = [word, *(others[j] for j in rng.choice(len(others), size=3, replace=False))]
            order = rng.permutation(4)
            lines = [f"{'ABCD'[k]}. {options[j]}" for k, j in enumerate(order)]
            lead = (_DRILL_MODALITY_LOOKUP if in_corpus_wording else _pick(rng, _DRILL_LOOKUP_LEADS)).format(
                word=word
            )
            footer = _pick(rng, footer_list)
            question = "\n".join([lead, *lines, footer])
            answer = "ABCD"[int(np.flatnonzero(order == 0)[0])]
        else:
            same = rng.random() < 0.5
            if same:
                second = word
            else:
                others = [w for w in (modality_names if in_corpus_wording else vocab) if w != word]
                second = _pick(rng, others)
            template = _DRILL_MODALITY_COMPARE if in_corpus_wording else _DRILL_COMPARE
            question = template.format(first=word, second=second)
            answer = "Yes" if same else "No"
        out.append(
            {
                "id": f"{DRILL_TASK}-{i}",
                "task": DRILL_TASK,
                "images": list(image_row["images"]),
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
                "split": TRAIN_SPLIT,
                "modality": image_row["modality"],
            }
        )
    return out


class InstructionRows(Dataset):
    """Instruction rows encoded on the fly: ``processor.encode_example`` plus the record ``id``."""

    def __init__(self, rows: Sequence[dict], processor: XMedProcessor, data_root: str) -> None:
        self.rows, self.processor, self.data_root = rows, processor, data_root

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self.processor.encode_example(self.rows[i], self.data_root)
        ex["id"] = self.rows[i]["id"]
        return ex


@dataclass
class CollateWithIds:
    """A collator's batch plus ``ids`` (the examples' record ids, for error messages)."""

    collator: Any

    def __call__(self, examples: list[dict]) -> dict[str, Any]:
        batch = self.collator(examples)
        batch["ids"] = [ex["id"] for ex in examples]
        return batch


def token_lengths(rows: Sequence[dict], processor: XMedProcessor) -> list[int]:
    """Token length of each row exactly as :meth:`XMedProcessor.encode_example` builds it.

    Tokenizes all turn bodies in one batched call (fast) instead of encoding every example with its
    images; placeholders count ``num_image_tokens`` / ``num_audio_tokens`` each.
    """
    if not rows:
        return []
    tok = processor.tokenizer

    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    head = {who: n(f"<|im_start|>{role}\n") for who, role in ROLE_NAMES.items()}
    tail = n("\n")
    turns = [(t["from"], t["value"]) for r in rows for t in r["conversations"]]
    bodies = tok([v + "<|im_end|>" for _, v in turns], add_special_tokens=False)["input_ids"]
    extra_img = processor.num_image_tokens - 1
    extra_aud = max(processor.num_audio_tokens - 1, 0)
    per_turn = [
        head[who]
        + len(ids)
        + tail
        + ids.count(processor.image_token_id) * extra_img
        + (ids.count(processor.audio_token_id) * extra_aud if processor.audio_token_id is not None else 0)
        for (who, _), ids in zip(turns, bodies, strict=True)
    ]
    out, k = [], 0
    for r in rows:
        m = len(r["conversations"])
        out.append(sum(per_turn[k : k + m]))
        k += m
    return out


# ---------------------------------------------------------------------------------------------
# model pieces
# ---------------------------------------------------------------------------------------------


def _load_model(m: SFTModelInit):
    """Tokenizer + model: a pretrained local checkpoint, or a tiny VLM built from the architecture YAML."""
    dtype = torch.bfloat16 if m.dtype == "bfloat16" else torch.float32
    if m.checkpoint_dir is not None:
        kw = {"local_files_only": True, "trust_remote_code": m.trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(m.checkpoint_dir, **kw)
        model = AutoModelForImageTextToText.from_pretrained(m.checkpoint_dir, dtype=dtype, **kw)
        return tokenizer, model
    tokenizer = load_tokenizer(m.tokenizer_dir)
    arch, _ = read_architecture(m.architecture)
    return tokenizer, build_tiny_vlm_for_tokenizer(tokenizer, seed=m.init_seed, **arch).to(dtype)


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


def _enable_gradient_checkpointing(model) -> None:
    """Recompute activations in backward: the whole model if it supports it, else its LLM."""
    target = model if getattr(model, "supports_gradient_checkpointing", False) else model.language_model
    target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


# ---------------------------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------------------------


class SFTRecipe:
    """Supervised fine-tuning of the XMed VLM with DeepSpeed (see the module docstring).

    Args:
        cfg: the validated :class:`~model.recipes.config.SFTConfig`.
        logger: metrics backend (default :class:`StdoutLogger`); the Dagster asset passes an
            :class:`~model.recipes.metric_logging.MlflowLogger`.
        stage: name used in metrics, checkpoints and provenance (``reasoning_sft`` reuses this
            recipe on its own dataset).

    Raises:
        TypeError: ``cfg`` is not an ``SFTConfig``.
    """

    def __init__(self, cfg: SFTConfig, logger: MetricLogger | None = None, *, stage: str = "sft") -> None:
        if not isinstance(cfg, SFTConfig):
            raise TypeError(f"SFTRecipe needs an SFTConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.stage = stage
        self.logger = logger or StdoutLogger()
        self.output_dir = Path(cfg.output_dir)
        self._bf16 = cfg.model.dtype == "bfloat16"
        self.engine = None
        self.distiller: AnswerDistiller | None = None
        self.state = TrainState(epoch=WARMUP_EPOCH if cfg.data.warmup else 0)
        self.resumed_from: str | None = None
        self.last_loss = float("nan")
        self._plan: tuple[int, list[list[int]]] | None = None

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        """Build everything, in dependency order; resume from a checkpoint if one is configured."""
        cfg = self.cfg
        cfg.check_paths()
        # 1. Process group and seeds first: DeepSpeed needs the group, the seed fixes every RNG.
        self.dist: DistInfo = init_distributed()
        if cfg.train.torch_threads is not None:
            torch.set_num_threads(cfg.train.torch_threads)
        seed_everything(cfg.train.seed)
        # 2. DeepSpeed JSON before the model: under ZeRO-3, from_pretrained must see it to shard at load.
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

            self._hf_ds = HfDeepSpeedConfig(self.ds_config)  # must stay alive while the model loads
        # 3. Tokenizer and model; the processor follows the model config (tokens per image, size).
        self.tokenizer, model = _load_model(cfg.model)
        _check_layout(model, self._parent_checkpoint())
        _check_max_length(cfg.data.max_length, model)
        self.processor = XMedProcessor.for_model(self.tokenizer, model.config, max_length=cfg.data.max_length)
        self.distiller = self._make_distiller(model)  # the teacher is copied before any update
        # 4. Freeze / LoRA / gradient checkpointing BEFORE the optimizer sees the parameters.
        model = _apply_freeze_and_lora(model, cfg.freeze, cfg.lora)
        if cfg.train.gradient_checkpointing:
            _enable_gradient_checkpointing(model.get_base_model() if cfg.lora.enabled else model)
        # 5. Data: train rows, exact token lengths (for grouping and the length check), task index.
        self.rows = self._load_rows()
        self._image_label_of = self._image_label_index(model.config)
        self.lengths = token_lengths(self.rows, self.processor)
        self._check_lengths()
        self._by_task = self._task_index()
        self.collate = CollateWithIds(SFTCollator(self.tokenizer.pad_token_id))
        self.total_steps = self._total_steps()
        # 6. DeepSpeed engine (optimizer from the JSON, our warmup + cosine schedule).
        self.engine = self._setup_engine(model)
        if self.distiller is not None:
            self.distiller.teacher.to(self.engine.device)
        # 7. Resume: weights, optimizer, schedule, data position and RNG states.
        ckpt = resume_point(self.output_dir, cfg.train.resume_from, dist=self.dist)
        if ckpt is not None:
            self.state = load_training_checkpoint(
                self.engine, ckpt, dist=self.dist, resume_key=self._resume_key()
            )
            self.resumed_from = str(ckpt)

    def _make_distiller(self, model) -> AnswerDistiller | None:
        """The Learning-without-Forgetting term of ``cfg.distill`` (None when off; see ``distill``)."""
        d, m = self.cfg.distill, self.cfg.model
        if not d.enabled:
            return None
        if d.teacher_dir is None:
            teacher = copy.deepcopy(model)
        else:
            _, teacher = _load_model(
                SFTModelInit(
                    checkpoint_dir=d.teacher_dir, dtype=m.dtype, trust_remote_code=m.trust_remote_code
                )
            )
            for key in ("vocab_size", "num_image_tokens"):
                mine, theirs = getattr(model.config, key, None), getattr(teacher.config, key, None)
                if mine != theirs:
                    raise ValueError(
                        f"distill.teacher_dir {d.teacher_dir}: {key} {theirs} differs from the model's {mine}"
                    )
        own: list[str] = []
        if d.target_only_rows is not None:
            own = pq.read_table(d.target_only_rows, columns=["id"]).column("id").to_pylist()
        return AnswerDistiller(teacher, weight=d.weight, temperature=d.temperature, target_only_ids=own)

    def _parent_checkpoint(self) -> str:
        m = self.cfg.model
        return m.checkpoint_dir or f"scratch(tokenizer={m.tokenizer_dir}, architecture={m.architecture})"

    def _load_rows(self) -> list[dict]:
        d = self.cfg.data
        curated = [r for r in iter_parquet_rows(d.shards, columns=_COLUMNS) if r["split"] == TRAIN_SPLIT]
        kept = d.kept_tasks()
        rows = [r for r in curated if r["task"] in kept]
        if d.complement_modality_questions:
            rows += complementary_modality_questions(rows, np.random.default_rng([self.cfg.train.seed, 11]))
        if d.mcq_shuffles:
            rows += shuffled_mcq_rows(rows, d.mcq_shuffles, np.random.default_rng([self.cfg.train.seed, 17]))
        if d.lookup_drills and DRILL_TASK in kept:  # made from all curated rows, weighted or not
            rows += lookup_drills(curated, d.lookup_drills, np.random.default_rng([self.cfg.train.seed, 13]))
        if not rows:
            raise ValueError(f"{d.shards}: no '{TRAIN_SPLIT}' rows of the configured tasks {sorted(kept)}")
        if d.modality_evidence:
            rows = modality_evidence_answers(rows, form=d.modality_format)
        if d.mcq_evidence:
            rows = mcq_evidence_answers(rows, form=d.mcq_format)
        if d.warmup is not None:
            present = {r["task"] for r in rows}
            missing = sorted(t for t, w in d.warmup.task_weights.items() if w > 0 and t not in present)
            if missing:
                raise ValueError(
                    f"{d.shards}: data.warmup lists task(s) {missing} without '{TRAIN_SPLIT}' rows"
                )
        return rows

    def _check_lengths(self) -> None:
        limit = self.processor.max_length
        too_long = [(r["id"], n) for r, n in zip(self.rows, self.lengths, strict=True) if limit and n > limit]
        if too_long:
            raise SequenceTooLongError(
                f"{len(too_long)} '{TRAIN_SPLIT}' rows exceed max_length={limit} tokens, e.g. {too_long[:3]}; "
                "raise data.max_length (up to the model context) or filter them in curation"
            )

    def _task_index(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, r in enumerate(self.rows):
            out.setdefault(r["task"], []).append(i)
        return out

    def _epoch_pool(self, epoch: int) -> list[int]:
        """Row indices of one epoch: each task repeated ``int(w)`` times + a seeded ``frac(w)`` share.

        The warm-up phase (``epoch == WARMUP_EPOCH``) uses ``data.warmup.task_weights`` (unlisted
        tasks 0); the main epochs ``data.task_weights`` (unlisted tasks 1). A task of
        ``data.balanced_tasks`` is first resampled to equal answer shares (:func:`balance_by_answer`).
        """
        d = self.cfg.data
        if epoch == WARMUP_EPOCH:
            weights, default, key = d.warmup.task_weights, 0.0, _WARMUP_SEED_KEY
        else:
            weights, default, key = d.task_weights, 1.0, epoch
        if not weights and default == 1.0 and not d.balanced_tasks:  # all kept rows, once
            return list(range(len(self.rows)))
        rng = np.random.default_rng([self.cfg.train.seed, key, 7])
        pool: list[int] = []
        for task, idx in sorted(self._by_task.items()):
            w = weights.get(task, default)
            if task in d.balanced_tasks and w > 0:
                idx = balance_by_answer(idx, [self.rows[i]["conversations"][-1]["value"] for i in idx], rng)
            pool += idx * int(w)
            extra = round((w - int(w)) * len(idx))
            if extra:
                pool += sorted(rng.choice(idx, size=extra, replace=False).tolist())
        return pool

    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches (row indices) of ``epoch``; a pure function of config + epoch."""
        if self._plan is None or self._plan[0] != epoch:
            if epoch == WARMUP_EPOCH:
                # exactly warmup.steps optimizer steps: passes over the phase pool, cut to length
                need = self.cfg.data.warmup.steps * self.cfg.train.grad_accum_steps
                plan: list[list[int]] = []
                k = 0
                while len(plan) < need:
                    plan += self._pool_batches(self._epoch_pool(WARMUP_EPOCH), _WARMUP_SEED_KEY + k)
                    k += 1
                plan = plan[:need]
            else:
                plan = self._pool_batches(self._epoch_pool(epoch), epoch)
            self._plan = (epoch, plan)
        return self._plan[1]

    def _pool_batches(self, pool: list[int], key: int) -> list[list[int]]:
        """This rank's micro-batches over ``pool`` (row indices), shuffled by ``(seed, key)``."""
        t = self.cfg.train
        local = epoch_batches(
            [self.lengths[i] for i in pool],
            batch_size=t.micro_batch_size,
            seed=t.seed,
            epoch=key,
            group_window=t.group_window if t.group_by_length else None,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
        )
        return [[pool[i] for i in b] for b in local]

    def _total_steps(self) -> int:
        t = self.cfg.train
        if t.max_steps is not None:
            return t.max_steps
        warm = self.cfg.data.warmup.steps if self.cfg.data.warmup else 0
        return warm + t.num_epochs * max(len(self._epoch_plan(0)) // t.grad_accum_steps, 1)

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
            "warmup": self.cfg.data.warmup.model_dump(mode="json") if self.cfg.data.warmup else None,
            "task_weights": dict(sorted(self.cfg.data.task_weights.items())),
            "balanced_tasks": sorted(self.cfg.data.balanced_tasks),
            "complement_modality_questions": self.cfg.data.complement_modality_questions,
            **self.cfg.data.evidence_options(),
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

    def _forward_loss(self, batch: dict[str, Any], ids: Sequence[str]) -> torch.Tensor:
        """Weighted next-token cross-entropy over the answer tokens of one micro-batch (+ distillation)."""
        weighting = self.cfg.train.loss_weighting
        inputs = self._to_device(batch)
        out = self.engine(
            **inputs, loss_only=True, loss_weighting=weighting, **self._image_label_inputs(inputs, ids)
        )
        if self.distiller is None:
            return out.loss
        return self.distiller.loss(out.logits, inputs, ids, weighting, out.loss)

    def _image_label_index(self, config) -> dict[str, int]:
        """Row id -> class of the row's images for the auxiliary image-level loss (-100: none).

        Raises:
            ValueError: the loss is on but the model has no image classifier.
        """
        if not self.cfg.data.image_label_weight:
            return {}
        names = list(getattr(config, "image_label_names", None) or [])
        if not names:
            raise ValueError(
                "data.image_label_weight > 0 needs a model with an image classifier: set "
                "image_label_names in its architecture (model/configs/model/<profile>.yaml)"
            )
        index = {name: k for k, name in enumerate(names)}
        return {r["id"]: index.get(r.get("modality"), -100) for r in self.rows}

    def _image_label_inputs(self, inputs: dict[str, Any], ids: Sequence[str]) -> dict[str, Any]:
        """The auxiliary image-level loss's forward arguments (none when ``data.image_label_weight`` is 0)."""
        weight = self.cfg.data.image_label_weight
        if not weight or inputs.get("pixel_values") is None:
            return {}
        per_row = torch.tensor([self._image_label_of[i] for i in ids], dtype=torch.long)
        counts = inputs.get("image_counts")
        labels = per_row.repeat_interleave(counts.cpu()) if counts is not None else per_row
        return {"image_labels": labels.to(inputs["pixel_values"].device), "image_label_weight": weight}

    def _log_params(self) -> None:
        derived = {
            "derived.total_steps": self.total_steps,
            "derived.num_rows": len(self.rows),
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

    def _epoch_progress(self) -> float:
        """Main-mix epochs done (0 during the warm-up phase)."""
        st = self.state
        if st.epoch == WARMUP_EPOCH:
            return 0.0
        return st.epoch + st.batch_in_epoch / max(len(self._epoch_plan(st.epoch)), 1)

    def _log(self, losses: list[float], meter: ThroughputMeter) -> dict[str, float]:
        s, w = self.stage, self.dist.world_size
        rates = meter.window()
        metrics = {
            f"{s}/loss": mean_across_ranks(float(np.mean(losses)), self.dist),
            f"{s}/lr": float(self.engine.get_lr()[0]),
            f"{s}/epoch": self._epoch_progress(),
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
                loss = self._forward_loss(batch, ids)
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
            num_examples=len(self._epoch_pool(0)),
            resumed_from=self.resumed_from,
            metrics=metrics,
        )

    # -- final model -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Save ``<output_dir>/model`` (safetensors + tokenizer + ``xmed_provenance.json``)."""
        p = self.cfg.provenance
        provenance = {
            "stage": self.stage,
            "parent_checkpoint": self._parent_checkpoint(),
            "data_version": p.data_version,
            "dagster_run_id": p.dagster_run_id,
            "data": self.cfg.data.model_dump(mode="json"),
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
        """Drop the engine and free memory (the process group stays for the next recipe)."""
        self.engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_sft(cfg: SFTConfig, logger: MetricLogger | None = None) -> TrainResult:
    """Set up, train, save the final model, clean up: the entry point of the Dagster asset.

    Args:
        cfg: validated SFT config (``provenance`` filled by the caller).
        logger: metrics backend (e.g. ``MlflowLogger()`` inside the asset's MLflow run).

    Returns:
        The :class:`TrainResult` with ``model_dir`` set.
    """
    return run_recipe(SFTRecipe(cfg, logger))


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m model.recipes.sft --config <yaml|profile> [--set key=value ...]``."""
    args = parse_recipe_cli("XMed stage 1: supervised instruction tuning", argv)
    result = run_sft(load_recipe_config("sft", args.config, args.set))
    print(f"sft: {result.steps} steps, final loss {result.final_loss:.4f}, model at {result.model_dir}")


if __name__ == "__main__":
    main()
