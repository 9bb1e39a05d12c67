"""The cluster's one queue: arrival order across nodes, and the first node that frees serves.

Three nodes of capacity 1 on a real ``redis-server``; real Python clients with real WebRTC on
loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from dpkit import NoDevices, Scene
from dpkit.protocol.server import HANDED_OVER
from dpkit.protocol.states import QueueInfo
from dpkit.server import DpkitServer
from dpkit.server.cluster.handover import HANDOVER, HANDOVER_HEADER
from dpkit.server.cluster.queue import TAKEOVER_PATH
from tests.served import served
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER, eventually, nodes_of
from tests.support import UNIT, ServerFactory, until


def quiet_scene(api_key: str) -> Scene:
    return Scene(
        api_key,
        requested_media_devices={},
        required_media_devices={},
        devices=NoDevices(),
        play_audio=False,
    )


class Waiting:
    """A scene connecting in a task, with every queue position it heard."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.positions: list[QueueInfo] = []
        scene.connection_state.on_connection_state_updated.add_listener(self._heard)
        self.connecting = asyncio.ensure_future(scene.connect())

    def _heard(self, data: object) -> None:
        queue = getattr(data, "queue", None)
        if isinstance(queue, QueueInfo):
            self.positions.append(queue)

    @property
    def last(self) -> QueueInfo | None:
        return self.positions[-1] if self.positions else None


async def _end_all(holders: list[Scene], waiting: list[Waiting]) -> None:
    """Stop the connects still waiting, and disconnect every scene."""
    for each in waiting:
        each.connecting.cancel()
        with contextlib.suppress(BaseException):
            await each.connecting
    scenes = holders + [each.scene for each in waiting]
    await asyncio.gather(*(scene.disconnect() for scene in scenes), return_exceptions=True)


@pytest.fixture
async def cluster(start_server: ServerFactory, redis_server: RedisServer) -> list[DpkitServer]:
    nodes = [
        await start_server(capacity=1, redis_url=redis_server.url, node_id=f"n{i}", **CLUSTER)
        for i in (1, 2, 3)
    ]

    async def all_listed() -> bool:
        return set(await nodes_of(nodes[0])) - {""} == {"n1", "n2", "n3"}

    await eventually(all_listed)
    return nodes


async def _metrics(node: DpkitServer) -> str:
    headers = {"Authorization": f"Bearer {node.admin_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(node.url + "/metrics", headers=headers) as r,
    ):
        return await r.text()


def node_of(scene: Scene, nodes: list[DpkitServer]) -> DpkitServer:
    return next(node for node in nodes if scene.session_id in node.state.sessions)


async def test_a_fourth_client_waits_in_the_cluster_queue_and_the_first_node_to_free_serves_it(
    cluster: list[DpkitServer],
) -> None:
    one = cluster[0]
    key = one.api_key()
    holders = [quiet_scene(key) for _ in range(3)]
    waiting: list[Waiting] = []
    try:
        for holder in holders:
            await holder.connect()
        assert {node_of(holder, cluster).state.settings.node_id for holder in holders} == {
            "n1",
            "n2",
            "n3",
        }
        # Every node full: the fourth waits, first in the cluster's queue.
        fourth = Waiting(quiet_scene(key))
        waiting.append(fourth)
        await until(lambda: fourth.last is not None, 5 * UNIT)
        assert fourth.last == QueueInfo(1, 1, fourth.last.eta_ms if fourth.last else 0)
        fourth_node = next(node for node in cluster if node.state.pool.queue_length == 1)
        # A fifth waits behind it, on another node: positions are the cluster's.
        fifth = Waiting(quiet_scene(key))
        waiting.append(fifth)
        await until(lambda: fifth.last is not None and fifth.last.size == 2, 5 * UNIT)
        assert fifth.last is not None
        assert fifth.last.position == 2
        fifth_node = next(
            node for node in cluster if node is not fourth_node and node.state.pool.queue_length
        )
        # The fourth heard the queue grow behind it, still first.
        await until(lambda: fourth.last is not None and fourth.last.size == 2, 5 * UNIT)
        assert fourth.last is not None
        assert fourth.last.position == 1

        # The node that frees first is neither the fourth's nor the fifth's.
        freeing = next(node for node in cluster if node not in (fourth_node, fifth_node))
        holder = next(h for h in holders if node_of(h, cluster) is freeing)
        await holder.disconnect()
        async with asyncio.timeout(10 * UNIT):
            await fourth.connecting
        # The fourth is served there: its session, its `accepted` naming that node, and the
        # persona's media straight from it.
        assert node_of(fourth.scene, cluster) is freeing
        accepted = fourth.scene._connection.accepted if fourth.scene._connection else None
        assert accepted is not None
        assert accepted.server == freeing.state.settings.node_id
        frame = await anext(fourth.scene.video_frames())
        assert isinstance(frame, av.VideoFrame)
        # The node it waited on recorded the socket as handed over, not lost.
        assert any(info.ending == HANDED_OVER for info in fourth_node.state.ended)
        # Counted by the node that gave its Digital Person away.
        metrics = await _metrics(freeing)
        assert 'dpkit_cluster_queue_served_total{waiter="remote"} 1' in metrics
        # The fifth moved up to first, on its own node.
        await until(lambda: fifth.last is not None and fifth.last.position == 1, 5 * UNIT)
        assert fifth.last is not None
        assert fifth.last.size == 1
        assert not fifth.connecting.done()
    finally:
        await _end_all(holders, waiting)


