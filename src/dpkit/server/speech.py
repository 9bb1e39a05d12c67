"""The persona speaking: utterances played into its audio track, its mouth moving with them.

:class:`PersonaSpeaker` is the audio track's sample source and the video track's mouth, so sound
and mouth follow the same playback position. It says when speech starts and stops
(``speechState``), which the session turns into ``state`` frames.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.voice import EspeakVoice, Utterance

logger = logging.getLogger("dpkit.server.speech")

SAMPLE_RATE = 48000
SPEAKING = "speaking"
IDLE = "idle"

SpeechListener = Callable[[str, str], None]

#: Utterances one persona may have waiting (being synthesised or queued) before it says no:
#: each may be a minute of audio, so a client asking faster than it listens is bounded.
MAX_WAITING_UTTERANCES = 8


class SpeechBacklogFull(Exception):
    """The persona has too much still to say; the message says how much."""


class PersonaSpeaker:
    """Queues utterances and plays them, one after another, as the audio track pulls samples."""

    def __init__(self, voice: EspeakVoice, fps: float, on_speech: SpeechListener) -> None:
        self._voice = voice
        self._fps = fps
        self._on_speech = on_speech
        self._queue: deque[Utterance] = deque()
        self._current: Utterance | None = None
        self._envelope: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._position = 0
        self._synthesising = 0
        self.spoken: list[str] = []

    @property
    def speaking(self) -> bool:
        return self._current is not None

    async def say(self, text: str) -> None:
        """Synthesise ``text`` and queue it; it plays as soon as what is before it has.

        Raises :class:`SpeechBacklogFull` when :data:`MAX_WAITING_UTTERANCES` are waiting.
        """
        waiting = self._synthesising + len(self._queue)
        if waiting >= MAX_WAITING_UTTERANCES:
            raise SpeechBacklogFull(
                f"the persona has {waiting} utterances still to say; try again when it is done"
            )
        self._synthesising += 1
        try:
            utterance = await self._voice.speak(text)
        finally:
            self._synthesising -= 1
        if len(utterance.samples):
            self._queue.append(utterance)

    def stop(self) -> None:
        """Stop speaking now and forget what was queued (``stopSpeaking``)."""
        self._queue.clear()
        if self._current is not None:
            self._finish()

    def audio_source(self, count: int) -> npt.NDArray[np.int16]:
        """The next ``count`` samples of speech, or none (the track fills in room tone)."""
        if self._current is None:
            if not self._queue:
                return np.zeros(0, dtype=np.int16)
            self._start(self._queue.popleft())
        assert self._current is not None
        samples = self._current.samples[self._position : self._position + count]
        self._position += len(samples)
        if self._position >= len(self._current.samples):
            self._finish()
        return samples

    def mouth(self) -> float:
        """How open the mouth is now, in [0, 1], from the utterance's envelope."""
        if self._current is None or not len(self._envelope):
            return 0.0
        index = min(int(self._position / SAMPLE_RATE * self._fps), len(self._envelope) - 1)
        return float(self._envelope[index])

    def _start(self, utterance: Utterance) -> None:
        self._current = utterance
        self._position = 0
        self._envelope = utterance.mouth_envelope(self._fps)
        self.spoken.append(utterance.text)
        logger.debug("speaking: %s", utterance.text)
        self._on_speech(SPEAKING, utterance.text)

    def _finish(self) -> None:
        self._current = None
        self._envelope = np.zeros(0, dtype=np.float32)
        self._on_speech(IDLE, "")
