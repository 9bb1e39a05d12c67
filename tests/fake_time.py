"""A fake monotonic clock, so pacing can be tested without waiting or timing anything."""

from __future__ import annotations

from dpkit.media.clock import MediaClock


class FakeTime:
    """Time that moves only when something sleeps on it or a test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.current = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += seconds

    def advance(self, seconds: float) -> None:
        self.current += seconds

    def clock(self, rate: int, period: float) -> MediaClock:
        """A media clock paced by this fake time."""
        return MediaClock(rate, period, now=self.now, sleep=self.sleep)
