"""One view of the cluster: any node's event stream, session list and close reach every node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp

from dpkit import Scene
from dpkit.server import DpkitServer
from dpkit.server.feed import StateFeed
from tests.served import served
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER, EXPIRY_S, eventually, nodes_of
from tests.support import UNIT, ServerFactory


async def _two_nodes(
    start_server: ServerFactory, redis: RedisServer
) -> tuple[DpkitServer, DpkitServer]:
    one = await start_server(capacity=1, redis_url=redis.url, node_id="n1", **CLUSTER)
    three = await start_server(capacity=1, redis_url=redis.url, node_id="n3", **CLUSTER)

    async def both() -> bool:
        return set(await nodes_of(one)) - {""} == {"n1", "n3"}

    await eventually(both)
    return one, three


def _scene(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


async def _sessions(server: DpkitServer) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    url = f"{server.url}/api/cluster/sessions"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        body: dict[str, Any] = await response.json()
    sessions: list[dict[str, Any]] = body["sessions"]
    return sessions


async def test_node_1s_event_stream_shows_node_3s_session_events(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one, three = await _two_nodes(start_server, redis_server)
    headers = {"Authorization": f"Bearer {one.admin_token}"}
    seen: list[dict[str, Any]] = []
    url = f"{one.url}/api/events"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as stream:
        await stream.content.readline()  # the stream's opening comment: subscribed
        scene = _scene(three)
        session_id = await scene.connect()
        try:
            async with asyncio.timeout(10 * UNIT):
                async for line in stream.content:
                    if line.startswith(b"data: "):
                        seen.append(json.loads(line[6:]))
                        if any(e.get("state") == "Connected" for e in seen):
                            break
        finally:
            await scene.disconnect()
    states = [e["state"] for e in seen if e["type"] == "state"]
    assert states == [
        "SearchingForDigitalPerson",
        "DownloadingAssets",
        "ConnectingToDigitalPerson",
        "Connected",
    ]
    assert {e["node"] for e in seen} == {"n3"}
    assert seen[-1]["sessionId"] == session_id


async def test_an_admin_close_through_node_1_ends_a_session_on_node_3_with_its_reason(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one, three = await _two_nodes(start_server, redis_server)
    scene = _scene(three)
    reasons: list[str] = []
    scene.on_disconnected_event.add_listener(lambda _s, _id, reason: reasons.append(reason))
    session_id = await scene.connect()
    try:

        async def listed() -> bool:
            return any(s.get("sessionId") == session_id for s in await _sessions(one))

        await eventually(listed)
        headers = {"Authorization": f"Bearer {one.admin_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{one.url}/api/sessions/{session_id}/close",
                headers=headers,
                json={"reason": "maintenance"},
            ) as response,
        ):
            assert response.status == 202
            assert await response.json() == {
                "sessionId": session_id,
                "reason": "maintenance",
                "node": "n3",
            }
        async with asyncio.timeout(10 * UNIT):
            while not reasons:  # noqa: ASYNC110 - the scene's listener has no event to await
                await asyncio.sleep(0.05)
        assert reasons == ["maintenance"]
        assert not three.state.sessions
    finally:
        await scene.disconnect()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{one.url}/api/sessions/no-such/close",
            headers={"Authorization": f"Bearer {one.admin_token}"},
        ) as response,
    ):
        assert response.status == 404


async def test_a_killed_nodes_sessions_show_as_lost(
    start_server: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = await start_server(capacity=1, redis_url=redis_server.url, node_id="n1", **CLUSTER)
    async with served(
        tmp_path / "n2",
        redis_url=redis_server.url,
        node_id="n2",
        cluster_heartbeat_s=CLUSTER["cluster_heartbeat_s"],
        cluster_expiry_s=EXPIRY_S,
    ) as two:
        scene = Scene(two.api_key(), requested_media_devices={}, required_media_devices={})
        session_id = await scene.connect()
        try:

            async def live_on_n2() -> bool:
                return any(
                    s.get("sessionId") == session_id and s["node"] == "n2" and not s["lost"]
                    for s in await _sessions(one)
                )

            async def lost_on_n2() -> bool:
                return any(
                    s.get("sessionId") == session_id and s["lost"] for s in await _sessions(one)
                )

            await eventually(live_on_n2)
            os.kill(two.pid, signal.SIGKILL)
            await eventually(lost_on_n2, 10 * UNIT)
        finally:
            await scene.disconnect()


def test_other_nodes_events_reach_the_cluster_stream_only() -> None:
    feed = StateFeed()
    webhooks = feed.subscription()
    stream = feed.subscription(cluster=True)
    passed_on: list[dict[str, Any]] = []
    feed.on_local = passed_on.append
    feed.publish({"type": "state", "state": "Connected"})
    feed.publish_remote({"type": "state", "state": "Connected", "node": "n3"})
    assert webhooks._queue.qsize() == 1  # its own event only: webhooks go out once
    assert stream._queue.qsize() == 2
    assert passed_on == [{"type": "state", "state": "Connected"}]
