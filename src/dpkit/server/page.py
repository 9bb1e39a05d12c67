"""The reference page and what it needs: the page itself, the Web SDK bundle, and a page token.

The page (``dpkit/web/``) loads the unmodified Web SDK from ``/sdk/smwebsdk.js``. The SDK is not
part of dpkit: ``scripts/setup`` installs it from the npm registry into ``node_modules/``, and the
server serves it from the first place it finds it (the ``web_sdk_dir`` setting, else
``node_modules/@soulmachines/smwebsdk/bundles`` under the working directory or the source tree).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from aiohttp import web

from dpkit.server.endpoints import TOKEN_PATH, socket_url
from dpkit.server.forwarded import client_view
from dpkit.server.keys import DEFAULT_LABEL, KeyRecord
from dpkit.server.origins import normalise_origin
from dpkit.server.settings import Settings
from dpkit.server.state import STATE, ServerState

logger = logging.getLogger("dpkit.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SDK_BUNDLE = Path("node_modules/@soulmachines/smwebsdk/bundles")
SDK_FILE = "smwebsdk.js"


def find_web_sdk(settings: Settings) -> Path | None:
    """Where the Web SDK bundle is, or None when it is not installed."""
    candidates = [settings.web_sdk_dir] if settings.web_sdk_dir else []
    source_root = Path(__file__).resolve().parents[3]
    candidates += [Path.cwd() / SDK_BUNDLE, source_root / SDK_BUNDLE]
    for candidate in candidates:
        if (candidate / SDK_FILE).is_file():
            return candidate
    return None


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def sdk(request: web.Request) -> web.StreamResponse:
    """``/sdk/<file>``: the Web SDK's bundle, or a script that says how to install it."""
    directory = request.app[STATE].web_sdk_dir
    name = request.match_info["name"]
    if directory is None:
        message = "The Web SDK is not installed on this server: run scripts/setup (npm install)."
        return web.Response(
            text=f"window.dpkitSdkMissing = {message!r};", content_type="application/javascript"
        )
    path = (directory / name).resolve()
    if path.parent != directory.resolve() or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def _page_key(state: ServerState) -> KeyRecord:
    for record in state.keys.keys:
        if record.label == DEFAULT_LABEL:
            return record
    return state.keys.keys[0]


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
    return web.json_response(
        {
            "apiKey": _page_key(state).api_key(origin + TOKEN_PATH),
            "sdkInstalled": state.web_sdk_dir is not None,
        },
        headers={"Cache-Control": "no-store"},
    )


async def legacy_jwt(request: web.Request) -> web.Response:
    """``GET /api/jwt``: the Web SDK's token request for pages served by the server itself."""
    state = request.app[STATE]
    refused = _refuse_cross_origin(request, state)
    if refused is not None:
        return refused
    jwt = state.signer.issue(
        {"sub": _page_key(state).key_id},
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
