"""Utterances already spoken, kept by voice and text: the same words are synthesised once.

A persona says the same things to many people: its welcome, its corpus's answers. eSpeak NG is
one library per process behind one lock, so a hundred sessions greeted at once would otherwise
queue a hundred identical syntheses. An :class:`UtteranceCache` keeps recent utterances
(read-only, so sharing them is safe) up to a budget of samples, and lets concurrent requests for
the same words wait for the one synthesis in progress.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dpkit.server.persona_media.voice import Utterance

MAX_BYTES = 64 * 1024 * 1024
"""The cache's budget: about eleven minutes of 48 kHz speech."""


class UtteranceCache:
    """Utterances by key, least recently used dropped first past ``max_bytes`` of samples."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache budget must not be negative, got {max_bytes}")
        self._max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Utterance] = OrderedDict()
        self._pending: dict[Hashable, Future[Utterance]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes of samples held."""
        return self._bytes

    async def get_or_speak(self, key: Hashable, speak: Callable[[], Utterance]) -> Utterance:
        """The utterance for ``key``: cached, being made already, or made now by ``speak``
        in a worker thread."""
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached
            pending = self._pending.get(key)
            if pending is None:
                self.misses += 1
                pending = self._pending[key] = Future()
                owner = True
            else:
                self.hits += 1
                owner = False
        if not owner:
            return await asyncio.wrap_future(pending)
        try:
            utterance = await asyncio.to_thread(speak)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            pending.set_exception(exc)
            # Retrieved here, so a failure nobody else waited for is not reported twice.
            pending.exception()
            raise
        with self._lock:
            del self._pending[key]
            self._store(key, utterance)
        pending.set_result(utterance)
        return utterance

    def _store(self, key: Hashable, utterance: Utterance) -> None:
        size = utterance.samples.nbytes
        if size > self._max_bytes:
            return
        self._entries[key] = utterance
        self._bytes += size
        while self._bytes > self._max_bytes:
            _key, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.samples.nbytes
