"""The reference page and what it needs: the page itself, the Web SDK bundle, and a page token.

The page (``dpkit/web/``) loads the unmodified Web SDK from ``/sdk/smwebsdk.js``. The SDK is not
part of dpkit (its licence does not allow it): :mod:`dpkit.server.web_sdk` finds it (the
``web_sdk_dir`` setting, the copy installed in the data directory, a checkout's ``node_modules/``)
or fetches it from the npm registry on the first request for it. When it cannot be had,
``/sdk/smwebsdk.js`` is a one-line script setting ``window.dpkitSdkMissing`` to the reason and
the remedy, which the page shows.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from aiohttp import web

from dpkit.server.endpoints import TOKEN_PATH, socket_url
from dpkit.server.forwarded import client_view
from dpkit.server.keys import KeyRecord
from dpkit.server.origins import normalise_origin
from dpkit.server.settings import Settings
from dpkit.server.state import STATE, ServerState
from dpkit.server.web_sdk import SDK_FILE, WebSdkError, registry_url, resolve_web_sdk

logger = logging.getLogger("dpkit.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
#: The longest file name asked for under /sdk/ (the SDK's own are under 30 characters).
MAX_SDK_NAME = 100


def find_web_sdk(settings: Settings) -> Path | None:
    """Where a copy of the Web SDK is on this machine, or None when it would have to be fetched."""
    source = resolve_web_sdk(
        settings.web_sdk_dir, settings.data_dir, registry_url(settings.npm_registry)
    )
    return source.directory


def _sdk_file(directory: Path, name: str) -> Path | None:
    """The file ``name`` directly in ``directory`` (never a dot file, never outside), or None."""
    if not name or len(name) > MAX_SDK_NAME or name.startswith(".") or "/" in name:
        return None
    path = (directory / name).resolve()
    if path.parent != directory.resolve() or not path.is_file():
        return None
    return path


def _missing(message: str) -> web.Response:
    # json.dumps: a JavaScript string literal whatever the message holds.
    return web.Response(
        text=f"window.dpkitSdkMissing = {json.dumps(message)};\n",
        content_type="application/javascript",
        headers={"Cache-Control": "no-store"},
    )


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def sdk(request: web.Request) -> web.StreamResponse:
    """``/sdk/<file>``: the Web SDK's bundle (fetched first if need be), or why it is missing."""
    provider = request.app[STATE].web_sdk
    name = request.match_info["name"]
    if provider.directory is None and name != SDK_FILE:
        # Only the page's own request starts a fetch; the SDK's other files wait for it.
        raise web.HTTPNotFound()
    found = await provider.get()
    if isinstance(found, WebSdkError):
        return _missing(provider.missing_message(found))
    path = _sdk_file(found, name)
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def _page_key(state: ServerState) -> KeyRecord | None:
    return state.keys.page_key()


NO_KEY = "this server has no API key: add one with 'dpkit keys add', then reload the page"


def _cross_origin(request: web.Request, own_origin: str) -> str | None:
    """Why this request is not from the server's own page, or None if it may be.

    A browser sends ``Origin`` on every cross-origin request and ``Sec-Fetch-Site`` on every
    request; a same-origin GET may carry neither. A client that is not a browser can read the
    page anyway, so what is kept out here is other sites' pages using this server's key.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        try:
            if normalise_origin(origin) == normalise_origin(own_origin):
                return None
        except ValueError:
            pass
        return f"origin {origin[:100]!r} is not this server's ({own_origin})"
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site[:20]} request is not from this server's page"
    return None


def _refuse_cross_origin(request: web.Request, state: ServerState) -> web.Response | None:
    own = client_view(request, state.settings).origin
    problem = _cross_origin(request, own)
    if problem is None:
        return None
    state.refusals.refuse("origin", f"{request.path}: {problem}")
    return web.json_response(
        {"error": f"only this server's own page may ask: {problem}"}, status=403
    )


async def page_config(request: web.Request) -> web.Response:
    """What the page served by this server needs: its key, aimed at this origin."""
    state = request.app[STATE]
    refused = _refuse_cross_origin(request, state)
    if refused is not None:
        return refused
    origin = client_view(request, state.settings).origin
    key = _page_key(state)
    if key is None:
        return web.json_response({"error": NO_KEY}, status=503)
    return web.json_response(
        {
            "apiKey": key.api_key(origin + TOKEN_PATH),
            # True also when the SDK will be fetched on the page's first request for it.
            "sdkInstalled": state.web_sdk.available,
            "sdk": state.web_sdk.page_config(),
        },
        headers={"Cache-Control": "no-store"},
    )


async def legacy_jwt(request: web.Request) -> web.Response:
    """``GET /api/jwt``: the Web SDK's token request for pages served by the server itself."""
    state = request.app[STATE]
    refused = _refuse_cross_origin(request, state)
    if refused is not None:
        return refused
    key = _page_key(state)
    if key is None:
        return web.json_response({"error": NO_KEY}, status=503)
    jwt = state.signer.issue(
        {"sub": key.key_id},
        typ="session",
        now=time.time(),
        ttl_s=state.settings.token_ttl_s,
    )
    view = client_view(request, state.settings)
    return web.json_response(
        {"url": socket_url(view, state), "jwt": jwt}, headers={"Cache-Control": "no-store"}
    )


def add_page_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.router.add_get("/sdk/{name}", sdk)
    app.router.add_get("/api/page-config", page_config)
    app.router.add_get("/api/jwt", legacy_jwt)
