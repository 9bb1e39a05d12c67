"""Real-time pacing for locally generated media tracks.

aiortc pulls frames from a track as fast as ``recv()`` returns them, so a synthetic track must
sleep until each frame is due. aiortc's own ``VideoStreamTrack.next_timestamp`` does this, but is
hard-wired to 30 fps and reads the wall clock (``time.time``), which jumps when the system clock
is adjusted. ``MediaClock`` works for any frame period and uses the monotonic clock.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from collections.abc import Awaitable, Callable

# After a stall (a blocked event loop, a suspended laptop) sending every missed frame at once
# would flood the encoder and the network for no benefit: the receiver would only drop them.
# Beyond this much lag the clock skips ahead instead, so the timestamps stay in step with real
# time and the receiver sees a short gap. The budget is in seconds, not frames: counted in frames
# it was 100 ms for 20 ms audio, and a busy server's short stalls made it drop audio (measured in
# benchmarks/session_density.py) while video, with its longer frames, kept every frame.
MAX_LAG_S = 0.3


class MediaClock:
    """Hand out presentation timestamps for frames ``period`` seconds apart, in real time.

    ``rate`` is the RTP clock rate the timestamps count in: 90000 for video, 48000 for Opus
    audio. Frame ``n`` has ``pts = round(n * period * rate)`` and is due ``n * period`` seconds
    after the first call. ``now`` and ``sleep`` can be replaced to test pacing without waiting.
    """

    def __init__(
        self,
        rate: int,
        period: float,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"clock rate must be positive, got {rate}")
        if not period > 0 or not math.isfinite(period):
            raise ValueError(f"frame period must be a positive number of seconds, got {period}")
        self._rate = rate
        self._period = period
        self._now = now
        self._sleep = sleep
        self._time_base = fractions.Fraction(1, rate)
        self._start: float | None = None
        self._index = 0

    @property
    def rate(self) -> int:
        """Timestamp units per second."""
        return self._rate

    @property
    def period(self) -> float:
        """Seconds between frames."""
        return self._period

    @property
    def time_base(self) -> fractions.Fraction:
        """Seconds per timestamp unit, ``1 / rate``."""
        return self._time_base

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        """Wait until the next frame is due and return its ``(pts, time_base)``.

        The first call starts the clock and returns at once with pts 0.
        """
        if self._start is None:
            self._start = self._now()
            return 0, self._time_base
        self._index += 1
        delay = self._start + self._index * self._period - self._now()
        if delay > 0:
            await self._sleep(delay)
        elif -delay > max(MAX_LAG_S, self._period):
            # Skip to the frame that is due now rather than bursting out every missed one.
            self._index = int((self._now() - self._start) / self._period)
        return round(self._index * self._period * self._rate), self._time_base
