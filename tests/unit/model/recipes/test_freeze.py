"""Freeze policy: parts the config freezes are bit-identical after training; trained parts moved.

The audio stage must leave the vision tower, vision projector and LLM exactly as the DPO model had
them (compared with ``torch.equal`` on every tensor of the saved safetensors) and move only the
audio encoder + audio projector, including when the audio encoder had to be added first.
"""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

from model.recipes.audio import add_audio_encoder, run_audio
from model.recipes.sft import run_sft
from model.tokenizer import load_tokenizer
from model.vlm import XMedVLMForConditionalGeneration, build_tiny_vlm_for_tokenizer, read_architecture
from tests.unit.model.recipes._world import sft_config, stage_config

AUDIO = ("audio_encoder.", "audio_projector.")
TRAINABLE_AUDIO_EXCEPT = ("audio_encoder.embed_positions.",)  # Whisper's fixed sinusoid table


def _split(weights: dict[str, torch.Tensor], prefixes: tuple[str, ...]):
    inside = {k: v for k, v in weights.items() if k.startswith(prefixes)}
    outside = {k: v for k, v in weights.items() if not k.startswith(prefixes)}
    return inside, outside


def _assert_identical(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved == [], f"frozen parameters changed: {moved[:5]}"


def _assert_all_moved(before: dict, after: dict) -> None:
    still = [
        k for k in before if not k.startswith(TRAINABLE_AUDIO_EXCEPT) and torch.equal(before[k], after[k])
    ]
    assert still == [], f"trainable parameters did not move: {still[:5]}"


@pytest.mark.parametrize("start", ["with_audio", "without_audio"])
def test_audio_stage_trains_only_the_audio_path(world, tmp_path, start):
    ckpt = world.checkpoint if start == "with_audio" else world.checkpoint_no_audio
    cfg = stage_config("audio", world, tmp_path / "audio", checkpoint=ckpt)
    result = run_audio(cfg)
    after = load_file(f"{result.model_dir}/model.safetensors")
    audio_after, rest_after = _split(after, AUDIO)
    _, rest_before = _split(load_file(ckpt / "model.safetensors"), AUDIO)
    _assert_identical(rest_before, rest_after)  # vision, projector, LLM: bit-identical
    # the audio path's starting point: the checkpoint's, or the freshly added (seeded) encoder
    start_model = XMedVLMForConditionalGeneration.from_pretrained(ckpt)
    start_model = add_audio_encoder(
        start_model,
        AutoTokenizer.from_pretrained(ckpt),
        architecture=str(world.architecture),
        seed=cfg.train.seed,
    )
    audio_before = {k: v for k, v in start_model.state_dict().items() if k.startswith(AUDIO)}
    assert audio_before.keys() == audio_after.keys() and audio_after
    _assert_all_moved(audio_before, audio_after)


def test_add_audio_encoder_keeps_every_weight(world):
    model = XMedVLMForConditionalGeneration.from_pretrained(world.checkpoint_no_audio)
    tok = load_tokenizer(world.tokenizer_dir)
    assert model.audio_encoder is None
    new = add_audio_encoder(model, tok, architecture=str(world.architecture), seed=0)
    assert new.audio_encoder is not None and new.config.audio_token_id == tok.convert_tokens_to_ids("<audio>")
    assert new.config.num_audio_tokens == 10  # 1 s -> 50 positions / pool 5
    old = model.state_dict()
    _assert_identical(old, {k: v for k, v in new.state_dict().items() if k in old})
    assert add_audio_encoder(new, tok, architecture=str(world.architecture), seed=0) is new


def test_add_audio_encoder_needs_the_audio_settings(world, tmp_path):
    model = XMedVLMForConditionalGeneration.from_pretrained(world.checkpoint_no_audio)
    arch, vocab = read_architecture(world.architecture)
    del arch["audio_pool"]
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump({"tokenizer": {"vocab_size": vocab}, "architecture": arch}))
    with pytest.raises(ValueError, match="audio_pool"):
        add_audio_encoder(model, load_tokenizer(world.tokenizer_dir), architecture=str(path), seed=0)


def test_sft_frozen_vision_stays_identical(world, tmp_path):
    cfg = sft_config(world, tmp_path / "sft", "freeze.vision=true", "train.max_steps=3")
    result = run_sft(cfg)
    tok = load_tokenizer(world.tokenizer_dir)
    arch, _ = read_architecture(world.architecture)
    init = build_tiny_vlm_for_tokenizer(tok, seed=cfg.model.init_seed, **arch).state_dict()
    after = load_file(f"{result.model_dir}/model.safetensors")
    vision_before, _ = _split(init, ("vision_tower.",))
    vision_after, _ = _split(after, ("vision_tower.",))
    _assert_identical(vision_before, vision_after)
    for part in ("projector.", "language_model.model.layers."):
        assert any(not torch.equal(init[k], after[k]) for k in after if k.startswith(part)), part
    audio_before, _ = _split(init, AUDIO)  # SFT freezes audio by default: no audio data
    _assert_identical(audio_before, _split(after, AUDIO)[0])


def test_sft_image_label_loss_trains_the_image_classifier(world, tmp_path):
    """``data.image_label_weight``: every row's images are labelled with the row's modality; the
    classifier moves and so does what it reads (the projector), and a model without one is refused."""
    from model.data.schema import MODALITIES

    doc = yaml.safe_load(world.architecture.read_text())
    doc["architecture"]["image_label_names"] = list(MODALITIES)
    arch = tmp_path / "arch.yaml"
    arch.write_text(yaml.safe_dump(doc))
    common = (f"model.architecture={arch}", "train.max_steps=4", "model.init_seed=0")
    plain = run_sft(sft_config(world, tmp_path / "plain", *common))
    aux = run_sft(sft_config(world, tmp_path / "aux", *common, "data.image_label_weight=0.5"))
    before, after = (
        load_file(f"{plain.model_dir}/model.safetensors"),
        load_file(f"{aux.model_dir}/model.safetensors"),
    )
    init = build_tiny_vlm_for_tokenizer(
        load_tokenizer(world.tokenizer_dir), seed=0, **read_architecture(arch)[0]
    )
    assert not torch.equal(after["image_classifier.weight"], init.image_classifier.weight.detach())
    assert torch.equal(
        before["image_classifier.weight"], init.image_classifier.weight.detach()
    )  # no loss, no update
    assert not torch.equal(after["projector.1.weight"], before["projector.1.weight"])
    with pytest.raises(ValueError, match="image_label_names"):
        run_sft(sft_config(world, tmp_path / "none", "train.max_steps=2", "data.image_label_weight=0.5"))