async def test_a_waiter_that_leaves_is_out_of_the_cluster_queue_for_everyone(
    cluster: list[DpkitServer],
) -> None:
    one = cluster[0]
    key = one.api_key()
    holders = [quiet_scene(key) for _ in range(3)]
    try:
        for holder in holders:
            await holder.connect()
        first = Waiting(quiet_scene(key))
        await until(lambda: first.last is not None and first.last.size == 1, 5 * UNIT)
        second = Waiting(quiet_scene(key))
        await until(lambda: second.last is not None and second.last.size == 2, 5 * UNIT)
        first.connecting.cancel()
        with contextlib.suppress(BaseException):
            await first.connecting
        await first.scene.disconnect()
        await until(lambda: second.last is not None and second.last.position == 1, 5 * UNIT)
        assert second.last is not None
        assert second.last.size == 1
        # A person freeing now goes to the one still waiting, wherever it waits.
        await holders[2].disconnect()
        async with asyncio.timeout(10 * UNIT):
            await second.connecting
        assert second.scene.session_id is not None
        await second.scene.disconnect()
    finally:
        await _end_all(holders, [])


async def test_a_takeover_needs_a_signed_ticket_for_a_live_reservation(
    cluster: list[DpkitServer],
) -> None:
    one = cluster[0]
    url = one.url.replace("http://", "ws://") + TAKEOVER_PATH
    forged = one.state.signer.issue(
        {"node": "n1", "grant": "no-such-grant", "sub": "k"}, typ=HANDOVER, now=0, ttl_s=1
    )
    stale_but_signed = one.state.signer.issue(
        {"node": "n1", "grant": "no-such-grant", "sub": "k"},
        typ=HANDOVER,
        now=time.time(),
        ttl_s=30,
    )
    other_node = one.state.signer.issue(
        {"node": "n2", "grant": "g", "sub": "k"},
        typ=HANDOVER,
        now=time.time(),
        ttl_s=30,
    )
    session_token = one.state.signer.issue(
        {"node": "n1", "grant": "g"}, typ="session", now=time.time(), ttl_s=30
    )
    async with aiohttp.ClientSession() as http:
        for ticket, status in (
            ("", 401),
            ("not.a.jwt", 401),
            (forged, 401),  # expired
            (session_token, 401),  # a session token is not a ticket
            (other_node, 401),
            (stale_but_signed, 410),  # nothing reserved under that grant
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, headers={HANDOVER_HEADER: ticket})
            assert refused.value.status == status, ticket
    assert one.state.refusals["handover"] == 5


