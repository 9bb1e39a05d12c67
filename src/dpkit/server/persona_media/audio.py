"""The Digital Person's voice as an aiortc audio track: speech when there is some, room tone else.

Sending digital silence would make a receiver unable to tell "connected but quiet" from "no audio
arriving", so by default the track plays a quiet room tone: low-level, gently swelling noise
around -45 dBFS. It is synthesised once (a few seconds, looping seamlessly) and then only sliced.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.media.clock import MediaClock

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: the Opus frame size aiortc sends."""
FRAME_PERIOD = FRAME_SAMPLES / SAMPLE_RATE

ROOM_TONE_DBFS = -45.0
ROOM_TONE_SECONDS = 4.0

#: Returns the next ``n`` mono int16 samples at 48 kHz; fewer means the speech has run out.
SampleSource = Callable[[int], npt.NDArray[np.int16]]


# Synthesised once per process and shared: every track plays the same read-only loop.
@functools.lru_cache(maxsize=4)
def room_tone(
    seconds: float = ROOM_TONE_SECONDS, level_dbfs: float = ROOM_TONE_DBFS, seed: int = 0
) -> npt.NDArray[np.int16]:
    """A read-only loop of quiet room tone, 48 kHz mono, whose end joins its start seamlessly.

    It is noise shaped like a quiet room (nothing below 40 Hz, falling off above 300 Hz) with a
    slow swell of a few dB, scaled to ``level_dbfs`` RMS. The noise is made in the frequency
    domain and the swell repeats a whole number of times, so the loop has no seam.
    """
    length = round(seconds * SAMPLE_RATE)
    if length <= 0 or length % FRAME_SAMPLES:
        raise ValueError(f"room tone must last a positive multiple of 20 ms, got {seconds} s")
    rng = np.random.default_rng(seed)
    frequencies = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
    rumble_cut = (frequencies / 40.0) ** 2
    shape = rumble_cut / (1.0 + rumble_cut) / np.sqrt(1.0 + (frequencies / 300.0) ** 2)
    spectrum = shape * (
        rng.standard_normal(frequencies.size) + 1j * rng.standard_normal(frequencies.size)
    )
    noise = np.fft.irfft(spectrum, length)
    loop_phase = 2.0 * math.pi * np.arange(length) / length
    swell = 1.0 + 0.25 * np.sin(loop_phase) + 0.1 * np.sin(3.0 * loop_phase + 1.0)
    tone = noise * swell
    target_rms = 32768.0 * 10.0 ** (level_dbfs / 20.0)
    tone *= target_rms / np.sqrt(np.mean(tone * tone))
    samples = np.clip(np.round(tone), -32768, 32767).astype(np.int16)
    samples.setflags(write=False)
    return samples


class PersonaAudioTrack(MediaStreamTrack):
    """A live 48 kHz mono audio track in 20 ms frames.

    With a ``source`` the samples come from it (the persona speaking); a source that returns
    fewer samples than asked for is topped up with room tone. Without one, room tone plays.
    ``clock`` replaces the real-time pacing, for tests.
    """

    kind = "audio"

    def __init__(
        self,
        source: SampleSource | None = None,
        *,
        seed: int = 0,
        clock: MediaClock | None = None,
    ) -> None:
        if clock is None:
            clock = MediaClock(SAMPLE_RATE, FRAME_PERIOD)
        elif clock.rate != SAMPLE_RATE or not math.isclose(clock.period, FRAME_PERIOD):
            raise ValueError(
                f"audio clock must count {SAMPLE_RATE} Hz in steps of {FRAME_PERIOD:g} s, "
                f"got {clock.rate} Hz in steps of {clock.period:g} s"
            )
        super().__init__()
        self._source = source
        self._tone = room_tone(seed=seed)
        self._clock = clock

    async def recv(self) -> av.AudioFrame:
        """Wait for the next 20 ms slot and return its samples."""
        if self.readyState != "live":
            raise MediaStreamError
        pts, time_base = await self._clock.next_timestamp()
        samples = self._samples(pts)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = pts
        frame.time_base = time_base
        return frame

    def _samples(self, pts: int) -> npt.NDArray[np.int16]:
        # Indexing the loop by pts keeps the tone continuous even when the clock skips ahead.
        start = pts % self._tone.size
        tone = self._tone[start : start + FRAME_SAMPLES]
        if self._source is None:
            return tone
        speech = np.asarray(self._source(FRAME_SAMPLES))
        if speech.dtype != np.int16 or speech.ndim != 1 or speech.size > FRAME_SAMPLES:
            raise ValueError(
                f"audio source must return at most {FRAME_SAMPLES} int16 samples in a 1-D array, "
                f"got {speech.dtype} with shape {speech.shape}"
            )
        if speech.size == FRAME_SAMPLES:
            return speech
        return np.concatenate((speech, tone[speech.size :]))
