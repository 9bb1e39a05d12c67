"""The admin API: sessions, a live feed of their state changes, closing one, and metrics.

Everything but ``/metrics`` needs the admin token, as ``Authorization: Bearer <token>``; the
event stream, which an ``EventSource`` opens without headers, also takes ``?token=<token>``
(redacted from the access log). The token is generated on first start and kept in ``keys.json``;
the ``admin_token`` setting overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from dataclasses import asdict

from aiohttp import web

from dpkit.server.cluster.membership import redis_errors
from dpkit.server.cluster.metrics import render_cluster_metrics
from dpkit.server.cluster.nodes import NodeRecord
from dpkit.server.media_metrics import render_media_metrics
from dpkit.server.state import STATE, ServerState

logger = logging.getLogger("dpkit.server.admin")

#: A close reason an operator may give: it goes to the client in ``close {reason}``.
REASON = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def admin_token(state: ServerState) -> str:
    return state.settings.admin_token or state.keys.admin_token


def _authorized(request: web.Request, *, query_token: bool) -> bool:
    state = request.app[STATE]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not given and query_token:
        given = request.query.get("token", "")
    return hmac.compare_digest(given.encode(), admin_token(state).encode())


def _require_admin(request: web.Request, *, query_token: bool = False) -> None:
    if not _authorized(request, query_token=query_token):
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "the admin API needs the admin token"}),
            content_type="application/json",
        )


async def list_sessions(request: web.Request) -> web.Response:
    """``GET /api/sessions?limit=N``: recent sessions, newest first (live ones have no ending)."""
    _require_admin(request)
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "50"))))
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "limit must be an integer"}') from None
    records = request.app[STATE].store.list(limit)
    return web.json_response({"sessions": [asdict(record) for record in records]})


async def show_session(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}``: one session (by session or socket id) with its timeline."""
    _require_admin(request)
    state = request.app[STATE]
    record = state.store.show(request.match_info["id"])
    if record is None:
        return web.json_response({"error": "no such session"}, status=404)
    shown = asdict(record)
    live = state.sessions.get(record.session_id or "")
    if live is not None:
        # What only the live session knows: the user's audio level as the server hears it.
        shown["live"] = {
            "userAudioDbfs": live.user_audio_dbfs,
            "receivedFrames": live.received_frames,
            "cameraActive": bool(live.info.user_camera and live.info.user_camera[-1]),
        }
    return web.json_response(shown)


async def close_session(request: web.Request) -> web.Response:
    """``POST /api/sessions/{id}/close`` with optional ``{"reason": ...}``: end a live session."""
    _require_admin(request)
    state = request.app[STATE]
    session_id = request.match_info["id"]
    reason = "normal"
    if request.can_read_body:
        with contextlib.suppress(ValueError):
            body = await request.json()
            if isinstance(body, dict) and isinstance(body.get("reason"), str):
                reason = body["reason"]
    if not REASON.fullmatch(reason):
        return web.json_response(
            {"error": "reason must be a word of letters, digits, _ or - (at most 64)"}, status=400
        )
    session = state.sessions.get(session_id)
    if session is None:
        return await _close_elsewhere(state, session_id, reason)
    await session.end(reason)
    return web.json_response(
        {"sessionId": session.session_id, "reason": reason, "node": state.settings.node_id}
    )


async def _close_elsewhere(state: ServerState, session_id: str, reason: str) -> web.Response:
    """A session this node does not hold: its owner in the cluster is asked to close it."""
    events = state.cluster_events
    owner = None
    if events is not None and len(session_id) <= 128:
        with contextlib.suppress(*redis_errors()):  # Redis away: no cluster to ask
            owner = await events.owner_of(session_id)
            if owner is not None:
                await events.ask_to_close(owner, session_id, reason)
    if owner is None:
        return web.json_response({"error": "no such live session"}, status=404)
    return web.json_response({"sessionId": session_id, "reason": reason, "node": owner}, status=202)


async def cluster_sessions(request: web.Request) -> web.Response:
    """``GET /api/cluster/sessions``: every node's live sessions, a gone node's ``lost``."""
    _require_admin(request)
    state = request.app[STATE]
    if state.cluster_events is None or state.membership is None:
        live = [
            {
                "node": state.settings.node_id,
                "socketId": session.info.socket_id,
                "sessionId": session.info.session_id,
                "lost": False,
            }
            for session in state.live
        ]
        return web.json_response({"sessions": live})
    nodes = {node.node_id for node in await state.membership.nodes()}
    try:
        sessions = await state.cluster_events.sessions(nodes)
    except redis_errors() as exc:  # Redis away: say so rather than show half of it
        return web.json_response(
            {"error": f"the cluster is unreachable: {type(exc).__name__}"}, status=503
        )
    return web.json_response({"sessions": sessions})


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /api/events``: every session's state changes as Server-Sent Events.

    After ``feed_heartbeat_s`` of quiet a comment goes out, so proxies keep the stream open and a
    reader that left is noticed: writing to it fails, and the stream ends quietly.
    """
    _require_admin(request, query_token=True)
    state = request.app[STATE]
    heartbeat_s = state.settings.feed_heartbeat_s
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # Subscribed before the reader hears anything: once it has the first bytes, it misses no
    # event. A subscription's next() can be timed out without ending it (a generator's cannot:
    # the timeout would close it, and the next read would raise StopAsyncIteration).
    # A cluster node's stream carries every node's events (each with its ``node``).
    with state.feed.subscription(cluster=True) as subscription:
        try:
            await response.prepare(request)
            await response.write(b": dpkit session feed\n\n")
            while True:
                try:
                    async with asyncio.timeout(heartbeat_s):
                        event = await subscription.next()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                data = json.dumps(event, separators=(",", ":"))
                await response.write(
                    f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n".encode()
                )
        except ConnectionError:
            # The reader left; that is how an event stream ends.
            logger.debug("event stream reader left (%s)", request.remote)
    return response


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    state = request.app[STATE]
    lines = [
        "# HELP dpkit_refusals_total Connections, requests and sockets refused, by limit.",
        "# TYPE dpkit_refusals_total counter",
        *(
            f'dpkit_refusals_total{{limit="{limit}"}} {state.refusals[limit]}'
            for limit in state.refusals
        ),
    ]
    body = (
        state.metrics.render()
        + "\n".join(lines)
        + "\n"
        + render_media_metrics(state.pool.broadcast.stats())
        + await render_cluster_metrics(state)
    )
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


async def list_nodes(request: web.Request) -> web.Response:
    """``GET /api/nodes``: every node of the cluster (just this one without Redis)."""
    _require_admin(request)
    state = request.app[STATE]
    now = time.time()
    membership = state.membership
    if membership is None:
        pool = state.pool
        nodes = [
            NodeRecord(
                node_id=state.settings.node_id,
                url=state.url or "http://localhost",
                capacity=pool.capacity,
                load=pool.in_use,
                queue=pool.queue_length,
                instance="alone",
                started_at=state.started_at,
                seen_at=now,
            )
        ]
        redis = "off"
    else:
        nodes = await membership.nodes()
        redis = membership.status
    body = {
        "node": state.settings.node_id,
        "redis": redis,
        "nodes": [node.for_api(now) for node in nodes],
        "capacity": sum(node.capacity for node in nodes),
        "load": sum(node.load for node in nodes),
        "queue": sum(node.queue for node in nodes),
    }
    return web.json_response(body)


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sessions/{id}", show_session)
    app.router.add_post("/api/sessions/{id}/close", close_session)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/nodes", list_nodes)
    app.router.add_get("/api/cluster/sessions", cluster_sessions)
