"""The recognizer interface: 16 kHz mono int16 PCM in, interim text and final hypotheses out.

A :class:`Recognizer` is driven by one worker thread, one utterance at a time: :meth:`start`,
:meth:`feed` as many times as there is audio, :meth:`partial` whenever an interim result is due,
then :meth:`finish` for the final alternatives, best first. Engines are named in the persona's
settings (``recognition_engine``) and built by :func:`new_recognizer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from dpkit.errors import DpkitError

#: The rate every recognizer is fed: the acoustic models' 16 kHz.
SAMPLE_RATE = 16000

#: The engines :func:`new_recognizer` knows.
ENGINES = ("pocketsphinx",)


class RecognizerError(DpkitError):
    """The speech recognizer could not be built or failed while decoding."""

    name = "recognizerError"
    advice = (
        "Check that dpkit's 'server' extra is installed (pip install 'dpkit[server]') and the "
        "persona's recognition_engine setting; the session goes on without recognition."
    )


@dataclass(frozen=True)
class Alternative:
    """One reading of an utterance: its text and a confidence in [0, 1]."""

    transcript: str
    confidence: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.confidence) or not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")


class Recognizer(Protocol):
    """A speech recognizer for one session, used from one thread only."""

    def start(self) -> None:
        """Begin an utterance."""

    def feed(self, pcm: npt.NDArray[np.int16]) -> None:
        """Decode more of the utterance: 16 kHz mono int16 samples."""

    def partial(self) -> str:
        """The best guess at the utterance so far (empty: nothing yet)."""

    def finish(self) -> tuple[Alternative, ...]:
        """End the utterance; its readings, best first (empty: nothing was said)."""

    def close(self) -> None:
        """Free the engine's resources."""


def new_recognizer(engine: str, phrases: Sequence[str]) -> Recognizer:
    """The recognizer named ``engine``, biased towards ``phrases`` (the corpus's patterns).

    Blocking (it loads models): call it from the worker thread. Raises
    :class:`RecognizerError` for an unknown engine or one that cannot load.
    """
    if engine == "pocketsphinx":
        from dpkit.server.recognition.sphinx import SphinxRecognizer

        return SphinxRecognizer(phrases)
    raise RecognizerError(
        f"no speech recognition engine named {engine[:40]!r}; known: {', '.join(ENGINES)}"
    )
