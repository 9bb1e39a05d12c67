"""The HTTP endpoints the Web SDK calls: the token endpoint, telemetry, and the session socket.

Paths the SDK fixes (``/api/telemetry/...``) are kept; the others are dpkit's choice and are
reached through the API key's ``authServer`` and the token answer's ``url``. The SDK never checks
HTTP status codes, so every error is still JSON with an ``error`` field and no ``url``/``jwt``.

What guards them (docs/security.md): a token is handed out only to a browser whose ``Origin``
the key allows, and at most ``rate_per_address`` times a second to one address; a session
socket needs a token that is not in use by another socket and not spent (its session connected),
and is refused past ``max_sockets_per_key`` or ``max_sockets_per_address`` with ``close
{tooManySockets}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from dpkit.apikey import decode_api_key
from dpkit.errors import ConfigurationError
from dpkit.server.cluster.handover import HANDOVER, HANDOVER_HEADER, Handover
from dpkit.server.cluster.membership import UP
from dpkit.server.cluster.queue import TAKEOVER_PATH
from dpkit.server.cluster.relay import relay
from dpkit.server.forwarded import ClientView, client_view
from dpkit.server.origins import origin_allowed
from dpkit.server.pool import DigitalPerson
from dpkit.server.signalling import SignallingSession
from dpkit.server.state import STATE, ServerState
from dpkit.server.token_use import TokenRefused
from dpkit.server.tokens import InvalidToken

logger = logging.getLogger("dpkit.server")

TOKEN_PATH = "/api/token"
SESSION_PATH = "/session"
TELEMETRY_JWT_PATH = "/api/telemetry/jwt"
TELEMETRY_TRACES_PATH = "/api/telemetry/v1/traces"
#: Paths a page on another origin may call (the CORS preflight is answered for these only).
CROSS_ORIGIN_PATHS = frozenset({TOKEN_PATH, TELEMETRY_JWT_PATH, TELEMETRY_TRACES_PATH})
#: dpkit's close reason for a socket over a per-key or per-address limit.
TOO_MANY_SOCKETS = "tooManySockets"
NO_SESSION_TO_RESUME = "noSessionToResume"
#: The largest telemetry batch taken (bytes); the SDK's batches are a few KiB.
MAX_TELEMETRY_BYTES = 256 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    headers = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "key, authorization, content-type",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    if origin is not None:
        # Which origin may use which key is the token endpoint's decision; the browser may read
        # its answer (a token, or why not) from any origin.
        headers["Access-Control-Allow-Origin"] = origin
    return headers


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let pages on other origins call the token and telemetry endpoints, and nothing else."""
    if request.path not in CROSS_ORIGIN_PATHS:
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


def socket_url(view: ClientView, state: ServerState) -> str:
    """The session socket's URL as this client reaches the server (``public_url`` first)."""
    base = state.settings.public_url.rstrip("/") or view.origin
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + SESSION_PATH


def _rate_limited(state: ServerState, limiter_name: str, view: ClientView) -> web.Response | None:
    """A 429 answer if this address asks faster than ``rate_per_address``, else None."""
    limiter = state.token_rate if limiter_name == "token" else state.socket_rate
    if limiter.allow(view.address, time.monotonic()):
        return None
    state.refusals.refuse(f"rate_{limiter_name}", f"{limiter_name} request from {view.address}")
    message = (
        f"too many {limiter_name} requests from {view.address}: at most "
        f"{state.settings.rate_per_address:g} a second (rate_per_address)"
    )
    return _error(429, message, {"Retry-After": "1"})


async def token(request: web.Request) -> web.Response:
    """``GET /api/token`` with header ``key``: a session token and the socket URL."""
    state = request.app[STATE]
    view = client_view(request, state.settings)
    limited = _rate_limited(state, "token", view)
    if limited is not None:
        return limited
    raw_key = request.headers.get("key")
    if not raw_key:
        return _error(401, "missing 'key' header: send the API key in it")
    if len(raw_key) > 4096:
        return _error(401, "invalid API key: it is longer than any key this server issues")
    try:
        api_key = decode_api_key(raw_key)
    except ConfigurationError as exc:
        return _error(401, f"invalid API key: {exc.message}")
    record = state.keys.check(api_key.key_id, api_key.secret)
    if record is None:
        return _error(401, "invalid API key: this server does not know it")
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, record.origins, view.origin):
        state.refusals.refuse(
            "origin", f"token for key {record.key_id} to origin {str(origin)[:100]!r}"
        )
        return _error(
            403,
            f"origin {str(origin)[:100]!r} may not use this API key; its allowed origins: "
            f"{', '.join(record.origins) or 'none (no browser)'}",
        )
    claims: dict[str, object] = {"sub": record.key_id}
    if record.persistence:
        # What the key allows goes with the token: the node it names may not hold this key.
        claims["persist"] = True
    resume = request.query.get("sessionId")
    if resume:
        # Session persistence: this token may only resume that session (docs/protocol.md). The
        # client takes it to /server/<owner> here, which relays it to the owner in a cluster.
        claims["resume"] = resume
        url = socket_url(view, state)
    else:
        # A new session: placed in the cluster, the token good at that node only.
        url, claims["node"] = await _place(state, view)
    jwt = state.signer.issue(
        claims, typ="session", now=time.time(), ttl_s=state.settings.token_ttl_s
    )
    return web.json_response({"url": url, "jwt": jwt})


