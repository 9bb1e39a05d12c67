"""Resume across the cluster: through any node to the session's owner, or noSessionToResume."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dpkit import NoSessionToResume, Scene
from dpkit.client.persistence import MemorySessionStore, StoredSession
from dpkit.server import DpkitServer
from dpkit.server.endpoints import TOKEN_PATH
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER, eventually, nodes_of
from tests.server.test_persistence import connect_and_vanish
from tests.support import UNIT, ServerFactory, until


async def _cluster(start_server: ServerFactory, redis: RedisServer) -> list[DpkitServer]:
    servers = [
        await start_server(
            capacity=1,
            redis_url=redis.url,
            node_id=f"n{index}",
            resume_window_s=20 * UNIT,
            **CLUSTER,
        )
        for index in (1, 2, 3)
    ]

    async def all_listed() -> bool:
        return set(await nodes_of(servers[0])) - {""} == {"n1", "n2", "n3"}

    await eventually(all_listed)
    return servers


def _persistent_key_at(owner: DpkitServer, via: DpkitServer) -> tuple[str, str, str]:
    """A persistent key made on ``owner``: its id, as the owner hands it out, and pointing at
    ``via`` (which knows it once the owner has shared it)."""
    record = owner.state.keys.add("persistent", persistence=True)
    return (
        record.key_id,
        record.api_key(owner.url + TOKEN_PATH),
        record.api_key(via.url + TOKEN_PATH),
    )


async def test_a_session_on_node_2_resumed_through_node_3_keeps_its_id(
    start_server: ServerFactory,
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dpkit.server")
    _one, two, three = await _cluster(start_server, redis_server)
    key_id, at_two, at_three = _persistent_key_at(two, three)
    await until(lambda: three.state.keys.get(key_id) is not None)
    session_id = await connect_and_vanish(at_two, tmp_path, two)
    store = MemorySessionStore()
    store.save(at_three, StoredSession("n2", session_id))
    scene = Scene(
        at_three, requested_media_devices={}, required_media_devices={}, session_store=store
    )
    resumed = await scene.connect()
    try:
        assert resumed == session_id
        assert scene.is_resumed_session()
        assert list(two.state.sessions) == [session_id]  # still on its owner
        assert not three.state.sessions
        async for _frame in scene.video_frames():  # media flows from the owner
            break
        assert "relaying a resume for node n2" in caplog.text
    finally:
        await scene.disconnect()


async def test_resuming_a_session_of_a_node_that_is_gone_says_so_at_once(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one, _two, three = await _cluster(start_server, redis_server)
    record = three.state.keys.add("persistent", persistence=True)
    key = record.api_key(three.url + TOKEN_PATH)
    store = MemorySessionStore()
    store.save(key, StoredSession("n9", "no-such-session"))
    scene = Scene(key, requested_media_devices={}, required_media_devices={}, session_store=store)
    with pytest.raises(NoSessionToResume):
        await scene.connect(connect_timeout=5 * UNIT)
    assert one.state.sessions == {}
