"""What the Python client does with unknown and malformed frames from the server.

A relay on loopback sits between a Scene and a real server, passes every frame through and slips
in extra ones at chosen moments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable

import aiohttp
import pytest
from aiohttp import web

from dpkit import Scene, ServerConnectionFailed
from dpkit.errors import ProtocolError
from dpkit.server import DpkitServer
from tests.relay import relay_frames

#: Given the name of the server frame just relayed, the frames to slip in after it.
Injector = Callable[[str], list[str]]

UNKNOWN_FRAMES = [
    json.dumps({"category": "mystery", "kind": "event", "name": "x", "body": {}}),
    json.dumps({"category": "webrtc", "kind": "event", "name": "somethingNew", "body": {}}),
    json.dumps({"category": "webrtc", "kind": "request", "name": "offer", "body": {}}),
    json.dumps({"category": "dpkit", "kind": "event", "name": "hint", "body": {"a": 1}}),
]


async def relay(server: DpkitServer, inject: Injector) -> AsyncGenerator[str, None]:
    """Run a relay; yield its session socket URL."""

    async def handle(request: web.Request) -> web.WebSocketResponse:
        downstream = web.WebSocketResponse()
        await downstream.prepare(request)

        async def after(name: str) -> None:
            for extra in inject(name):
                await downstream.send_str(extra)

        await relay_frames(downstream, server.url, request.query, after)
        return downstream

    app = web.Application()
    app.router.add_get("/session", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/session"
    finally:
        await runner.cleanup()


async def session_token(server: DpkitServer) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/token", headers={"key": server.api_key()}) as reply,
    ):
        jwt: str = (await reply.json())["jwt"]
        return jwt


def scene() -> Scene:
    return Scene(requested_media_devices={}, required_media_devices={})


async def test_unknown_server_frames_are_ignored_during_connect(server: DpkitServer) -> None:
    """Unknown categories, names and kinds after every server frame do not disturb connect."""
    client = scene()
    relayed = relay(server, lambda name: UNKNOWN_FRAMES)
    url = await anext(relayed)
    try:
        session_id = await client.connect(url, await session_token(server))
        assert client.is_connected()
        assert session_id in server.state.sessions
    finally:
        await client.disconnect()
        await relayed.aclose()


async def test_malformed_frame_before_connected_fails_connect(server: DpkitServer) -> None:
    """Garbage from the server during connect: serverConnectionFailed caused by a ProtocolError."""
    client = scene()
    relayed = relay(server, lambda name: ["{not json"] if name == "established" else [])
    url = await anext(relayed)
    try:
        with pytest.raises(ServerConnectionFailed, match="malformed frame") as caught:
            await client.connect(url, await session_token(server))
        assert isinstance(caught.value.__cause__, ProtocolError)
        assert not client.is_connected()
    finally:
        await client.close()
        await relayed.aclose()


async def test_malformed_frame_after_connected_is_ignored(server: DpkitServer) -> None:
    """Garbage from the server once connected is logged and ignored; the session goes on."""
    client = scene()
    ended: list[str] = []
    client.on_disconnected_event.add_listener(lambda _s, _id, reason: ended.append(reason))
    relayed = relay(server, lambda name: ["[]", "{oops"] if name == "connected" else [])
    url = await anext(relayed)
    try:
        await client.connect(url, await session_token(server))
        frames = 0
        async for _frame in client.video_frames():
            frames += 1
            if frames == 5:
                break
        assert client.is_connected()
        assert ended == []
    finally:
        await client.disconnect()
        await relayed.aclose()
    assert ended == []  # the app hung up: no disconnect event, as in the Web SDK
