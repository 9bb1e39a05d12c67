"""The HTTP endpoints the Web SDK calls: the token endpoint, telemetry, and the session socket.

Paths the SDK fixes (``/api/telemetry/...``) are kept; the others are dpkit's choice and are
reached through the API key's ``authServer`` and the token answer's ``url``. The SDK never checks
HTTP status codes, so every error is still JSON with an ``error`` field and no ``url``/``jwt``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from dpkit.apikey import decode_api_key
from dpkit.errors import ConfigurationError
from dpkit.server.signalling import SignallingSession
from dpkit.server.state import STATE, ServerState
from dpkit.server.tokens import InvalidToken

logger = logging.getLogger("dpkit.server")

TOKEN_PATH = "/api/token"
SESSION_PATH = "/session"
TELEMETRY_JWT_PATH = "/api/telemetry/jwt"
TELEMETRY_TRACES_PATH = "/api/telemetry/v1/traces"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _cors_headers(request: web.Request) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "key, authorization, content-type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let pages on other origins call the API (the token request carries a ``key`` header)."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=_cors_headers(request))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Answer with a plain response carrying the same status, headers and body.
        headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-length"}
        response = web.Response(status=exc.status, body=exc.body, headers=headers)
    if not response.prepared:
        response.headers.update(_cors_headers(request))
    return response


def socket_url(request: web.Request, state: ServerState) -> str:
    """The session socket's URL as this client reaches the server."""
    base = state.settings.public_url.rstrip("/") or f"{request.scheme}://{request.host}"
    return base.replace("https://", "wss://").replace("http://", "ws://") + SESSION_PATH


async def token(request: web.Request) -> web.Response:
    """``GET /api/token`` with header ``key``: a session token and the socket URL."""
    state = request.app[STATE]
    raw_key = request.headers.get("key")
    if not raw_key:
        return _error(401, "missing 'key' header: send the API key in it")
    try:
        api_key = decode_api_key(raw_key)
    except ConfigurationError as exc:
        return _error(401, f"invalid API key: {exc.message}")
    record = state.keys.check(api_key.key_id, api_key.secret)
    if record is None:
        return _error(401, "invalid API key: this server does not know it")
    claims: dict[str, str] = {"sub": record.key_id}
    resume = request.query.get("sessionId")
    if resume:
        # Session persistence: this token may only resume that session (docs/protocol.md).
        claims["resume"] = resume
    jwt = state.signer.issue(
        claims, typ="session", now=time.time(), ttl_s=state.settings.token_ttl_s
    )
    return web.json_response({"url": socket_url(request, state), "jwt": jwt})


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip()


async def telemetry_jwt(request: web.Request) -> web.Response:
    """``GET /api/telemetry/jwt``: answered at once, since the SDK waits for it."""
    state = request.app[STATE]
    try:
        claims = state.signer.verify(_bearer(request), typ="session", now=time.time())
    except InvalidToken:
        return web.json_response({"success": False})
    telemetry = state.signer.issue(
        {"sub": claims.get("sub")}, typ="telemetry", now=time.time(), ttl_s=3600
    )
    return web.json_response({"success": True, "telemetryJwt": telemetry})


async def telemetry_traces(request: web.Request) -> web.Response:
    """``POST /api/telemetry/v1/traces``: accept OTLP/HTTP JSON and count it."""
    state = request.app[STATE]
    try:
        state.signer.verify(_bearer(request), typ="telemetry", now=time.time())
    except InvalidToken as exc:
        return _error(401, str(exc))
    body = await request.read()
    state.telemetry_batches += 1
    logger.debug("telemetry: %d bytes of traces", len(body))
    return web.json_response({})


async def session_socket(request: web.Request) -> web.StreamResponse:
    """The session socket, ``/session?access_token=<jwt>``, or ``/server/<node>?...`` to resume."""
    state = request.app[STATE]
    if state.closing:
        return _error(503, "the server is shutting down")
    try:
        claims = state.signer.verify(
            request.query.get("access_token", ""), typ="session", now=time.time()
        )
    except InvalidToken as exc:
        return _error(401, f"invalid access token: {exc}")
    node = request.match_info.get("node")
    if node is not None and node != state.settings.node_id:
        return _error(404, f"this is node {state.settings.node_id!r}, not {node!r}")
    key_id = str(claims.get("sub", ""))
    record = state.keys.get(key_id)
    resume = claims.get("resume")
    settings = state.settings
    # aiohttp drops a frame past its bound with no close frame; below it the session machine
    # refuses one over max_frame_bytes with close {frameTooLarge}, which the client can read.
    ws = web.WebSocketResponse(
        heartbeat=settings.socket_heartbeat_s, max_msg_size=4 * settings.max_frame_bytes
    )
    await ws.prepare(request)
    session = SignallingSession(
        state,
        ws,
        key_id,
        client_kind(request.headers.get("User-Agent", "")),
        persistence=record is not None and record.persistence,
        resume=resume if isinstance(resume, str) and node is not None else None,
    )
    state.live.add(session)
    try:
        await session.run()
    finally:
        state.live.discard(session)
    return ws


def client_kind(user_agent: str) -> str:
    """``python`` for dpkit's client, ``browser`` for a web page, else ``other``."""
    if user_agent.startswith("dpkit"):
        return "python"
    if "Mozilla/" in user_agent:
        return "browser"
    return "other"


def add_routes(app: web.Application) -> None:
    app.router.add_get(TOKEN_PATH, token)
    app.router.add_get(TELEMETRY_JWT_PATH, telemetry_jwt)
    app.router.add_post(TELEMETRY_TRACES_PATH, telemetry_traces)
    app.router.add_get(SESSION_PATH, session_socket)
    app.router.add_get("/server/{node}", session_socket)
