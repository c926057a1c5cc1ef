"""Does the trained model learn? The learning table of the training stages on held-out data.

For held-out curated prompts (patient-level ``test`` split), every task family is scored for the
majority answer, the untrained base model and each training stage's checkpoint
(:mod:`validation.task_families`). A second table compares the reasoning-SFT and DPO checkpoints
on held-out 5-step reasoning prompts by the CheXpert-style F1 of their step-5 report
(:func:`validation.report_labeler.score_reasoning_output`, greedy answers).

CLI::

    python -m validation.learning_report --shards data/demo/curated/shards --data-root data/demo \\
        --manifest data/demo/manifest --out reports/demo \\
        --checkpoint base=runs/demo/base_model/model --checkpoint sft=runs/demo/sft/model ...

writes ``learning_table.md``/``.json`` (and ``dpo_step5.md`` when both ``reasoning_sft`` and ``dpo``
checkpoints are given) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.data.io import atomic_dir, iter_parquet_rows
from validation.task_families import (
    FamilyItem,
    collect_items,
    headline,
    majority_answers,
    majority_predictions,
    model_predictions,
    score_all,
    write_table,
)

__all__ = ["evaluate_checkpoint", "learning_report", "main", "step5_f1"]

log = logging.getLogger(__name__)

#: Generation budget of a 5-step reasoning answer (demo answers are ~560 tokens, max ~780).
REASONING_NEW_TOKENS = 800


def _load(checkpoint: str | os.PathLike):
    from model.pretrained import load_pretrained_vlm
    from model.vlm import XMedProcessor

    model, tok = load_pretrained_vlm(checkpoint, dtype="float32")
    return model.eval(), XMedProcessor.for_model(tok, model.config)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    items: Sequence[FamilyItem],
    *,
    data_root: str | os.PathLike,
    batch_size: int = 32,
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Greedy answers of one checkpoint to ``items`` and their per-family scores."""
    model, processor = _load(checkpoint)
    answers = model_predictions(model, processor, items, data_root=data_root, batch_size=batch_size)
    return score_all(items, answers), answers


def _reasoning_rows(
    manifest: str | os.PathLike, data_root: str | os.PathLike, split: str, limit: int
) -> list[dict]:
    from model.reasoning import build_reasoning_dataset

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reasoning.parquet"
        build_reasoning_dataset(manifest, out_path=path, data_root=data_root, split=split)
        rows = list(iter_parquet_rows(path))
    return rows[:limit]


def step5_f1(
    checkpoint: str | os.PathLike, rows: Sequence[dict], *, data_root: str | os.PathLike, batch_size: int = 16
) -> dict[str, float]:
    """Mean CheXpert-style F1 of the greedy step-5 report against each row's reference report.

    Also returns the share of answers that reach a usable step 5 (an answer without one scores 0).
    """
    from model.generation import batched_greedy
    from model.recipes.dpo import reference_report
    from validation.report_labeler import extract_step5_or_none, score_reasoning_output

    model, processor = _load(checkpoint)
    enc = [processor.encode_prompt(r, data_root) for r in rows]
    answers = batched_greedy(
        model, processor, enc, max_new_tokens=REASONING_NEW_TOKENS, batch_size=batch_size
    )
    scores = [score_reasoning_output(a.text, reference_report(r)) for a, r in zip(answers, rows)]
    reached = [extract_step5_or_none(a.text) is not None for a in answers]
    return {
        "step5_f1": sum(scores) / len(scores),
        "with_step5": sum(reached) / len(reached),
        "n": len(rows),
        "per_prompt": scores,
    }


def paired_step5_difference(candidate: Sequence[float], baseline: Sequence[float]) -> dict[str, float]:
    """``candidate - baseline`` mean step-5 F1 on the same prompts: paired bootstrap 95% CI and counts.

    Raises:
        ValueError: the two lists score different numbers of prompts.
    """
    from validation.benchmarks.compare import paired_bootstrap
    from validation.benchmarks.terms import mean_scores

    if len(candidate) != len(baseline):
        raise ValueError(f"{len(candidate)} candidate scores vs {len(baseline)} baseline scores")
    ci = paired_bootstrap(mean_scores("step5_f1", candidate), mean_scores("step5_f1", baseline))
    return {
        "difference": ci.value,
        "ci_low": ci.ci_low,
        "ci_high": ci.ci_high,
        "better": sum(c > b for c, b in zip(candidate, baseline)),
        "worse": sum(c < b for c, b in zip(candidate, baseline)),
        "same": sum(c == b for c, b in zip(candidate, baseline)),
    }


