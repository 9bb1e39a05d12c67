"""Stand-ins for a user's microphone and camera, for headless machines and tests.

``ToneAudioTrack`` is a microphone that hums a sine wave; ``TestPatternVideoTrack`` is a camera
that shows colour bars with a moving band, and stamps each frame's index into its top-left corner
so that the far end can check frames arrive, and in order, with :func:`read_frame_index`. The
stamp is a 4 x 4 grid of black or white 8 x 8 blocks, coarse enough to survive VP8 and H.264.
"""

from __future__ import annotations

import math

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dpkit.media.clock import MediaClock

AUDIO_FRAMES_PER_SECOND = 50
VIDEO_CLOCK_RATE = 90000
MAX_FPS = 60.0

STAMP_BLOCK = 8
STAMP_GRID = 4
STAMP_BITS = STAMP_GRID * STAMP_GRID
STAMP_SIZE = STAMP_BLOCK * STAMP_GRID
"""The stamp covers the top-left ``STAMP_SIZE x STAMP_SIZE`` pixels; indices wrap at 2**16."""

# Studio-range luma for black and white, and the neutral chroma, as the encoder expects them.
LUMA_BLACK = 16
LUMA_WHITE = 235
CHROMA_NEUTRAL = 128

# 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black.
BARS = (
    (191, 191, 191),
    (191, 191, 0),
    (0, 191, 191),
    (0, 191, 0),
    (191, 0, 191),
    (191, 0, 0),
    (0, 0, 191),
    (0, 0, 0),
)


