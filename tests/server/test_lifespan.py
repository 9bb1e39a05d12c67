"""The server's lifespan: keys that outlive a restart, deadlines, and a shutdown that says why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from dpkit import Scene
from dpkit.protocol.messages import Close, Established
from dpkit.server import DpkitServer
from tests.raw_client import raw_client
from tests.support import UNIT, ServerFactory, make_settings


def quiet_scene(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


async def test_shutdown_ends_live_sessions_with_a_reason(tmp_path: Path) -> None:
    """Stopping the server closes each live session with reason normal, then refuses sockets."""
    server = DpkitServer(make_settings(tmp_path))
    await server.start()
    scene = quiet_scene(server)
    ended: asyncio.Queue[str] = asyncio.Queue()
    scene.on_disconnected_event.add_listener(lambda _s, _id, reason: ended.put_nowait(reason))
    session_id = await scene.connect()
    await server.stop()
    assert await asyncio.wait_for(ended.get(), 5 * UNIT) == "normal"
    assert [(i.session_id, i.ending) for i in server.state.ended] == [(session_id, "normal")]
    assert server.state.live == set()
    await scene.close()


async def test_api_key_survives_a_restart(tmp_path: Path) -> None:
    """Keys live in the data directory: the key printed before a restart still connects."""
    async with DpkitServer(make_settings(tmp_path)) as first:
        key = first.api_key()
        port = first.port
    async with DpkitServer(make_settings(tmp_path, port=port)) as second:
        assert second.api_key() == key
        scene = quiet_scene(second)
        await scene.connect()
        await scene.disconnect()


async def test_client_that_never_offers_gets_session_timeout(start_server: ServerFactory) -> None:
    """No offer within offer_timeout_s: close {sessionTimeout}, and the person is free again."""
    server = await start_server(offer_timeout_s=0.2 * UNIT)
    async with raw_client(server) as client:
        assert isinstance(await client.receive(), Established)
        assert await client.receive() == Close("sessionTimeout")
        assert await client.receive() is None
    assert server.state.pool.in_use == 0


async def test_token_is_refused_after_it_expires(start_server: ServerFactory) -> None:
    """A token older than token_ttl_s no longer opens a session socket."""
    server = await start_server(token_ttl_s=0.5)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/api/token", headers={"key": server.api_key()}) as r:
            token = await r.json()
        await asyncio.sleep(1.5)  # a JWT's exp has one-second resolution
        async with http.get(token["url"], params={"access_token": token["jwt"]}) as reply:
            assert reply.status == 401
            assert "expired" in (await reply.json())["error"]