def _markdown_dpo(result: Mapping[str, Any]) -> str:
    lines = ["| checkpoint | n | mean step-5 CheXpert F1 | answers with a step 5 |", "|---|---:|---:|---:|"]
    for name in ("reasoning_sft", "dpo"):
        r = result[name]
        lines.append(f"| {name} | {r['n']} | {r['step5_f1']:.3f} | {r['with_step5']:.2f} |")
    d = result["dpo_minus_reasoning_sft"]
    lines.append(
        f"\nDPO - reasoning SFT: {d['difference']:+.3f} [95% paired bootstrap CI {d['ci_low']:+.3f}, "
        f"{d['ci_high']:+.3f}]; DPO better on {d['better']} prompts, worse on {d['worse']}, same on {d['same']}."
    )
    return "\n".join(lines) + "\n"


def learning_report(
    *,
    shards: str | os.PathLike,
    data_root: str | os.PathLike,
    checkpoints: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    manifest: str | os.PathLike | None = None,
    split: str = "test",
    per_family: int = 150,
    reasoning_prompts: int = 48,
    seed: int = 0,
) -> dict[str, Any]:
    """Score the majority answer and every checkpoint on the same held-out items; write the tables.

    Args:
        shards: curated instruction shards (train rows give the majority answers).
        data_root: root the rows' image paths are relative to.
        checkpoints: ``name -> HF model folder``, in column order (e.g. base, sft, ..., audio).
        out_dir: output folder (replaced atomically).
        manifest: the image manifest folder; with ``reasoning_sft`` and ``dpo`` checkpoints, the
            step-5 F1 comparison runs on ``reasoning_prompts`` held-out reasoning prompts.
        split: held-out split.
        per_family: items sampled per family.
        reasoning_prompts: held-out reasoning prompts for the DPO comparison.
        seed: item sampling seed.

    Returns:
        The JSON-able result (also written as ``learning_table.json``).
    """
    items = collect_items(shards, split=split, per_family=per_family, seed=seed)
    counts = dict(Counter(it.family for it in items))
    majority = majority_answers(shards)
    columns = {"majority": score_all(items, majority_predictions(items, majority))}
    timings: dict[str, float] = {}
    samples: dict[str, list[dict[str, str]]] = {}
    for name, ckpt in checkpoints.items():
        t0 = time.perf_counter()
        columns[name], answers = evaluate_checkpoint(ckpt, items, data_root=data_root)
        timings[name] = time.perf_counter() - t0
        samples[name] = [
            {"family": it.family, "gold": it.gold, "answer": a}
            for it, a in list(zip(items, answers))[:: max(1, len(items) // 40)]
        ]
        log.info("%s: %s", name, {f: round(v, 3) for f, (_, v) in headline(columns[name]).items()})
    result: dict[str, Any] = {
        "split": split,
        "counts": counts,
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "scores": columns,
        "eval_seconds": timings,
    }
    if manifest is not None and {"reasoning_sft", "dpo"} <= set(checkpoints):
        rows = _reasoning_rows(manifest, data_root, split, reasoning_prompts)
        step5 = {k: step5_f1(checkpoints[k], rows, data_root=data_root) for k in ("reasoning_sft", "dpo")}
        step5["dpo_minus_reasoning_sft"] = paired_step5_difference(
            step5["dpo"]["per_prompt"], step5["reasoning_sft"]["per_prompt"]
        )
        result["dpo_step5"] = step5
    with atomic_dir(out_dir) as tmp:
        write_table(Path(tmp) / "learning_table.md", columns, counts)
        (Path(tmp) / "learning_table.json").write_text(json.dumps(result, indent=2))
        (Path(tmp) / "sample_answers.json").write_text(json.dumps(samples, indent=1))
        if "dpo_step5" in result:
            (Path(tmp) / "dpo_step5.md").write_text(_markdown_dpo(result["dpo_step5"]))
    return result


def _checkpoint_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--checkpoint expects NAME=PATH, got {text!r}")
    return name, path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--manifest")
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", action="append", type=_checkpoint_arg, default=[])
    ap.add_argument("--split", default="test")
    ap.add_argument("--per-family", type=int, default=150)
    ap.add_argument("--reasoning-prompts", type=int, default=48, help="held-out reasoning prompts (at most)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = learning_report(
        shards=args.shards,
        data_root=args.data_root,
        checkpoints=dict(args.checkpoint),
        out_dir=args.out,
        manifest=args.manifest,
        split=args.split,
        per_family=args.per_family,
        reasoning_prompts=args.reasoning_prompts,
    )
    print((Path(args.out) / "learning_table.md").read_text())
    if "dpo_step5" in result:
        print(_markdown_dpo(result["dpo_step5"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
