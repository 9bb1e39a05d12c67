"""Nodes on a real Redis: each sees the others, a dead one leaves, Redis going away is survived.

Every node here is a real server (in-process ``DpkitServer`` or a ``dpkit serve`` process) on a
free loopback port; Redis is Debian's ``redis-server``, started and stopped by the test.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dpkit import Scene
from dpkit.errors import ConfigurationError
from dpkit.server import DpkitServer
from dpkit.server.cluster.membership import redacted
from tests.served import served
from tests.server.cluster.redis_server import RedisServer
from tests.support import UNIT, ServerFactory, until

HEARTBEAT_S = 0.2
EXPIRY_S = 1.0
CLUSTER = {"cluster_heartbeat_s": HEARTBEAT_S, "cluster_expiry_s": EXPIRY_S}


async def _get(url: str, token: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url + path, headers=headers) as response:
        assert response.status == 200, await response.text()
        if path == "/metrics":
            return await response.text()
        return await response.json()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5 * UNIT) -> None:
    """Poll ``check`` (another node's HTTP API, which has no event to await) until it holds."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling over HTTP
            await asyncio.sleep(0.05)


async def nodes_of(server: DpkitServer) -> dict[str, Any]:
    body = await _get(server.url, server.admin_token, "/api/nodes")
    return {node["node_id"]: node for node in body["nodes"]} | {"": body}


async def _node(start_server: ServerFactory, redis: RedisServer, node_id: str) -> DpkitServer:
    server: DpkitServer = await start_server(
        capacity=1, redis_url=redis.url, node_id=node_id, **CLUSTER
    )
    return server


async def test_every_node_lists_every_node_with_its_url_capacity_and_load(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one, two, three = [await _node(start_server, redis_server, f"n{i}") for i in (1, 2, 3)]
    for server in (one, two, three):
        seen = await nodes_of(server)
        assert set(seen) - {""} == {"n1", "n2", "n3"}
        assert seen[""]["redis"] == "up"
        assert seen[""]["capacity"] == 3
    seen = await nodes_of(one)
    assert seen["n2"]["url"] == two.url
    assert seen["n3"]["url"] == three.url
    assert (seen["n2"]["capacity"], seen["n2"]["load"], seen["n2"]["free"]) == (1, 0, 1)
    scene = Scene(two.api_key(), requested_media_devices={}, required_media_devices={})
    await scene.connect()
    try:
        # Node 1 sees node 2's load by node 2's next heartbeat.
        async def n2_busy() -> bool:
            return bool((await nodes_of(one))["n2"]["load"] == 1)

        await eventually(n2_busy)
    finally:
        await scene.disconnect()
    metrics = await _get(one.url, one.admin_token, "/metrics")
    assert "dpkit_cluster_redis_up 1" in metrics
    assert "dpkit_cluster_nodes 3" in metrics
    assert "dpkit_cluster_capacity 3" in metrics


async def test_a_node_alone_lists_itself_and_says_redis_is_off(server: DpkitServer) -> None:
    seen = await nodes_of(server)
    assert seen[""]["redis"] == "off"
    assert list(set(seen) - {""}) == ["node-1"]
    assert seen["node-1"]["url"] == server.url
    assert "dpkit_cluster" not in await _get(server.url, server.admin_token, "/metrics")


async def test_the_nodes_list_needs_the_admin_token(server: DpkitServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/nodes") as response:
        assert response.status == 401


async def test_a_node_killed_with_sigkill_leaves_within_the_expiry(
    start_server: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = await _node(start_server, redis_server, "n1")
    async with served(
        tmp_path / "n2",
        redis_url=redis_server.url,
        node_id="n2",
        cluster_heartbeat_s=HEARTBEAT_S,
        cluster_expiry_s=EXPIRY_S,
    ) as two:

        async def listed() -> bool:
            return "n2" in await nodes_of(one)

        async def gone() -> bool:
            return not await listed()

        await eventually(listed, 10 * UNIT)
        os.kill(two.pid, signal.SIGKILL)
        killed = time.monotonic()
        await eventually(gone, 10 * UNIT)
        gone_after = time.monotonic() - killed
    # Within the expiry of its last heartbeat (and the poll's own granularity).
    assert gone_after <= EXPIRY_S + 0.3
    # Its banner said it joined, and never showed the Redis password (there is none here).
    assert "cluster:         node n2 on redis://127.0.0.1" in two.log()
    assert "(joined)" in two.log()


async def test_a_node_that_stops_leaves_at_once(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await _node(start_server, redis_server, "n1")
    two = await _node(start_server, redis_server, "n2")
    assert "n2" in await nodes_of(one)
    await two.stop()
    assert "n2" not in await nodes_of(one)


async def test_without_redis_a_node_serves_alone_and_rejoins_when_it_returns(
    start_server: ServerFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dpkit.server.cluster")
    one = await _node(start_server, redis_server, "n1")
    two = await _node(start_server, redis_server, "n2")
    await redis_server.stop()
    await until(lambda: one.state.membership is not None and one.state.membership.status == "down")
    seen = await nodes_of(one)
    assert seen[""]["redis"] == "down"
    assert set(seen) - {""} == {"n1"}
    assert "dpkit_cluster_redis_up 0" in await _get(one.url, one.admin_token, "/metrics")
    assert "Redis at redis://127.0.0.1" in caplog.text
    assert "unreachable" in caplog.text
    # New sessions are still served, locally.
    scene = Scene(one.api_key(), requested_media_devices={}, required_media_devices={})
    await scene.connect()
    await scene.disconnect()
    # Redis comes back empty: both nodes register again within a few heartbeats.
    await redis_server.start()

    async def both() -> bool:
        return set(await nodes_of(one)) - {""} == {"n1", "n2"}

    await eventually(both)
    assert (await nodes_of(two))[""]["redis"] == "up"
    assert "node n1 registered" in caplog.text


async def test_the_redis_password_never_reaches_the_log(
    start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    redis = RedisServer(tmp_path / "redis-auth", password="s3cret-redis-pass")
    await redis.start()
    try:
        one = await _node(start_server, redis, "n1")
        assert (await nodes_of(one))[""]["redis"] == "up"
        await redis.stop()
        await until(
            lambda: one.state.membership is not None and one.state.membership.status == "down"
        )
    finally:
        await redis.stop()
    assert "unreachable" in caplog.text
    assert "s3cret-redis-pass" not in caplog.text
    assert redacted("redis://user:pw@host:6380/2") == "redis://host:6380/2"
    assert redacted("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_cluster_settings_are_checked(tmp_path: Path) -> None:
    from tests.support import make_settings

    with pytest.raises(ConfigurationError, match="redis_url must be") as caught:
        make_settings(tmp_path, redis_url="http://user:hunter2@example.com")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="node_id"):
        make_settings(tmp_path, node_id="bad id/with slash")
    with pytest.raises(ConfigurationError, match="at least twice"):
        make_settings(
            tmp_path, redis_url="redis://x", cluster_heartbeat_s=2.0, cluster_expiry_s=3.0
        )