async def test_waiters_on_a_killed_node_are_dropped_and_the_others_are_served(
    start_server: ServerFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = await start_server(capacity=1, redis_url=redis_server.url, node_id="n1", **CLUSTER)
    three = await start_server(capacity=1, redis_url=redis_server.url, node_id="n3", **CLUSTER)
    async with served(
        tmp_path / "n2",
        capacity=1,
        redis_url=redis_server.url,
        node_id="n2",
        cluster_heartbeat_s=CLUSTER["cluster_heartbeat_s"],
        cluster_expiry_s=CLUSTER["cluster_expiry_s"],
    ) as two:

        async def all_listed() -> bool:
            return set(await nodes_of(one)) - {""} == {"n1", "n2", "n3"}

        await eventually(all_listed, 10 * UNIT)
        key = one.api_key()
        holders = [quiet_scene(key) for _ in range(3)]
        waiting: list[Waiting] = []
        try:
            for holder in holders:
                await holder.connect()
            # The first waiter asks node 2 (and waits there), the second node 1.
            on_two = Waiting(quiet_scene(two.api_key()))
            waiting.append(on_two)
            await until(lambda: on_two.last is not None, 5 * UNIT)
            on_one = Waiting(quiet_scene(key))
            waiting.append(on_one)
            await until(lambda: on_one.last is not None and on_one.last.size == 2, 5 * UNIT)
            assert one.state.pool.queue_length == 1
            os.kill(two.pid, signal.SIGKILL)
            # Node 2 leaves within its expiry; its waiter ahead is dropped from the queue.
            await until(lambda: on_one.last is not None and on_one.last.position == 1, 10 * UNIT)
            assert on_one.last is not None
            assert on_one.last.size == 1
            # Node 3 frees: the waiter on node 1 is served there.
            holder = next(h for h in holders if h.session_id in three.state.sessions)
            await holder.disconnect()
            async with asyncio.timeout(10 * UNIT):
                await on_one.connecting
            assert on_one.scene.session_id in three.state.sessions
        finally:
            await _end_all(holders, waiting)


async def test_without_redis_a_node_queues_alone_and_rejoins_the_cluster_queue_after(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(capacity=1, redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(capacity=1, redis_url=redis_server.url, node_id="n2", **CLUSTER)

    async def both_listed() -> bool:
        return set(await nodes_of(one)) - {""} == {"n1", "n2"}

    await eventually(both_listed)
    key = one.api_key()
    holders = [quiet_scene(key) for _ in range(2)]
    waiting: list[Waiting] = []
    try:
        for holder in holders:
            await holder.connect()
        await redis_server.stop()
        queue = one.state.cluster_queue
        assert queue is not None
        await until(lambda: not queue.active, 10 * UNIT)
        # Alone: node 1 queues its own waiter and serves it when its own person frees.
        alone = Waiting(quiet_scene(key))
        waiting.append(alone)
        await until(lambda: alone.last is not None, 5 * UNIT)
        assert alone.last is not None
        assert (alone.last.position, alone.last.size) == (1, 1)
        on_one = next(h for h in holders if h.session_id in one.state.sessions)
        await on_one.disconnect()
        async with asyncio.timeout(10 * UNIT):
            await alone.connecting
        assert alone.scene.session_id in one.state.sessions
        # Redis back, empty: the queue is the cluster's again, and node 2 serves node 1's waiter.
        await redis_server.start()
        await eventually(both_listed, 10 * UNIT)
        await until(lambda: queue.active, 10 * UNIT)
        again = Waiting(quiet_scene(key))
        waiting.append(again)
        await until(lambda: again.last is not None, 5 * UNIT)
        assert one.state.pool.queue_length == 1
        on_two = next(h for h in holders if h.session_id in two.state.sessions)
        await on_two.disconnect()
        async with asyncio.timeout(10 * UNIT):
            await again.connecting
        assert again.scene.session_id in two.state.sessions
    finally:
        await _end_all(holders, waiting)


async def _admin_get(url: str, token: str, path: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http, http.get(url + path, headers=headers) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


def _server_of(scene: Scene) -> str:
    accepted = scene._connection.accepted if scene._connection is not None else None
    assert accepted is not None
    return str(accepted.server)


async def test_three_dpkit_serve_processes_place_three_clients_and_queue_a_fourth(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The same as above, with each node a ``dpkit serve`` process of its own."""
    cluster: dict[str, Any] = {
        "capacity": 1,
        "redis_url": redis_server.url,
        "cluster_heartbeat_s": CLUSTER["cluster_heartbeat_s"],
        "cluster_expiry_s": CLUSTER["cluster_expiry_s"],
    }
    async with contextlib.AsyncExitStack() as stack:
        nodes = {
            name: await stack.enter_async_context(served(tmp_path / name, node_id=name, **cluster))
            for name in ("n1", "n2", "n3")
        }
        one = nodes["n1"]

        async def all_listed() -> bool:
            body = await _admin_get(one.url, one.admin_token, "/api/nodes")
            return {node["node_id"] for node in body["nodes"]} == set(nodes)

        await eventually(all_listed, 10 * UNIT)
        key = one.api_key()
        holders = [quiet_scene(key) for _ in range(3)]
        waiting: list[Waiting] = []
        try:
            for holder in holders:
                await holder.connect()
            assert sorted(_server_of(holder) for holder in holders) == ["n1", "n2", "n3"]
            fourth = Waiting(quiet_scene(key))
            waiting.append(fourth)
            await until(lambda: fourth.last is not None, 10 * UNIT)
            assert fourth.last is not None
            assert (fourth.last.position, fourth.last.size) == (1, 1)
            body = await _admin_get(one.url, one.admin_token, "/api/nodes")
            [waits_on] = [node["node_id"] for node in body["nodes"] if node["queue"] == 1]
            freeing = next(h for h in holders if _server_of(h) != waits_on)
            freed_node = _server_of(freeing)
            await freeing.disconnect()
            async with asyncio.timeout(10 * UNIT):
                await fourth.connecting
            assert _server_of(fourth.scene) == freed_node
            frame = await anext(fourth.scene.video_frames())
            assert isinstance(frame, av.VideoFrame)
            where = nodes[waits_on]
            journal = await _admin_get(where.url, where.admin_token, "/api/sessions")
            assert HANDED_OVER in [row["ending"] for row in journal["sessions"]]
        finally:
            await _end_all(holders, waiting)
