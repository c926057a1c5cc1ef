"""Tests of the audio path: WAV reading/resampling, Whisper log-mel features, audio tokens in the VLM."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from model.collators import SFTCollator
from model.tokenizer import train_tokenizer
from model.vlm import XMedProcessor, XMedVLMConfig, build_tiny_vlm, load_log_mel, tiny_whisper_config
from model.vlm.audio import AudioError, resample_linear


def _tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "q.wav"
    sf.write(path, _tone(22050, 0.8), 22050)  # espeak-ng writes 22050 Hz mono
    return path


def test_resample_linear_hand_values():
    assert resample_linear(np.array([0.0, 1.0, 2.0, 3.0]), 4, 2).tolist() == [0.0, 2.0]
    assert resample_linear(np.array([0.0, 2.0]), 1, 2).tolist() == [0.0, 1.0, 2.0, 2.0]  # last sample held
    with pytest.raises(ValueError, match="positive"):
        resample_linear(np.zeros(3), 0, 16000)


def test_log_mel_shape_and_padding(wav):
    feats = load_log_mel(wav, seconds=1)
    assert feats.shape == (80, 100) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    # 0.8 s of tone then zero padding: the padded frames are identical, the tone frames are not silence
    assert torch.equal(feats[:, 90], feats[:, 99])
    assert (feats[:, 10] - feats[:, 95]).abs().max() > 0.5


def test_resampled_22k_matches_native_16k(tmp_path, wav):
    native = tmp_path / "native.wav"
    sf.write(native, _tone(16000, 0.8), 16000)
    a, b = load_log_mel(wav, seconds=1), load_log_mel(native, seconds=1)
    assert (a - b)[:, 5:75].abs().mean() < 0.05


def test_stereo_is_mixed_to_mono(tmp_path, wav):
    stereo = tmp_path / "stereo.wav"
    mono = sf.read(wav, dtype="float32")[0]
    sf.write(stereo, np.stack([mono, mono], axis=1), 22050)
    assert torch.allclose(load_log_mel(stereo, seconds=1), load_log_mel(wav, seconds=1), atol=1e-4)


def test_long_audio_is_truncated_with_a_warning(tmp_path, caplog):
    long = tmp_path / "long.wav"
    sf.write(long, _tone(22050, 2.5), 22050)
    with caplog.at_level(logging.WARNING):
        assert load_log_mel(long, seconds=1).shape == (80, 100)
    assert "truncated" in caplog.text


def test_unreadable_audio_names_the_file(tmp_path):
    with pytest.raises(AudioError, match="nope.wav"):
        load_log_mel(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_log_mel(empty)


def test_audio_config_validation():
    with pytest.raises(ValueError, match="audio_token_id"):
        XMedVLMConfig(audio_config=tiny_whisper_config(d_model=16, layers=1, heads=2, ffn_dim=32, seconds=1))
    bad = tiny_whisper_config(d_model=16, layers=1, heads=2, ffn_dim=32, seconds=1)
    bad.max_source_positions = 60
    with pytest.raises(ValueError, match="multiple of 50"):
        XMedVLMConfig(audio_config=bad, audio_token_id=7)


# ------------------------------------------------------------------------------------- model path


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["<audio>\nWhat was asked? Is there a lesion? Yes No"] * 10, vocab_size=300)


@pytest.fixture(scope="module")
def model(tok):
    return build_tiny_vlm(
        vocab_size=len(tok),
        image_size=32,
        grid=4,
        vision_hidden=32,
        vision_layers=1,
        text_hidden=32,
        text_layers=2,
        heads=2,
        intermediate=64,
        max_positions=256,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=0,
        eos_token_id=tok.eos_token_id,
        with_audio=True,
        audio_token_id=tok.convert_tokens_to_ids("<audio>"),
        audio_hidden=32,
        audio_layers=1,
        audio_seconds=1,
        audio_pool=5,
        seed=0,
    )


def _audio_batch(tok, model, wav):
    proc = XMedProcessor.for_model(tok, model.config)
    assert proc.num_audio_tokens == 10 and proc.audio_seconds == 1
    rec = {
        "id": "a1",
        "images": [],
        "audios": [wav.name],
        "conversations": [
            {"from": "human", "value": "<audio>\nAnswer the spoken question."},
            {"from": "gpt", "value": "Yes"},
        ],
    }
    ex = proc.encode_example(rec, wav.parent)
    assert ex["input_features"].shape == (1, 80, 100) and ex["audio_count"] == 1 and ex["image_count"] == 0
    return proc, SFTCollator(0)([ex])


def test_audio_forward_backward(tok, model, wav):
    _, b = _audio_batch(tok, model, wav)
    model.train()
    out = model(**b)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.audio_projector.fc1.weight.grad.abs().sum() > 0
    assert model.audio_encoder.conv1.weight.grad.abs().sum() > 0
    model.zero_grad()
    model.eval()
    with torch.no_grad():
        a = model(**b).logits
        c = model(**dict(b, input_features=b["input_features"] + 1.0)).logits
    answer = b["labels"][0] != -100
    assert not torch.allclose(a[0, answer], c[0, answer])  # the answer depends on the audio tokens


def test_audio_generation_cache_equals_no_cache(tok, model, wav):
    proc = XMedProcessor.for_model(tok, model.config)
    b = SFTCollator(0)([proc.encode_generation("<audio>\nAnswer the spoken question.", [], audios=[wav])])
    assert b["pixel_values"] is None and b["input_features"].shape == (1, 80, 100)
    model.eval()
    kw = {
        "input_ids": b["input_ids"],
        "attention_mask": b["attention_mask"],
        "input_features": b["input_features"],
        "audio_counts": b["audio_counts"],
        "max_new_tokens": 6,
        "do_sample": False,
        "pad_token_id": 0,
        "suppress_tokens": [proc.audio_token_id, proc.image_token_id, 0],
    }
    with torch.no_grad():
        assert torch.equal(model.generate(use_cache=True, **kw), model.generate(use_cache=False, **kw))
