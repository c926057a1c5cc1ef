"""Tests of the text-to-speech interface and its espeak-ng backend."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest

from model.data.tts import EspeakTTS, TextToSpeech, TTSError


class FakeTTS:
    """Writes a tiny deterministic WAV whose samples encode the text."""

    def synthesize(self, text: str, path: Path) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(text.encode()[:64].ljust(64, b"\0"))


def test_fake_and_espeak_satisfy_the_protocol():
    assert isinstance(FakeTTS(), TextToSpeech)
    assert issubclass(EspeakTTS, TextToSpeech)


def test_missing_binary_says_which_package_to_install():
    with pytest.raises(TTSError, match="install the Debian package espeak-ng"):
        EspeakTTS(binary="definitely-not-espeak-ng")


def test_bad_speed_and_empty_text_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="speed"):
        EspeakTTS(speed=5, binary="true")
    with pytest.raises(ValueError, match="empty"):
        EspeakTTS(binary="true").synthesize("  ", tmp_path / "x.wav")


def test_failing_backend_raises_and_leaves_no_file(tmp_path):
    tts = EspeakTTS(binary="false")  # exits 1 without writing anything
    with pytest.raises(TTSError, match="espeak-ng failed"):
        tts.synthesize("hello", tmp_path / "q.wav")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)"
)
def test_espeak_writes_a_deterministic_wav(tmp_path):
    tts = EspeakTTS(voice="en-us", speed=160)
    a, b = tmp_path / "a" / "q.wav", tmp_path / "b.wav"
    tts.synthesize("Is there a nodule in the right lung?", a)
    tts.synthesize("Is there a nodule in the right lung?", b)
    with wave.open(str(a)) as w:
        assert (
            w.getnchannels() == 1 and w.getnframes() > 0.5 * w.getframerate()
        )  # over half a second of speech
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in a.parent.iterdir()) == ["q.wav"]  # no temporary left behind
