"""Voice activity detection and end-pointing: where an utterance starts and where it ends.

Energy-based, frame by frame (30 ms at 16 kHz), against a noise floor that follows the room: it
drops at once to a quieter frame and rises slowly, so steady noise becomes the floor and is not
speech. A frame is voiced when it is :data:`MARGIN_DB` over the floor and over an absolute
:data:`MIN_SPEECH_DBFS`. Speech starts after :data:`START_S` of voiced frames (the
:data:`PRE_ROLL_S` before it is kept, so a soft onset is not cut), and ends after
``hangover_s`` without a voiced frame, or when the utterance reaches ``max_utterance_s``.

No I/O and no clock: the time is the number of samples seen, so it is tested synchronously.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dpkit.server.recognition.engine import SAMPLE_RATE

FRAME_SAMPLES = 480
"""30 ms at 16 kHz."""
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE

MARGIN_DB = 12.0
MIN_SPEECH_DBFS = -50.0
START_S = 0.09
PRE_ROLL_S = 0.3
#: How long without a voiced frame ends an utterance: every bit of it is waited out before the
#: persona can answer, so it is most of the latency from the end of speech to the answer.
HANGOVER_S = 0.3
FLOOR_START_DBFS = -70.0
FLOOR_RISE_DB_PER_S = 10.0
"""How fast the noise floor climbs towards a louder room (the fall is immediate)."""


class Boundary(enum.Enum):
    """What a frame of audio meant for the utterance."""

    SILENCE = "silence"
    STARTED = "started"
    SPEECH = "speech"
    ENDED = "ended"


@dataclass(frozen=True)
class Step:
    """The outcome of one frame: the boundary, and the audio that belongs to the utterance."""

    boundary: Boundary
    #: For STARTED: the pre-roll and this frame; for SPEECH and ENDED: this frame; else empty.
    audio: npt.NDArray[np.int16]
    #: For ENDED: whether it ended because it reached the longest an utterance may be.
    truncated: bool = False


def frame_dbfs(frame: npt.NDArray[np.int16]) -> float:
    """The RMS level of ``frame`` in dBFS (-120 for digital silence)."""
    if not len(frame):
        return -120.0
    wide = frame.astype(np.float32) / 32768.0
    mean_square = float(np.dot(wide, wide)) / len(wide)
    return max(-120.0, 10.0 * math.log10(mean_square)) if mean_square > 0 else -120.0


class Endpointer:
    """Splits a stream of 16 kHz samples into utterances."""

    def __init__(self, *, hangover_s: float = HANGOVER_S, max_utterance_s: float = 15.0) -> None:
        if not math.isfinite(hangover_s) or hangover_s <= 0:
            raise ValueError(f"hangover_s must be positive, got {hangover_s}")
        if not math.isfinite(max_utterance_s) or max_utterance_s <= 0:
            raise ValueError(f"max_utterance_s must be positive, got {max_utterance_s}")
        self._hangover_frames = max(1, round(hangover_s / FRAME_S))
        self._max_frames = max(1, round(max_utterance_s / FRAME_S))
        self._start_frames = max(1, round(START_S / FRAME_S))
        self._pending = np.zeros(0, dtype=np.int16)
        self._pre_roll: deque[npt.NDArray[np.int16]] = deque(
            maxlen=max(1, round(PRE_ROLL_S / FRAME_S))
        )
        self.floor_dbfs = FLOOR_START_DBFS
        self._calibrated = False
        self._voiced_run = 0
        self._quiet_run = 0
        self._frames_in_utterance = 0
        self.in_speech = False

    def reset(self) -> None:
        """Forget any utterance under way (the audio stopped counting: muted, stopped)."""
        self._pending = np.zeros(0, dtype=np.int16)
        self._pre_roll.clear()
        self._voiced_run = self._quiet_run = self._frames_in_utterance = 0
        self.in_speech = False

    def push(self, samples: npt.NDArray[np.int16]) -> list[Step]:
        """Take more samples; the steps of every whole frame they complete."""
        pending = np.concatenate((self._pending, samples.astype(np.int16, copy=False)))
        whole = len(pending) - len(pending) % FRAME_SAMPLES
        self._pending = pending[whole:]
        return [
            self._frame(pending[start : start + FRAME_SAMPLES])
            for start in range(0, whole, FRAME_SAMPLES)
        ]

    def _frame(self, frame: npt.NDArray[np.int16]) -> Step:
        level = frame_dbfs(frame)
        if not self._calibrated:
            # The room as the stream starts is the floor: noise from the first frame is not speech.
            self._calibrated = True
            self.floor_dbfs = max(level, FLOOR_START_DBFS)
        voiced = level >= max(self.floor_dbfs + MARGIN_DB, MIN_SPEECH_DBFS)
        if level < self.floor_dbfs:
            self.floor_dbfs = max(level, FLOOR_START_DBFS)
        else:
            # Slower under speech, so a long utterance is not taken for a louder room.
            rise = FLOOR_RISE_DB_PER_S * (0.1 if voiced else 1.0) * FRAME_S
            self.floor_dbfs = min(level, self.floor_dbfs + rise)
        empty = np.zeros(0, dtype=np.int16)
        if not self.in_speech:
            self._pre_roll.append(frame)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._voiced_run < self._start_frames:
                return Step(Boundary.SILENCE, empty)
            self.in_speech = True
            self._quiet_run = 0
            audio = np.concatenate(list(self._pre_roll))
            self._pre_roll.clear()
            self._frames_in_utterance = len(audio) // FRAME_SAMPLES
            return Step(Boundary.STARTED, audio)
        self._frames_in_utterance += 1
        self._quiet_run = 0 if voiced else self._quiet_run + 1
        truncated = self._frames_in_utterance >= self._max_frames
        if self._quiet_run >= self._hangover_frames or truncated:
            self.in_speech = False
            self._voiced_run = 0
            return Step(Boundary.ENDED, frame, truncated=truncated and self._quiet_run == 0)
        return Step(Boundary.SPEECH, frame)
