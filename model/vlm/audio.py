"""Audio input of the XMed VLM: WAV -> log-mel features -> Whisper encoder -> audio tokens.

* :func:`load_log_mel` reads a WAV (soundfile), mixes it to mono, resamples it linearly to 16 kHz
  (espeak-ng writes 22050 Hz mono) and computes Whisper's log-mel spectrogram with a
  ``transformers.WhisperFeatureExtractor`` built offline from its parameters (no download).
  Whisper pads or truncates every clip to a fixed length: ``seconds * 100`` frames of 10 ms.
* :func:`tiny_whisper_config` sizes a ``WhisperConfig`` whose encoder
  (``transformers.models.whisper.modeling_whisper.WhisperEncoder``) consumes those frames; the
  encoder halves the frame rate, so ``max_source_positions = 50 * seconds``.
* :class:`AudioProjector` average-pools the encoder output over time (``pool`` frames per token)
  and maps it to the LLM width with an MLP, as the vision projector does for image tokens.

Reference: Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision" (Whisper),
https://arxiv.org/abs/2212.04356.
"""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
import soundfile as sf
import torch
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor

__all__ = [
    "SAMPLING_RATE",
    "AudioError",
    "AudioProjector",
    "feature_extractor",
    "load_log_mel",
    "read_wav",
    "resample_linear",
    "tiny_whisper_config",
]

log = logging.getLogger(__name__)

#: Whisper's sampling rate; every clip is resampled to it.
SAMPLING_RATE = 16_000


class AudioError(ValueError):
    """A WAV file cannot be read or is empty; the message names the file."""


def tiny_whisper_config(
    *, d_model: int, layers: int, heads: int, ffn_dim: int, seconds: int, num_mel_bins: int = 80
) -> WhisperConfig:
    """A small ``WhisperConfig`` for the encoder only (the decoder fields are left minimal).

    Args:
        d_model: encoder width.
        layers: encoder layers.
        heads: attention heads.
        ffn_dim: MLP width.
        seconds: clip length; the encoder expects ``100 * seconds`` mel frames.
        num_mel_bins: mel channels (must match :func:`load_log_mel`'s ``feature_size``).
    """
    return WhisperConfig(
        num_mel_bins=num_mel_bins,
        d_model=d_model,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=ffn_dim,
        decoder_layers=1,
        decoder_attention_heads=heads,
        decoder_ffn_dim=ffn_dim,
        vocab_size=8,
        max_source_positions=50 * seconds,
        max_target_positions=8,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
        decoder_start_token_id=0,
        begin_suppress_tokens=None,
    )


@functools.lru_cache(maxsize=8)
def feature_extractor(*, seconds: int, feature_size: int = 80) -> WhisperFeatureExtractor:
    """Whisper's log-mel front end (25 ms window, 10 ms hop, 16 kHz), constructed offline."""
    return WhisperFeatureExtractor(
        feature_size=feature_size,
        sampling_rate=SAMPLING_RATE,
        hop_length=160,
        chunk_length=seconds,
        n_fft=400,
    )


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a WAV as mono float32 in [-1, 1] and its sampling rate.

    Raises:
        AudioError: the file is missing, unreadable or has no samples.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"{path}: cannot read WAV: {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: WAV has no samples")
    return data.mean(axis=1), int(rate)


def resample_linear(wave: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a 1-D signal by linear interpolation (adequate for speech features at 16 kHz).

    Example:
        >>> resample_linear(np.array([0.0, 1.0, 2.0, 3.0]), 4, 2).tolist()
        [0.0, 2.0]
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sampling rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate:
        return wave.astype(np.float32)
    n_out = round(len(wave) * dst_rate / src_rate)
    t_out = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    return np.interp(t_out, np.arange(len(wave), dtype=np.float64), wave).astype(np.float32)


def load_log_mel(wav_path: str | os.PathLike, *, seconds: int = 6, feature_size: int = 80) -> torch.Tensor:
    """Log-mel features of a WAV for the Whisper encoder: shape ``(feature_size, 100 * seconds)``.

    Args:
        wav_path: the WAV file (any rate, mono or multi-channel).
        seconds: the clip length the encoder expects (``XMedVLMConfig.audio_seconds``); longer
            audio is truncated (with a warning), shorter audio is zero-padded.
        feature_size: mel channels (``WhisperConfig.num_mel_bins``).

    Raises:
        AudioError: the file cannot be read or is empty.
    """
    wave, rate = read_wav(wav_path)
    wave = resample_linear(wave, rate, SAMPLING_RATE)
    if len(wave) > seconds * SAMPLING_RATE:
        log.warning("%s: %.2f s of audio truncated to %d s", wav_path, len(wave) / SAMPLING_RATE, seconds)
    fe = feature_extractor(seconds=seconds, feature_size=feature_size)
    feats = fe(wave, sampling_rate=SAMPLING_RATE, return_tensors="np")["input_features"][0]
    return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


class AudioProjector(nn.Module):
    """Average-pool Whisper encoder frames by ``pool``, then LayerNorm -> Linear -> GELU -> Linear.

    Args:
        in_dim: Whisper ``d_model``.
        hidden_dim: MLP hidden width.
        out_dim: LLM hidden size.
        pool: frames averaged into one audio token.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(clips, frames, in_dim)`` -> ``(clips, frames // pool, out_dim)``."""
        pooled = nn.functional.avg_pool1d(frames.transpose(1, 2), self.pool, self.pool).transpose(1, 2)
        return self.fc2(self.act(self.fc1(self.norm(pooled))))
