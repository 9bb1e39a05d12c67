"""Session tokens are for one client: one socket at a time, and spent once it connected.

A token leaked from a page, a log or a proxy must not open sessions for someone else. The Web
SDK fetches one token per ``connect()`` and reuses it for every ``noScene`` retry, so a socket
that was refused gives its token back; a session that reached Connected spends it. Entries are
kept until their token expires, so memory is bounded by the tokens issued within one lifetime.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

#: More tokens than this in use or spent at once and new sockets are refused (memory bound).
MAX_TRACKED_TOKENS = 200_000


class TokenRefused(Exception):
    """This token cannot open a socket now; the message says why."""


@dataclass
class TokenLedger:
    """Which token ids are in use by a socket, and which are spent, until they expire."""

    _in_use: set[str] = field(default_factory=set)
    _spent: set[str] = field(default_factory=set)
    _expiry: dict[str, float] = field(default_factory=dict)
    _heap: list[tuple[float, str]] = field(default_factory=list)

    def open(self, token_id: str, expires_at: float, now: float) -> None:
        """A socket opens with this token; raises :class:`TokenRefused` if it may not."""
        self._forget_expired(now)
        if token_id in self._spent:
            raise TokenRefused("the token was spent: its session connected; fetch a new one")
        if token_id in self._in_use:
            raise TokenRefused("the token is in use by another socket; fetch a token of your own")
        if len(self._expiry) >= MAX_TRACKED_TOKENS:
            raise TokenRefused("too many tokens in use on this server; try again shortly")
        self._in_use.add(token_id)
        if token_id not in self._expiry:
            self._expiry[token_id] = expires_at
            heapq.heappush(self._heap, (expires_at, token_id))

    def close(self, token_id: str, *, spent: bool) -> None:
        """The socket that held this token ended; ``spent`` if its session had connected."""
        self._in_use.discard(token_id)
        if spent:
            self._spent.add(token_id)

    def _forget_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, token_id = heapq.heappop(self._heap)
            if token_id in self._in_use:
                continue  # its socket still runs; forgotten when it closes and expires again
            self._spent.discard(token_id)
            self._expiry.pop(token_id, None)
