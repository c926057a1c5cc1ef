"""The tiny world of the recipe tests (used by conftest.py's fixtures), written under a tmp folder.

* ``world.data_root``: a few 32x32 PNGs, curated instruction shards (train + a val row that must be
  skipped), a manifest with spoken queries and their 1-second WAVs;
* ``world.tokenizer_dir`` / ``world.architecture``: a tokenizer trained on those texts and a YAML
  of a model far smaller than the ci one (32 px images, 4x4 grid, 1-layer LLM);
* ``world.checkpoint`` / ``world.checkpoint_no_audio``: that model saved with ``save_pretrained``
  (with and without an audio encoder) to start the later stages from;
* ``fake_reasoning_builder``: a stand-in for ``model.reasoning.build_reasoning_dataset`` (5-step
  answers, reference report in ``target``); ``CharF1Scorer``: a stand-in report scorer.

Helpers build configs from the SHIPPED ci YAML files with the paths overridden, so the ci configs
themselves are exercised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import yaml
from PIL import Image

from model.data.schema import IMAGE_SCHEMA, INSTRUCTION_SCHEMA
from model.recipes.config import load_recipe_config
from model.tokenizer import train_tokenizer
from model.vlm import build_tiny_vlm_for_tokenizer

ARCH = {
    "image_size": 32,
    "grid": 4,
    "vision_hidden": 16,
    "vision_layers": 1,
    "text_hidden": 32,
    "text_layers": 1,
    "heads": 2,
    "intermediate": 64,
    "max_positions": 320,
    "projector_hidden": 32,
    "with_audio": True,
    "audio_hidden": 16,
    "audio_layers": 1,
    "audio_seconds": 1,
    "audio_pool": 5,
    "tie_word_embeddings": True,
}
N_IMAGES = 6
QUESTIONS = [
    ("By which modality was this image obtained?", ["CT", "MRI", "X-ray"]),
    ("Is this image normal?", ["Yes", "No"]),
    (
        "Please find the liver and output its bounding box.",
        ["<ref>liver</ref><box>[[120, 340, 560, 780]]</box>"],
    ),
    ("Locate the right frontal lobe.", ["Sorry, I cannot find the right frontal lobe in the image."]),
]
TASKS = ["single_label", "vqa_closed", "region_detection", "guardrail"]
FIVE_STEPS = (
    "Step 1: The image is a chest X-ray.\nStep 2: The lungs are examined.\nStep 3: {finding}.\n"
    "Step 4: This suggests {label}.\nStep 5: Findings: {finding}. Impression: {label}."
)


@dataclass(frozen=True)
class World:
    root: Path
    data_root: Path
    shards: Path
    manifest_dir: Path
    tokenizer_dir: Path
    architecture: Path
    checkpoint: Path
    checkpoint_no_audio: Path


def _images(data_root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES):
        rel = f"raw/images/site/P{i:03d}.png"
        (data_root / rel).parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        Image.fromarray(arr, "L").save(data_root / rel)
        paths.append(rel)
    return paths


def _instruction(i: int, task: str, image: str, q: str, a: str, split: str = "train") -> dict:
    return {
        "id": f"P{i:03d}:{task}:{len(q)}:{a[:3]}",
        "task": task,
        "images": [image],
        "image_ids": [Path(image).stem],
        "width": 32,
        "height": 32,
        "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}],
        "patient_id": f"P{i:03d}",
        "split": split,
        "site": "site",
        "site_role": "internal",
        "modality": "xray",
        "source": "test",
        "template_id": 0,
        "target": "{}",
    }


def _shards(data_root: Path, images: list[str]) -> Path:
    rows = []
    for i, image in enumerate(images):
        for task, (q, answers) in zip(TASKS, QUESTIONS, strict=True):
            rows.append(_instruction(i, task, image, q, answers[i % len(answers)]))
    rows.append(_instruction(99, "vqa_closed", images[0], "Held out?", "Yes", split="val"))
    out = data_root / "curated" / "shards"
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=INSTRUCTION_SCHEMA), out / "part-00000.parquet")
    return out


def _manifest(data_root: Path, images: list[str]) -> Path:
    t = np.arange(8000) / 16000
    recs = []
    for i, image in enumerate(images):
        queries = []
        for k in range(2):
            wav = f"raw/audio/P{i:03d}_{k}.wav"
            (data_root / wav).parent.mkdir(parents=True, exist_ok=True)
            sf.write(data_root / wav, 0.3 * np.sin(2 * np.pi * (200 + 40 * i + 90 * k) * t), 16000)
            queries.append(
                {"text": "Is this image normal?", "audio_path": wav, "answer": "yes" if (i + k) % 2 else "no"}
            )
        recs.append(
            {
                "image_id": f"P{i:03d}",
                "source": "test",
                "patient_id": f"P{i:03d}",
                "visit_index": 0,
                "visit_month": 0.0,
                "site": "site",
                "site_role": "internal",
                "split": "train" if i < N_IMAGES - 1 else "test",
                "modality": "xray",
                "body_part": "chest",
                "image_path": image,
                "width": 32,
                "height": 32,
                "image_sha256": "0" * 64,
                "findings": ["nodule" if i % 2 else "normal"],
                "report_findings": "A nodule is seen." if i % 2 else "The lungs are clear.",
                "report_impression": "Pulmonary nodule." if i % 2 else "Normal chest.",
                "spoken_queries": queries,
            }
        )
    out = data_root / "manifest"
    (out / "images").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(recs, schema=IMAGE_SCHEMA), out / "images" / "part-00000.parquet")
    return out


def fake_reasoning_builder(manifest_dir, *, out_path, data_root, split):
    """Stand-in for ``model.reasoning.build_reasoning_dataset``: report rows with a 5-step answer."""
    rows = []
    for rec in pq.read_table(Path(manifest_dir) / "images").to_pylist():
        if rec["split"] != split:
            continue
        label = rec["report_impression"].rstrip(".")
        finding = rec["report_findings"].rstrip(".")
        row = _instruction(
            int(rec["image_id"][1:]),
            "report",
            rec["image_path"],
            "Reason step by step and write the report.",
            FIVE_STEPS.format(finding=finding, label=label),
            split=split,
        )
        row["id"] = f"{rec['image_id']}:reasoning"
        reference = f"{rec['report_findings']} Impression: {rec['report_impression']}"
        row["target"] = json.dumps({"reference_report": reference, "findings": rec["report_findings"]})
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=INSTRUCTION_SCHEMA), out_path)
    return {"stage": "reasoning", "num_rows": len(rows), "out_path": str(out_path), "split": split}


class CharF1Scorer:
    """Stand-in report scorer: F1 of the CHARACTER sets of the answer's step 5 and the reference.

    Character sets (not words or labels) so that the random text of an untrained tiny model still
    gets scores that differ between samples.
    """

    def score(self, answer: str, reference: str) -> float:
        p, r = set(answer.split("Step 5:", 1)[-1].lower()), set(reference.lower())
        hit = len(p & r)
        return 0.0 if hit == 0 else 2 * hit / (len(p) + len(r))


def _texts() -> list[str]:
    texts = [q for q, _ in QUESTIONS] + [a for _, ans in QUESTIONS for a in ans]
    texts += [
        FIVE_STEPS.format(finding="A nodule is seen", label="Pulmonary nodule"),
        "Answer the spoken question",
    ]
    return texts * 5


def save_checkpoint(out: Path, tokenizer, *, with_audio: bool, seed: int = 0) -> Path:
    """A tiny model built from ARCH and saved like a stage output (weights + tokenizer)."""
    arch = {**ARCH, "with_audio": with_audio}
    model = build_tiny_vlm_for_tokenizer(tokenizer, seed=seed, **arch)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_world(root: Path) -> World:
    """Write the tiny world under ``root``."""
    data_root = root / "data"
    images = _images(data_root)
    shards = _shards(data_root, images)
    manifest = _manifest(data_root, images)
    tok = train_tokenizer(_texts(), vocab_size=320, out_dir=root / "tokenizer")
    arch_path = root / "arch.yaml"
    arch_path.write_text(yaml.safe_dump({"tokenizer": {"vocab_size": 320}, "architecture": ARCH}))
    return World(
        root=root,
        data_root=data_root,
        shards=shards,
        manifest_dir=manifest,
        tokenizer_dir=root / "tokenizer",
        architecture=arch_path,
        checkpoint=save_checkpoint(root / "ckpt_audio", tok, with_audio=True),
        checkpoint_no_audio=save_checkpoint(root / "ckpt_plain", tok, with_audio=False),
    )


def sft_config(world: World, out: Path, *extra: str):
    """The shipped ci SFT config pointed at the tiny world."""
    return load_recipe_config(
        "sft",
        "ci",
        [
            f"output_dir={out}",
            "model.checkpoint_dir=null",
            f"model.tokenizer_dir={world.tokenizer_dir}",
            f"model.architecture={world.architecture}",
            f"data.shards={world.shards}",
            f"data.data_root={world.data_root}",
            "train.progress_bar=false",
            *extra,
        ],
    )


def stage_config(stage: str, world: World, out: Path, *extra: str, checkpoint: Path | None = None):
    """The shipped ci config of a later stage pointed at the tiny world and a tiny checkpoint."""
    overrides = [
        f"output_dir={out}",
        f"model.checkpoint_dir={checkpoint or world.checkpoint}",
        f"data.manifest_dir={world.manifest_dir}",
        f"data.data_root={world.data_root}",
        "train.progress_bar=false",
    ]
    if stage == "audio":
        overrides.append(f"audio_architecture={world.architecture}")
    return load_recipe_config(stage, "ci", [*overrides, *extra])
