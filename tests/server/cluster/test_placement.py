"""Placement: any node's token endpoint sends a new session to the node with room for it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from dpkit import Scene
from dpkit.apikey import decode_api_key
from dpkit.server import DpkitServer
from dpkit.server.cluster.nodes import NodeRecord
from dpkit.server.cluster.placement import HOLD_S, SETTLE_S, Placement
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER, eventually, nodes_of
from tests.support import ServerFactory


def record(
    node_id: str, capacity: int, load: int, queue: int = 0, seen_at: float = 0.0
) -> NodeRecord:
    return NodeRecord(node_id, f"http://{node_id}.test", capacity, load, queue, "x", 0.0, seen_at)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_node_with_most_room_wins_and_this_node_on_a_tie() -> None:
    placement = Placement("n1")
    nodes = [record("n1", 2, 1), record("n2", 4, 1), record("n3", 4, 2)]
    assert placement.choose(nodes).node_id == "n2"
    assert placement.choose([record("n2", 2, 0), record("n1", 2, 0)]).node_id == "n1"


def test_placements_not_reported_yet_count_against_their_node() -> None:
    clock = Clock()
    placement = Placement("n1", clock=clock)
    nodes = [record("n1", 1, 1), record("n2", 1, 0, seen_at=clock.now), record("n3", 1, 0)]
    first = placement.choose(nodes)
    placement.placed(first.node_id)
    second = placement.choose(nodes)
    assert {first.node_id, second.node_id} == {"n2", "n3"}
    # n2 reports after it had time to take the session: the hold ends.
    clock.now += 0.5
    reported = record("n2", 1, 1, seen_at=clock.now + SETTLE_S + 0.1)
    assert placement.pending(reported) == 0
    # And a placement nobody reports is forgotten after HOLD_S.
    placement.placed("n3")
    clock.now += HOLD_S + 1
    assert placement.pending(record("n3", 1, 0)) == 0


def test_when_every_node_is_full_the_shortest_queue_for_its_size_wins() -> None:
    placement = Placement("n1")
    nodes = [record("n1", 1, 1, queue=3), record("n2", 4, 4, queue=3), record("n3", 1, 1, queue=1)]
    assert placement.choose(nodes).node_id == "n2"
    with pytest.raises(ValueError, match="at least"):
        placement.choose([])


async def test_three_clients_asking_node_1_are_connected_on_three_nodes(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    servers: list[DpkitServer] = []
    for index in (1, 2, 3):
        servers.append(
            await start_server(
                capacity=1, redis_url=redis_server.url, node_id=f"n{index}", **CLUSTER
            )
        )
    one, two, three = servers

    async def all_listed() -> bool:
        return set(await nodes_of(one)) - {""} == {"n1", "n2", "n3"}

    await eventually(all_listed)
    # The first node's secrets are the cluster's: the others took them.
    assert two.state.keys.signing_secret == one.state.keys.signing_secret
    assert three.state.keys.admin_token == one.state.keys.admin_token
    key = one.api_key()
    scenes = [Scene(key, requested_media_devices={}, required_media_devices={}) for _ in range(3)]
    try:
        for scene in scenes:
            await scene.connect()
        counts = [len(server.state.sessions) for server in servers]
        assert counts == [1, 1, 1]
        nodes = {scene.session_id: None for scene in scenes}
        assert len(nodes) == 3
    finally:
        await asyncio.gather(*(scene.disconnect() for scene in scenes))


async def test_a_token_is_good_only_at_the_node_it_names(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(capacity=1, redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(capacity=1, redis_url=redis_server.url, node_id="n2", **CLUSTER)
    raw_key = one.api_key()
    busy = Scene(raw_key, requested_media_devices={}, required_media_devices={})
    await busy.connect()  # node 1 is full: its token endpoint now places on node 2
    try:
        api_key = decode_api_key(raw_key)
        async with aiohttp.ClientSession() as http:
            async with http.get(api_key.auth_server, headers={"key": raw_key}) as response:
                answer = await response.json()
            assert answer["url"] == two.url.replace("http://", "ws://") + "/session"
            wrong = one.url.replace("http://", "ws://") + "/session?access_token=" + answer["jwt"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(wrong)
            assert refused.value.status == 401
        assert one.state.refusals["token_node"] == 1
    finally:
        await busy.disconnect()