async def _place(state: ServerState, view: ClientView) -> tuple[str, str]:
    """The session socket URL for a new session, and its node: this node alone, else the
    cluster's choice (:mod:`dpkit.server.cluster.placement`)."""
    own = state.settings.node_id
    membership = state.membership
    if membership is None or membership.status != UP:
        return socket_url(view, state), own
    chosen = state.placement.choose(await membership.nodes())
    state.placement.placed(chosen.node_id)
    if chosen.node_id == own:
        return socket_url(view, state), own
    logger.debug("token placed on node %s (%d free)", chosen.node_id, chosen.free)
    base = chosen.url.rstrip("/")
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + SESSION_PATH, (
        chosen.node_id
    )


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
    state.telemetry_tokens += 1
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
    if (request.content_length or 0) > MAX_TELEMETRY_BYTES:
        return _error(413, f"a telemetry batch is at most {MAX_TELEMETRY_BYTES} bytes")
    body = await request.content.read(MAX_TELEMETRY_BYTES + 1)
    if len(body) > MAX_TELEMETRY_BYTES:
        return _error(413, f"a telemetry batch is at most {MAX_TELEMETRY_BYTES} bytes")
    state.telemetry_batches += 1
    logger.debug("telemetry: %d bytes of traces", len(body))
    return web.json_response({})


async def session_socket(request: web.Request) -> web.StreamResponse:
    """The session socket, ``/session?access_token=<jwt>``, or ``/server/<node>?...`` to resume."""
    state = request.app[STATE]
    if state.closing:
        return _error(503, "the server is shutting down")
    view = client_view(request, state.settings)
    limited = _rate_limited(state, "socket", view)
    if limited is not None:
        return limited
    now = time.time()
    try:
        claims = state.signer.verify(request.query.get("access_token", ""), typ="session", now=now)
    except InvalidToken as exc:
        return _error(401, f"invalid access token: {exc}")
    node = request.match_info.get("node")
    if node is not None and node != state.settings.node_id:
        if state.membership is None:
            return _error(404, f"this is node {state.settings.node_id!r}, not {node!r}")
        return await _relay_to_owner(request, state, view, node)
    placed = claims.get("node")
    if placed is not None and placed != state.settings.node_id:
        state.refusals.refuse("token_node", f"socket from {view.address} for node {placed!r}")
        return _error(401, f"invalid access token: it is for node {str(placed)[:64]!r}")
    token_id = str(claims.get("jti", ""))
    try:
        state.tokens_in_use.open(token_id, float(claims["exp"]), now)
    except TokenRefused as exc:
        state.refusals.refuse("token_reuse", f"socket from {view.address}: {exc}")
        return _error(401, f"invalid access token: {exc}")
    key_id = str(claims.get("sub", ""))
    session: SignallingSession | None = None
    try:
        session = await _serve_socket(request, state, view, key_id, claims, node)
        return session.ws
    finally:
        # A socket handed to another node is spent here: it goes on there.
        spent = session is not None and (
            session.info.connected_at is not None or session.handed_over
        )
        state.tokens_in_use.close(token_id, spent=spent)


async def takeover(request: web.Request) -> web.StreamResponse:
    """A waiting socket of another node, for the Digital Person this node's share of the
    cluster's queue reserved for it (:mod:`dpkit.server.cluster.handover`)."""
    state = request.app[STATE]
    queue = state.cluster_queue
    if queue is None:
        return _error(404, "this node is not in a cluster")
    if state.closing:
        return _error(503, "the server is shutting down")
    now = time.time()
    address = client_view(request, state.settings).address
    try:
        claims = state.signer.verify(
            request.headers.get(HANDOVER_HEADER, ""), typ=HANDOVER, now=now
        )
    except InvalidToken as exc:
        state.refusals.refuse("handover", f"takeover from {address}: {exc}")
        return _error(401, f"invalid handover ticket: {exc}")
    if claims.get("node") != state.settings.node_id:
        state.refusals.refuse("handover", f"takeover from {address} for another node")
        return _error(
            401, f"invalid handover ticket: it is for node {str(claims.get('node'))[:64]!r}"
        )
    person = queue.claim(str(claims.get("grant", "")))
    if person is None:
        return _error(410, "no Digital Person is reserved for this grant (it lapsed, or was taken)")
    handover = Handover.from_claims(claims)
    view = ClientView("http", request.host, handover.client_address or address)
    session = await _serve_socket(
        request,
        state,
        view,
        handover.key_id,
        {"persist": handover.persistence, "jti": handover.token_id},
        None,
        granted=person,
        waited_s=handover.waited_s,
    )
    return session.ws


