"""Where a checkpoint loses a pair of modalities it confuses: image tokens, LLM layers or answer rows.

The demo models confuse one pair (MRI and ultrasound) in some seeds and not in others. This
script follows the pair through the model for each checkpoint, on the curated open modality
questions of the two modalities (probes fitted on the ``train`` split, scored on ``test``):

* ``image``: held-out accuracy of a logistic-regression probe on the projected image tokens,
  flattened, averaged over the tokens, and on the summary token when the vision tower has one
  (``summary_token``): is the difference in what the LLM is given?
* ``layers``: the same probe on the LLM hidden state at the position that predicts the answer,
  one per layer (0 = embeddings): does the LLM carry the difference to that position, and to the
  last layer?
* ``answer``: mean probability of each name's first token per true modality, and the cosine of
  their two output-projection rows: does the head read it (two rows pulled together cannot)?

Run: ``python benchmarks/modality_readout.py --checkpoint sft=runs/demo/sft/model
[--checkpoint ...] [--pair mri ultrasound]``; prints one block per checkpoint and writes
``benchmarks/out/modality_readout.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Held-out accuracy of a logistic-regression probe (features standardised on ``train_x``).

    Raises:
        ValueError: a split holds one class only (the accuracy would say nothing).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, y in (("train", train_y), ("test", test_y)):
        if len(set(np.asarray(y).tolist())) < 2:
            raise ValueError(f"the {name} split holds one class only; a probe needs both")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def _rows(shards: Path, pair: Sequence[str]) -> dict[str, list[dict]]:
    from model.data.io import iter_parquet_rows

    rows: dict[str, list[dict]] = {"train": [], "test": []}
    for path in sorted(shards.rglob("*.parquet")):
        for r in iter_parquet_rows(path):
            if r["split"] in rows and r["modality"] in pair and r["id"].endswith(":modality"):
                rows[r["split"]].append(r)
    if not rows["train"] or not rows["test"]:
        raise ValueError(f"{shards}: no open modality question of {list(pair)} in train and test")
    return rows


def readout(checkpoint: str, rows: dict[str, list[dict]], pair: Sequence[str], data_root: Path) -> dict:
    """The three views of one checkpoint (see the module docstring)."""
    import torch

    from model.data.curation import MODALITY_NAMES
    from model.pretrained import load_pretrained_vlm
    from model.vlm import XMedProcessor

    model, tok = load_pretrained_vlm(checkpoint, dtype="float32")
    model.eval()
    proc = XMedProcessor.for_model(tok, model.config)
    first = [tok.encode(MODALITY_NAMES[m], add_special_tokens=False)[0] for m in pair]
    feats: dict[str, dict[str, list]] = {}
    for split, rr in rows.items():
        f = feats[split] = {"flat": [], "mean": [], "summary": [], "layers": [], "p": [], "y": []}
        for r in rr:
            enc = proc.encode_prompt(r, data_root)
            with torch.no_grad():
                img = model.get_image_features(enc["pixel_values"])[0]
                out = model(
                    input_ids=enc["input_ids"][None],
                    pixel_values=enc["pixel_values"],
                    output_hidden_states=True,
                )
            grid = img[: model.config.vision_config.grid_size**2]
            f["flat"].append(grid.flatten().numpy())
            f["mean"].append(grid.mean(0).numpy())
            f["summary"].append(img[-1].numpy())
            f["layers"].append(np.stack([h[0, -1].numpy() for h in out.hidden_states]))
            f["p"].append(out.logits[0, -1].softmax(-1)[first].numpy())
            f["y"].append(pair.index(r["modality"]))
    tr, te = feats["train"], feats["test"]
    ytr, yte = np.array(tr["y"]), np.array(te["y"])
    kinds = ["flat", "mean"] + (["summary"] if model.config.vision_config.summary_token else [])
    image = {k: probe_accuracy(np.array(tr[k]), ytr, np.array(te[k]), yte) for k in kinds}
    ltr, lte = np.array(tr["layers"]), np.array(te["layers"])
    layers = [probe_accuracy(ltr[:, i], ytr, lte[:, i], yte) for i in range(ltr.shape[1])]
    p = np.array(te["p"])
    head = model.get_output_embeddings().weight.detach()
    cosine = torch.nn.functional.cosine_similarity(head[first[0]], head[first[1]], dim=0).item()
    answer = {f"p({pair[j]} | {pair[i]})": float(p[yte == i, j].mean()) for i in range(2) for j in range(2)}
    answer["answer_row_cosine"] = cosine
    answer["accuracy_of_the_larger"] = float((p.argmax(1) == yte).mean())
    return {"n_train": len(ytr), "n_test": len(yte), "image": image, "layers": layers, "answer": answer}


def main(argv: Sequence[str] | None = None) -> int:
    from model.data.curation import MODALITY_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="NAME=HF model folder")
    ap.add_argument("--pair", nargs=2, default=["mri", "ultrasound"], choices=sorted(MODALITY_NAMES))
    ap.add_argument("--shards", default="data/demo/curated/shards")
    ap.add_argument("--data-root", default="data/demo")
    ap.add_argument("--out", default="benchmarks/out/modality_readout.json")
    args = ap.parse_args(argv)
    rows = _rows(Path(args.shards), args.pair)
    result = {"pair": args.pair, "checkpoints": {}}
    for spec in args.checkpoint:
        name, sep, path = spec.partition("=")
        if not sep:
            ap.error(f"--checkpoint expects NAME=PATH, got {spec!r}")
        r = result["checkpoints"][name] = readout(path, rows, args.pair, Path(args.data_root))
        print(f"{name} ({path}), {r['n_train']} train / {r['n_test']} test questions")
        print("  image-token probes: " + ", ".join(f"{k} {v:.2f}" for k, v in r["image"].items()))
        print("  hidden-state probe per layer: " + " ".join(f"{v:.2f}" for v in r["layers"]))
        print("  answer: " + ", ".join(f"{k} {v:.2f}" for k, v in r["answer"].items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
