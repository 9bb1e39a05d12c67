"""An owner for background tasks: everything it starts, it cancels and awaits on close.

dpkit never fires and forgets a task. A :class:`TaskOwner` belongs to one object (a session, a
scene, the server) and its :meth:`TaskOwner.close` is that object's last word on concurrency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("dpkit.tasks")


class TaskOwner:
    """Starts named tasks and, on :meth:`close`, cancels and awaits every one still running."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is closed: cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    async def join(self, grace_s: float = 5.0) -> None:
        """Wait (bounded) for the tasks running now to finish by themselves, then close."""
        current = asyncio.current_task()
        running = [task for task in self._tasks if task is not current]
        if running:
            await asyncio.wait(running, timeout=grace_s)
        await self.close()

    async def close(self, grace_s: float = 5.0) -> None:
        """Cancel every task and wait (bounded) for them to finish. Idempotent."""
        self._closed = True
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
