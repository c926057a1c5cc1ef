"""The base model every training run starts from.

* ``ci`` / ``demo``: a tokenizer trained offline on the curated *train* split, and a tiny VLM
  initialised from ``model/configs/model/<profile>.yaml`` with a fixed seed (the untrained baseline
  the benchmarks compare against).
* ``prod``: a pretrained checkpoint in a local folder (InternVL2-8B), checked, never downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.data.io import atomic_dir, iter_parquet_rows

__all__ = ["build_base_model", "train_split_texts", "weights_digest"]


def train_split_texts(shards_dir: str | os.PathLike) -> Iterator[str]:
    """One text per curated ``train`` instruction row (its turns joined by newlines)."""
    for row in iter_parquet_rows(shards_dir, columns=["split", "conversations"]):
        if row["split"] == "train":
            yield "\n".join(t["value"] for t in row["conversations"])


def weights_digest(model_dir: str | os.PathLike) -> str:
    """sha256 over the model's safetensors files (name + content): the checkpoint's version."""
    import hashlib

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def build_base_model(
    *, shards_dir: str | os.PathLike, architecture_path: str | os.PathLike, out_dir: str | os.PathLike, init_seed: int
) -> dict[str, Any]:
    """Train the tokenizer on the train split and save it with a freshly initialised tiny VLM.

    Args:
        shards_dir: curated instruction shards (``data/<profile>/curated/shards``).
        architecture_path: ``model/configs/model/<profile>.yaml``.
        out_dir: written atomically: ``save_pretrained`` model + tokenizer + ``base_model.json``.
        init_seed: initialisation seed.

    Returns:
        a summary: vocabulary size, parameter counts per part, the weights digest.
    """
    from model.tokenizer import train_tokenizer
    from model.vlm.modeling import build_tiny_vlm_for_tokenizer, count_parameters, read_architecture

    architecture, vocab_size = read_architecture(architecture_path)
    with atomic_dir(out_dir) as tmp:
        tokenizer = train_tokenizer(train_split_texts(shards_dir), vocab_size=vocab_size, out_dir=None)
        model = build_tiny_vlm_for_tokenizer(tokenizer, seed=init_seed, **architecture)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        summary = {
            "vocab_size": len(tokenizer),
            "parameters": count_parameters(model),
            "init_seed": init_seed,
            "architecture": str(architecture_path),
        }
        (tmp / "base_model.json").write_text(json.dumps(summary, indent=2))
    summary["weights_sha256"] = weights_digest(out_dir)
    return summary