def _give_back_claimed(state: ServerState, person: DigitalPerson) -> None:
    """A claimed Digital Person that no session took (its socket failed or was refused): to
    the next in turn, as if freed."""
    state.pool.hand_on(person)


async def _relay_to_owner(
    request: web.Request, state: ServerState, view: ClientView, node: str
) -> web.StreamResponse:
    """``/server/<node>`` for another node of the cluster: relayed there, or, with no such
    node alive, ``close {noSessionToResume}`` at once (:mod:`dpkit.server.cluster.relay`)."""
    assert state.membership is not None
    owner = next((n for n in await state.membership.nodes() if n.node_id == node), None)
    settings = state.settings
    ws = web.WebSocketResponse(
        heartbeat=settings.socket_heartbeat_s, max_msg_size=4 * settings.max_frame_bytes
    )
    await ws.prepare(request)
    if owner is not None:
        base = owner.url.rstrip("/").replace("https://", "wss://", 1)
        target = base.replace("http://", "ws://", 1) + f"/server/{node}?{request.query_string}"
        headers = {
            "User-Agent": request.headers.get("User-Agent", "")[:512],
            "X-Forwarded-For": view.address,
        }
        logger.debug("relaying a resume for node %s to %s", node, owner.url)
        if await relay(ws, target, headers, 4 * settings.max_frame_bytes):
            return ws
    session = SignallingSession(
        state,
        ws,
        "",
        client_kind(request.headers.get("User-Agent", "")),
        client_address=view.address,
    )
    await session.refuse(NO_SESSION_TO_RESUME)
    return ws


async def _serve_socket(
    request: web.Request,
    state: ServerState,
    view: ClientView,
    key_id: str,
    claims: dict[str, object],
    node: str | None,
    *,
    granted: DigitalPerson | None = None,
    waited_s: float = 0.0,
) -> SignallingSession:
    settings = state.settings
    record = state.keys.get(key_id)
    resume = claims.get("resume")
    # aiohttp drops a frame past its bound with no close frame; below it the session machine
    # refuses one over max_frame_bytes with close {frameTooLarge}, which the client can read.
    ws = web.WebSocketResponse(
        heartbeat=settings.socket_heartbeat_s, max_msg_size=4 * settings.max_frame_bytes
    )
    try:
        await ws.prepare(request)
    except BaseException:
        if granted is not None:
            _give_back_claimed(state, granted)
        raise
    user_agent = request.headers.get("User-Agent", "")
    session = SignallingSession(
        state,
        ws,
        key_id,
        client_kind(user_agent),
        # The key may live on the node that issued the token: its claim says what it allows.
        persistence=record.persistence if record is not None else claims.get("persist") is True,
        resume=resume if isinstance(resume, str) and node is not None else None,
        client_address=view.address,
        user_agent=user_agent,
        granted=granted,
    )
    session.info.token_id = str(claims.get("jti", ""))
    if granted is not None:
        session.info.queue_wait_s = waited_s
    over = _over_socket_limit(state, key_id, view.address)
    if over is not None:
        state.refusals.refuse(over, f"socket {session.info.socket_id} from {view.address}")
        await session.refuse(TOO_MANY_SOCKETS)
        if granted is not None:
            _give_back_claimed(state, granted)
        return session
    state.live.add(session)
    try:
        await session.run()
    finally:
        state.live.discard(session)
        state.sockets_per_key.release(key_id)
        state.sockets_per_address.release(view.address)
    return session


def _over_socket_limit(state: ServerState, key_id: str, address: str) -> str | None:
    """The limit this socket would pass (and None, having counted it in), else its name."""
    if not state.sockets_per_key.try_acquire(key_id):
        return "max_sockets_per_key"
    if not state.sockets_per_address.try_acquire(address):
        state.sockets_per_key.release(key_id)
        return "max_sockets_per_address"
    return None


def client_kind(user_agent: str) -> str:
    """``python`` for dpkit's client, ``browser`` for a web page, else ``other``."""
    if user_agent.startswith("dpkit"):
        return "python"
    if "Mozilla/" in user_agent:
        return "browser"
    return "other"


def add_routes(app: web.Application) -> None:
    app.router.add_get(TOKEN_PATH, token)
    app.router.add_get(TAKEOVER_PATH, takeover)
    app.router.add_get(TELEMETRY_JWT_PATH, telemetry_jwt)
    app.router.add_post(TELEMETRY_TRACES_PATH, telemetry_traces)
    app.router.add_get(SESSION_PATH, session_socket)
    app.router.add_get("/server/{node}", session_socket)