class ToneAudioTrack(MediaStreamTrack):
    """A microphone playing a continuous sine of ``frequency`` Hz, peaking at ``level_dbfs``.

    Frames are 20 ms of mono s16; their pts count samples, so the tone stays in phase across
    frames. A -20 dBFS peak sine measures about -23 dBFS RMS.
    """

    kind = "audio"

    def __init__(
        self,
        frequency: float = 440.0,
        level_dbfs: float = -20.0,
        sample_rate: int = 48000,
        *,
        clock: MediaClock | None = None,
    ) -> None:
        if sample_rate <= 0 or sample_rate % AUDIO_FRAMES_PER_SECOND:
            raise ValueError(f"sample rate must be a positive multiple of 50 Hz, got {sample_rate}")
        if not 0 < frequency < sample_rate / 2:
            raise ValueError(
                f"tone frequency must be between 0 and {sample_rate / 2:g} Hz, got {frequency}"
            )
        if not level_dbfs <= 0:
            raise ValueError(f"tone level must be at most 0 dBFS, got {level_dbfs}")
        period = 1 / AUDIO_FRAMES_PER_SECOND
        if clock is None:
            clock = MediaClock(sample_rate, period)
        elif clock.rate != sample_rate or not math.isclose(clock.period, period):
            raise ValueError(
                f"tone clock must count {sample_rate} Hz in steps of {period:g} s, "
                f"got {clock.rate} Hz in steps of {clock.period:g} s"
            )
        super().__init__()
        self._frequency = frequency
        self._amplitude = 32767.0 * 10.0 ** (level_dbfs / 20.0)
        self._sample_rate = sample_rate
        self._frame_samples = sample_rate // AUDIO_FRAMES_PER_SECOND
        self._offsets = np.arange(self._frame_samples, dtype=np.float64)
        self._clock = clock

    async def recv(self) -> av.AudioFrame:
        """Wait for the next 20 ms slot and return the tone for it."""
        if self.readyState != "live":
            raise MediaStreamError
        pts, time_base = await self._clock.next_timestamp()
        # Reduce the phase of the first sample modulo one cycle so it stays exact for days.
        cycles = (self._frequency * pts) % self._sample_rate / self._sample_rate
        phase = 2.0 * math.pi * (cycles + self._offsets * self._frequency / self._sample_rate)
        samples = np.round(self._amplitude * np.sin(phase)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.pts = pts
        frame.time_base = time_base
        return frame


class TestPatternVideoTrack(MediaStreamTrack):
    """A camera showing colour bars, a band moving down, and its frame index stamped top-left."""

    __test__ = False  # not a pytest test class, despite the name
    kind = "video"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        *,
        clock: MediaClock | None = None,
    ) -> None:
        if width < STAMP_SIZE or height < STAMP_SIZE or width % 2 or height % 2:
            raise ValueError(
                f"test pattern size must be even and at least {STAMP_SIZE}x{STAMP_SIZE}, "
                f"got {width}x{height}"
            )
        if not 0 < fps <= MAX_FPS:
            raise ValueError(f"fps must be in (0, {MAX_FPS:g}], got {fps}")
        if clock is None:
            clock = MediaClock(VIDEO_CLOCK_RATE, 1.0 / fps)
        elif clock.rate != VIDEO_CLOCK_RATE or not math.isclose(clock.period, 1.0 / fps):
            raise ValueError(
                f"video clock must count {VIDEO_CLOCK_RATE} Hz in steps of 1/{fps:g} s, "
                f"got {clock.rate} Hz in steps of {clock.period:g} s"
            )
        super().__init__()
        self._width = width
        self._height = height
        self._fps = fps
        self._clock = clock
        self._index = 0
        self._bars = _colour_bars(width, height)
        # The band crosses the picture in about two seconds whatever the frame rate.
        self._band_height = max(2, height // 16) // 2 * 2
        self._band_step = max(1, round(height / (2.0 * fps)))

    async def recv(self) -> av.VideoFrame:
        """Wait for the next frame time and return the pattern with the frame index stamped."""
        if self.readyState != "live":
            raise MediaStreamError
        pts, time_base = await self._clock.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._draw(self._index), format="yuv420p")
        self._index += 1
        frame.pts = pts
        frame.time_base = time_base
        return frame

    def _draw(self, index: int) -> npt.NDArray[np.uint8]:
        pixels = self._bars.copy()
        height, width = self._height, self._width
        luma = pixels[:height]
        chroma_u = pixels[height : height + height // 4].reshape(height // 2, width // 2)
        chroma_v = pixels[height + height // 4 :].reshape(height // 2, width // 2)
        band_top = (index * self._band_step) % (height - self._band_height) // 2 * 2
        luma[band_top : band_top + self._band_height] = LUMA_WHITE
        band_rows = slice(band_top // 2, (band_top + self._band_height) // 2)
        chroma_u[band_rows] = CHROMA_NEUTRAL
        chroma_v[band_rows] = CHROMA_NEUTRAL
        bits = index % (1 << STAMP_BITS)
        for bit in range(STAMP_BITS):
            row, col = divmod(bit, STAMP_GRID)
            value = LUMA_WHITE if bits >> bit & 1 else LUMA_BLACK
            luma[
                row * STAMP_BLOCK : (row + 1) * STAMP_BLOCK,
                col * STAMP_BLOCK : (col + 1) * STAMP_BLOCK,
            ] = value
        half = STAMP_SIZE // 2
        chroma_u[:half, :half] = CHROMA_NEUTRAL
        chroma_v[:half, :half] = CHROMA_NEUTRAL
        return pixels


def _colour_bars(width: int, height: int) -> npt.NDArray[np.uint8]:
    """Vertical colour bars as PyAV's packed YUV 4:2:0 array."""
    columns = np.arange(width) * len(BARS) // width
    rgb = np.asarray(BARS, dtype=np.uint8)[columns]
    rgb = np.ascontiguousarray(np.broadcast_to(rgb, (height, width, 3)))
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return np.asarray(yuv.to_ndarray(), dtype=np.uint8)


def read_frame_index(frame: av.VideoFrame) -> int:
    """Read the index :class:`TestPatternVideoTrack` stamped on ``frame``, modulo 2**16.

    Works on frames that went through a lossy codec: each block is judged by the mean of its
    middle, against the midpoint between black and white.
    """
    if frame.width < STAMP_SIZE or frame.height < STAMP_SIZE:
        raise ValueError(
            f"frame is {frame.width}x{frame.height}, too small to carry a "
            f"{STAMP_SIZE}x{STAMP_SIZE} index stamp"
        )
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    # PyAV's yuv420p array starts with the full-size luma plane.
    luma = frame.to_ndarray()[:STAMP_SIZE, :STAMP_SIZE]
    blocks = luma.reshape(STAMP_GRID, STAMP_BLOCK, STAMP_GRID, STAMP_BLOCK)
    middles = blocks[:, 2:-2, :, 2:-2].mean(axis=(1, 3)).reshape(-1)
    threshold = (LUMA_BLACK + LUMA_WHITE) / 2
    return sum(1 << bit for bit, level in enumerate(middles) if level > threshold)
