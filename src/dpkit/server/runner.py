"""Run the server on a socket: ``async with DpkitServer(settings) as server: ...``.

Used by ``dpkit serve``, the tests and the benchmarks. Binding happens first so a port of 0 gets
a free port, and the API key printed for clients points at the port actually bound. The socket
is served through a :class:`~dpkit.server.connections.ConnectionGuard` (connection limits, a
header deadline), over TLS when ``tls_cert`` and ``tls_key`` are set, with aiohttp's keep-alive
timeout and an access log that never prints a secret.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from dpkit.extras import require_extra
from dpkit.server.access_log import RedactingAccessLogger
from dpkit.server.app import create_app
from dpkit.server.connections import ConnectionGuard, GuardedSite
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.settings import Settings
from dpkit.server.state import REFUSALS, STATE, ServerState
from dpkit.server.tls import server_ssl_context


class DpkitServer:
    """A running ``dpkit serve``: its URL, its default API key and its state."""

    def __init__(self, settings: Settings) -> None:
        require_extra("server", "dpkit serve")
        self.settings = settings
        self.app = create_app(settings)
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=5.0,
            keepalive_timeout=settings.http_keepalive_timeout_s,
            access_log_class=RedactingAccessLogger,
        )
        self.guard = ConnectionGuard(settings, self.app[REFUSALS])
        self.port = 0

    @property
    def url(self) -> str:
        """Where this server is reached (``public_url`` if set, else its own address)."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    @property
    def admin_token(self) -> str:
        return self.settings.admin_token or self.state.keys.admin_token

    def api_key(self, label: str = "default") -> str:
        """The API key for the key named ``label`` (the default key unless told)."""
        for record in self.state.keys.keys:
            if record.label == label:
                return record.api_key(self.url + TOKEN_PATH)
        raise KeyError(f"no API key labelled {label!r}")

    async def start(self) -> None:
        context = server_ssl_context(self.settings)  # a bad certificate stops us before binding
        await self._runner.setup()
        site = GuardedSite(
            self._runner,
            self.guard,
            host=self.settings.host,
            port=self.settings.port,
            ssl_context=context,
            backlog=1024,
        )
        await site.start()
        self.port = site.port
        self.state.url = self.url
        membership = self.state.membership
        if membership is not None:
            await membership.start(self.url)  # its record names the port actually bound
        if self.state.cluster_queue is not None:
            self.state.cluster_queue.start(self.url)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> DpkitServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
