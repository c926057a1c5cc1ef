"""Text-to-speech for the audio stage: a small interface and an offline espeak-ng backend.

The generator renders some text queries to WAV so the audio stage has spoken inputs. The paper
used SpeechT5; any object with ``synthesize(text, path)`` works (tests pass a fake). The default
backend calls Debian's ``espeak-ng`` binary, which is offline and deterministic (same text, voice
and speed give the same bytes). Outputs are written to a temporary sibling and renamed, so an
interrupted run never leaves a truncated WAV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["EspeakTTS", "TTSError", "TextToSpeech"]


class TTSError(RuntimeError):
    """Speech synthesis failed or its backend is not installed."""


@runtime_checkable
class TextToSpeech(Protocol):
    """Anything that speaks ``text`` into a WAV file at ``path``."""

    def synthesize(self, text: str, path: Path) -> None:
        """Write ``text`` as speech to the WAV file ``path`` (atomically)."""
        ...


class EspeakTTS:
    """The ``espeak-ng`` command-line synthesiser (``espeak-ng -w out.wav``).

    Args:
        voice: espeak-ng voice name, e.g. ``en-us``.
        speed: words per minute (espeak-ng ``-s``), 80..450.
        binary: the executable name or path.

    Raises:
        TTSError: the binary is not on PATH (install the Debian package ``espeak-ng``).
    """

    def __init__(self, voice: str = "en-us", speed: int = 160, *, binary: str = "espeak-ng") -> None:
        if not 80 <= speed <= 450:
            raise ValueError(f"espeak-ng speed must be within 80..450 words per minute, got {speed}")
        resolved = shutil.which(binary)
        if resolved is None:
            raise TTSError(
                f"'{binary}' was not found on PATH; install the Debian package espeak-ng "
                "(apt-get install espeak-ng) or pass another TextToSpeech backend"
            )
        self.voice = voice
        self.speed = speed
        self.binary = resolved

    def synthesize(self, text: str, path: Path) -> None:
        """Speak ``text`` into the WAV file ``path``; the file appears only when complete.

        Raises:
            ValueError: ``text`` is empty.
            TTSError: espeak-ng exited with an error or wrote nothing.
        """
        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        dst = Path(path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        cmd = [self.binary, "-v", self.voice, "-s", str(self.speed), "-w", str(tmp), "--stdin"]
        try:
            proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
            if proc.returncode != 0 or not tmp.exists() or tmp.stat().st_size <= 44:
                raise TTSError(
                    f"espeak-ng failed for {dst} (exit {proc.returncode}): "
                    f"{proc.stderr.decode(errors='replace').strip()}"
                )
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
