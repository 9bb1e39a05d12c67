"""The idle timer: a session nobody interacts with is warned, then ended with sessionTimeout.

``keepAlive``, typed text and conversation requests (and, later, the persona's speech) count as
interaction and restart the timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class IdleTimer:
    """After ``timeout_s`` of idleness calls ``expire``, and ``warn`` ``warning_s`` before it."""

    def __init__(self, timeout_s: float, warning_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"idle timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.warning_s = min(max(warning_s, 0.0), timeout_s)
        self._touched = asyncio.Event()

    def touch(self) -> None:
        """Something happened: start counting again."""
        self._touched.set()

    async def _quiet_for(self, seconds: float) -> bool:
        """True if ``seconds`` pass without a touch."""
        try:
            async with asyncio.timeout(seconds):
                await self._touched.wait()
        except TimeoutError:
            return True
        return False

    async def run(
        self,
        warn: Callable[[float], Awaitable[None]],
        expire: Callable[[], Awaitable[None]],
    ) -> None:
        """Watch until the session has been idle for ``timeout_s``; then call ``expire``."""
        while True:
            self._touched.clear()
            if not await self._quiet_for(self.timeout_s - self.warning_s):
                continue
            if self.warning_s > 0:
                await warn(self.warning_s)
                if not await self._quiet_for(self.warning_s):
                    continue
            await expire()
            return
