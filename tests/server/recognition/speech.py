"""Spoken test phrases: eSpeak NG voices other than the persona's (en-us+f3), as 48 kHz PCM."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.voice import SAMPLE_RATE, EspeakVoice


def spoken(text: str, voice: str = "en-us-nyc", rate_wpm: int = 180) -> npt.NDArray[np.int16]:
    """``text`` spoken by ``voice``: 48 kHz mono int16."""
    return np.asarray(EspeakVoice(voice, rate_wpm, 50).speak_sync(text).samples, dtype=np.int16)


def silence(seconds: float) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)


def noise(seconds: float, dbfs: float = -30.0, seed: int = 7) -> npt.NDArray[np.int16]:
    """Steady white noise at ``dbfs`` RMS."""
    amplitude = 32768.0 * 10 ** (dbfs / 20)
    samples = np.random.default_rng(seed).normal(0.0, amplitude, round(seconds * SAMPLE_RATE))
    return np.clip(samples, -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: npt.NDArray[np.int16]) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return path
