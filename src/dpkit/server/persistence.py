"""Session persistence on the server: sessions whose client vanished, kept for a while.

For an API key that allows persistence, a connected session whose socket drops without a
``close`` frame is *detached*, not ended: its Digital Person stays reserved for
``resume_window_s`` so the client can come back (a new socket at ``/server/<node>`` with a token
for ``?sessionId=``) and carry on with the same session id. When the window passes, the session
ends and its Digital Person is freed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from dpkit.server.pool import DigitalPerson, DigitalPersonPool
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server")


@dataclass
class Detached:
    """A session waiting for its client to come back."""

    session_id: str
    key_id: str
    person: DigitalPerson
    expiry: asyncio.Task[None]


class DetachedSessions:
    """The detached sessions of one server, each with its expiry."""

    def __init__(
        self,
        pool: DigitalPersonPool,
        window_s: float,
        on_expired: Callable[[str], None] = lambda session_id: None,
    ) -> None:
        self._pool = pool
        self.window_s = window_s
        self._on_expired = on_expired
        self._sessions: dict[str, Detached] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._tasks = TaskOwner("detached-sessions")

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def detach(self, session_id: str, key_id: str, person: DigitalPerson) -> None:
        """Keep ``person`` reserved for ``session_id`` until it resumes or the window passes."""
        expiry = self._tasks.spawn(self._expire(session_id), f"expire {session_id}")
        self._sessions[session_id] = Detached(session_id, key_id, person, expiry)
        self._arrived.setdefault(session_id, asyncio.Event()).set()
        logger.info("session %s: client gone, resumable for %.1f s", session_id, self.window_s)

    async def take(self, session_id: str, key_id: str, within_s: float) -> DigitalPerson | None:
        """The session's Digital Person, if it is (or within ``within_s`` becomes) detached.

        The wait covers a client that comes back before the server has noticed its old socket
        close (a page reload). A session held by another API key is never handed over.
        """
        if session_id not in self._sessions:
            arrived = self._arrived.setdefault(session_id, asyncio.Event())
            try:
                async with asyncio.timeout(within_s):
                    await arrived.wait()
            except TimeoutError:
                self._arrived.pop(session_id, None)
                return None
        detached = self._sessions.get(session_id)
        if detached is None or detached.key_id != key_id:
            return None
        del self._sessions[session_id]
        self._arrived.pop(session_id, None)
        detached.expiry.cancel()
        return detached.person

    async def _expire(self, session_id: str) -> None:
        await asyncio.sleep(self.window_s)
        detached = self._sessions.pop(session_id, None)
        self._arrived.pop(session_id, None)
        if detached is not None:
            logger.info("session %s: not resumed within %.1f s, ended", session_id, self.window_s)
            self._pool.release(detached.person)
            self._on_expired(session_id)

    async def close(self) -> None:
        """At shutdown: end every detached session and free its Digital Person."""
        await self._tasks.close()
        for detached in self._sessions.values():
            self._pool.release(detached.person)
            self._on_expired(detached.session_id)
        self._sessions.clear()
