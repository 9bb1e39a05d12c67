"""API keys are the cluster's: a key made on one node opens sessions through any node."""

from __future__ import annotations

import aiohttp

from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KeyStore
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER
from tests.support import ServerFactory, until


async def _token_status(url: str, api_key: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"key": api_key}) as r:
        return r.status


async def test_a_key_added_on_one_node_works_at_another_and_leaves_when_removed(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(redis_url=redis_server.url, node_id="n2", **CLUSTER)
    # Added the way `dpkit keys add` does: in node 2's keys.json, while it runs.
    store = KeyStore.load(two.settings.data_dir)
    record = store.add("shared")
    at_one = record.api_key(one.url + TOKEN_PATH)
    await until(lambda: one.state.keys.get(record.key_id) is not None)
    assert await _token_status(one.url + TOKEN_PATH, at_one) == 200
    store.remove(record.key_id)
    await until(lambda: one.state.keys.get(record.key_id) is None)
    assert await _token_status(one.url + TOKEN_PATH, at_one) == 401
    # A node keeps its own keys; only other nodes' come from Redis.
    assert two.state.keys.get(record.key_id) is None
