"""The server's door: a bound on open connections, per address and in all, and on slow headers.

aiohttp answers a connection whenever its request arrives, however long that takes, and keeps as
many as the process has file descriptors. A few hundred half-sent requests (slowloris) then use
up the descriptors, and every accept after that fails and logs. :class:`ConnectionGuard` sits in
front of aiohttp's protocol:

- a connection beyond ``max_connections_per_address`` (trusted proxies exempt) or
  ``max_connections`` is answered ``503`` at once and closed, before aiohttp sees it;
- a connection whose request headers are not complete within ``http_header_timeout_s`` is closed
  (aiohttp's keep-alive timeout covers the requests after the first);
- refusals are counted and logged together (:mod:`dpkit.server.refusals`), never once each.

The total is also kept below the process's open-file limit, less a reserve for the sessions'
own sockets and files, so the server always has descriptors left for the clients it admitted.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dpkit.server.forwarded import is_trusted
from dpkit.server.refusals import Refusals
from dpkit.server.settings import Settings

#: Descriptors kept back from the connection limit: SQLite, logs, and each session's UDP sockets.
FD_RESERVE_BASE = 128
FD_RESERVE_PER_SESSION = 8


def usable_connections(settings: Settings) -> int:
    """``max_connections``, lowered to fit under this process's open-file limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    reserve = FD_RESERVE_BASE + FD_RESERVE_PER_SESSION * settings.capacity
    return max(16, min(settings.max_connections, soft - reserve))


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def _refusal(reason: str) -> bytes:
    body = json.dumps({"error": f"server busy: {reason}"}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """Counts open connections by address and decides who gets in."""

    def __init__(self, settings: Settings, refusals: Refusals) -> None:
        self.max_total = usable_connections(settings)
        self.max_per_address = settings.max_connections_per_address
        self.header_timeout_s = settings.http_header_timeout_s
        self._trusted = settings.trusted_proxies
        self._by_address: Counter[str] = Counter()
        self.total = 0
        self.refusals = refusals

    def admit(self, address: str) -> str | None:
        """Count a new connection in, or say why it is refused (None: admitted)."""
        if self.total >= self.max_total:
            return self._refuse("max_connections", f"{self.max_total} connections open")
        exempt = is_trusted(address, self._trusted)
        if not exempt and self._by_address[address] >= self.max_per_address:
            return self._refuse(
                "max_connections_per_address",
                f"{self.max_per_address} connections open from {address}",
            )
        self.total += 1
        self._by_address[address] += 1
        return None

    def closed(self, address: str) -> None:
        self.total -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def timed_out(self, address: str) -> None:
        self.refusals.refuse(
            "http_header_timeout_s",
            f"request headers from {address} not complete in {self.header_timeout_s:g} s",
        )

    def _refuse(self, limit: str, what: str) -> str:
        reason = f"{what} ({limit})"
        self.refusals.refuse(limit, reason)
        return reason


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's checks."""

    def __init__(self, make_inner: Callable[[], asyncio.Protocol], guard: ConnectionGuard) -> None:
        self._make_inner = make_inner
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._address = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._guard.admit(self._address)
        if refusal is not None:
            transport.write(_refusal(refusal))
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.header_timeout_s, self._headers_too_slow)
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        self._guard.timed_out(self._address)
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inner is not None:
            self._guard.closed(self._address)
            self._inner.connection_lost(exc)
            self._inner = None


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass a :class:`ConnectionGuard` first."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            return GuardedProtocol(server, self.guard)

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.guard.header_timeout_s if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
