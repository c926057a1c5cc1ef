"""CLI of the reliability-index experiments on a checkpoint and a profile's curated data.

Run: ``python -m validation.reliability --checkpoint runs/demo/audio/model --data-root data/demo
--out runs/demo/evaluation/uncertainty [--questions 200] [--reports 20]``. Writes
``uncertainty_table.md``/``.json``, ``uncertainty_items.json``, ``vqa_auroc.png`` and
``sentence_auroc.png`` into ``--out`` and prints the markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m validation.reliability", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="model folder (save_pretrained + tokenizer)")
    ap.add_argument("--data-root", required=True, help="profile data root, e.g. data/demo")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--shards", default=None, help="curated shards (default: <data-root>/curated/shards)")
    ap.add_argument(
        "--questions", type=int, default=200, help="held-out VQA questions (half closed, half open)"
    )
    ap.add_argument("--reports", type=int, default=20, help="generated reports per split (val and test)")
    ap.add_argument("--ms", type=_ints, default=(5, 10, 15, 20), help="VQA sample counts, e.g. 5,10,15,20")
    ap.add_argument(
        "--per-sentence", type=_ints, default=(1, 2, 3, 4, 5), help="questions per sentence scored"
    )
    ap.add_argument("--sentence-samples", type=int, default=10, help="answers per sentence question (M)")
    ap.add_argument("--target-high", type=float, default=0.1, help="error-rate target of the high level")
    ap.add_argument("--target-medium", type=float, default=0.3, help="error-rate target of the medium level")
    ap.add_argument("--equivalence", choices=("embedding", "exact"), default="embedding",
                    help="clustering of open answers: all-MiniLM-L6-v2 embeddings or exact match")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run :func:`validation.reliability.run_uncertainty_calibration`, print the table."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _parser().parse_args(argv)
    import torch

    from validation.prognosis_assistant import load_assistant
    from validation.reliability.experiment import run_uncertainty_calibration
    from validation.reliability.tables import TABLE_MD
    from validation.uncertainty import EmbeddingEquivalence, ExactMatch

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load_assistant(args.checkpoint)
    result = run_uncertainty_calibration(
        model, processor, shards=args.shards or Path(args.data_root) / "curated" / "shards",
        data_root=args.data_root, out_dir=args.out, n_vqa=args.questions, n_reports=args.reports, ms=args.ms,
        questions=args.per_sentence, seed=args.seed, sentence_samples=args.sentence_samples,
        open_equivalence=EmbeddingEquivalence() if args.equivalence == "embedding" else ExactMatch(),
        target_high=args.target_high, target_medium=args.target_medium, progress=True,
    )  # fmt: skip
    print(Path(result["files"][TABLE_MD]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
