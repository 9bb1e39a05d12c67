"""Run the server on a socket: ``async with DpkitServer(settings) as server: ...``.

Used by ``dpkit serve``, the tests and the benchmarks. Binding happens first so a port of 0 gets
a free port, and the API key printed for clients points at the port actually bound.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from dpkit.server.app import create_app
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.settings import Settings
from dpkit.server.state import STATE, ServerState


class DpkitServer:
    """A running ``dpkit serve``: its URL, its default API key and its state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=5.0)
        self.port = 0

    @property
    def url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

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
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port

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
