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
from dpkit.server.settings import Settings
from dpkit.server.state import STATE

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


async def page_config(request: web.Request) -> web.Response:
    """What the page served by this server needs: the default API key, aimed at this origin."""
    state = request.app[STATE]
    record = state.keys.keys[0]
    origin = state.settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return web.json_response(
        {
            "apiKey": record.api_key(origin + TOKEN_PATH),
            "sdkInstalled": state.web_sdk_dir is not None,
        }
    )


async def legacy_jwt(request: web.Request) -> web.Response:
    """``GET /api/jwt``: the Web SDK's token request for pages served by the server itself."""
    state = request.app[STATE]
    record = state.keys.keys[0]
    jwt = state.signer.issue(
        {"sub": record.key_id}, typ="session", now=time.time(), ttl_s=state.settings.token_ttl_s
    )
    return web.json_response({"url": socket_url(request, state), "jwt": jwt})


def add_page_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR, show_index=False)
    app.router.add_get("/sdk/{name}", sdk)
    app.router.add_get("/api/page-config", page_config)
    app.router.add_get("/api/jwt", legacy_jwt)
