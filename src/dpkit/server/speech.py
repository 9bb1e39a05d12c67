r"""The persona speaking: utterances played into its audio track, its mouth moving with them.

:class:`PersonaSpeaker` is the audio track's sample source and the video track's mouth, so sound
and mouth follow the same playback position. It says when speech starts and stops
(``speechState``), which the session turns into ``state`` frames, and when the audio reaches each
speech marker of the text, which the session sends as ``speechMarker`` frames.

Speech markers are the platform's: ``@name(arg, ...)`` anywhere in the text, such as
``@showcards(cardA, cardB)``, ``@hidecards()`` or ``@marker(wave)``. They are not spoken; each
fires when the audio reaches the point of the text where it stands (by its share of the spoken
text: eSpeak gives no word timings), or never if the speech is stopped before it. ``\@`` is a
literal ``@``.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dpkit.server.persona_media.voice import EspeakVoice, Utterance

logger = logging.getLogger("dpkit.server.speech")

SAMPLE_RATE = 48000
SPEAKING = "speaking"
IDLE = "idle"

SpeechListener = Callable[[str, str], None]

#: Markers one utterance may carry; more are dropped (not spoken either).
MAX_MARKERS = 32
#: Arguments one marker may carry; more are dropped.
MAX_MARKER_ARGUMENTS = 16

_MARKER = re.compile(r"(?<!\\)@([A-Za-z][A-Za-z0-9_]{0,63})\(([^()]{0,500})\)")


@dataclass(frozen=True)
class SpeechMarker:
    """A ``@name(arguments)`` marker, at ``offset`` (0 to 1) of the spoken text."""

    name: str
    arguments: tuple[str, ...]
    offset: float


def parse_markers(text: str) -> tuple[str, tuple[SpeechMarker, ...]]:
    """The text to speak (markers removed, ``\\@`` made ``@``) and the markers, in order."""
    spoken = ""
    found: list[tuple[str, tuple[str, ...], int]] = []
    last = 0
    for match in _MARKER.finditer(text):
        spoken += text[last : match.start()]
        last = match.end()
        if len(found) >= MAX_MARKERS:
            continue
        arguments = tuple(a.strip() for a in match.group(2).split(",") if a.strip())
        found.append((match.group(1), arguments[:MAX_MARKER_ARGUMENTS], len(_tidy(spoken))))
    spoken = _tidy(spoken + text[last:])
    total = max(len(spoken), 1)
    markers = tuple(
        SpeechMarker(name, arguments, min(position / total, 1.0))
        for name, arguments, position in found
    )
    return spoken, markers


def _tidy(text: str) -> str:
    return " ".join(text.replace("\\@", "@").split())


MarkerListener = Callable[[SpeechMarker], None]

#: Utterances one persona may have waiting (being synthesised or queued) before it says no:
#: each may be a minute of audio, so a client asking faster than it listens is bounded.
MAX_WAITING_UTTERANCES = 8


class SpeechBacklogFull(Exception):
    """The persona has too much still to say; the message says how much."""


class PersonaSpeaker:
    """Queues utterances and plays them, one after another, as the audio track pulls samples."""

    def __init__(
        self,
        voice: EspeakVoice,
        fps: float,
        on_speech: SpeechListener,
        on_marker: MarkerListener | None = None,
    ) -> None:
        self._voice = voice
        self._fps = fps
        self._on_speech = on_speech
        self._on_marker = on_marker
        self._queue: deque[tuple[Utterance, tuple[SpeechMarker, ...]]] = deque()
        self._current: Utterance | None = None
        #: The current utterance's markers still to come, with the sample each fires at.
        self._marks: deque[tuple[int, SpeechMarker]] = deque()
        self._envelope: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._position = 0
        self._synthesising = 0
        self.spoken: list[str] = []

    @property
    def speaking(self) -> bool:
        return self._current is not None

    async def say(self, text: str) -> None:
        """Synthesise ``text`` and queue it; it plays as soon as what is before it has.

        Its speech markers are taken out of what is spoken and fire as the audio reaches them.
        Raises :class:`SpeechBacklogFull` when :data:`MAX_WAITING_UTTERANCES` are waiting.
        """
        waiting = self._synthesising + len(self._queue)
        if waiting >= MAX_WAITING_UTTERANCES:
            raise SpeechBacklogFull(
                f"the persona has {waiting} utterances still to say; try again when it is done"
            )
        spoken, markers = parse_markers(text)
        self._synthesising += 1
        try:
            if spoken:
                utterance = await self._voice.speak(spoken)
            else:
                utterance = Utterance("", np.zeros(0, dtype=np.int16))
        finally:
            self._synthesising -= 1
        if len(utterance.samples) or markers:
            self._queue.append((utterance, markers))

    def stop(self) -> None:
        """Stop speaking now and forget what was queued (``stopSpeaking``).

        Markers the audio has not reached never fire.
        """
        self._queue.clear()
        self._marks.clear()
        if self._current is not None:
            self._finish()

    def audio_source(self, count: int) -> npt.NDArray[np.int16]:
        """The next ``count`` samples of speech, or none (the track fills in room tone)."""
        while self._current is None:
            if not self._queue:
                return np.zeros(0, dtype=np.int16)
            utterance, markers = self._queue.popleft()
            if len(utterance.samples):
                self._start(utterance, markers)
            else:
                # Markers with nothing to say: they fire where the speech would have been.
                for marker in markers:
                    self._fire(marker)
        samples = self._current.samples[self._position : self._position + count]
        self._position += len(samples)
        while self._marks and self._marks[0][0] <= self._position:
            self._fire(self._marks.popleft()[1])
        if self._position >= len(self._current.samples):
            self._finish()
        return samples

    def mouth(self) -> float:
        """How open the mouth is now, in [0, 1], from the utterance's envelope."""
        if self._current is None or not len(self._envelope):
            return 0.0
        index = min(int(self._position / SAMPLE_RATE * self._fps), len(self._envelope) - 1)
        return float(self._envelope[index])

    def _start(self, utterance: Utterance, markers: tuple[SpeechMarker, ...]) -> None:
        self._current = utterance
        self._position = 0
        length = len(utterance.samples)
        self._marks = deque((int(marker.offset * length), marker) for marker in markers)
        self._envelope = utterance.mouth_envelope(self._fps)
        self.spoken.append(utterance.text)
        logger.debug("speaking: %s", utterance.text)
        self._on_speech(SPEAKING, utterance.text)

    def _fire(self, marker: SpeechMarker) -> None:
        logger.debug("speech marker: %s%s", marker.name, marker.arguments)
        if self._on_marker is not None:
            self._on_marker(marker)

    def _finish(self) -> None:
        self._marks.clear()
        self._current = None
        self._envelope = np.zeros(0, dtype=np.float32)
        self._on_speech(IDLE, "")
