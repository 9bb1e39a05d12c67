"""``dpkit keys list | remove --redis-url`` see and change the keys in the cluster's Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio

from dpkit.server.cluster.membership import KEYS_KEY
from dpkit.server.endpoints import TOKEN_PATH
from dpkit.server.keys import KEYS_FILE, KeyStore
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER
from tests.support import UNIT, ServerFactory, until

URL = "http://dp.example.com"


async def _keys(*arguments: str, data_dir: Path, **environ: str) -> tuple[int, str, str]:
    """``dpkit keys ARGUMENTS --data-dir DATA_DIR`` in a process of its own."""
    env = {name: value for name, value in os.environ.items() if name != "DPKIT_REDIS_URL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dpkit",
        "keys",
        *arguments,
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env | environ,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@asynccontextmanager
async def _redis(url: str) -> AsyncIterator[Any]:
    client: Any = redis.asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_list_shows_the_keys_of_other_nodes_from_redis(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(redis_url=redis_server.url, node_id="n2", **CLUSTER)
    record = KeyStore.load(two.settings.data_dir).add("from-two", persistence=True)
    await until(lambda: one.state.keys.get(record.key_id) is not None)
    async with _redis(redis_server.url) as client:
        await client.hset(KEYS_KEY, "broken", "not json")
    own = [key.key_id for key in KeyStore.load(one.settings.data_dir).keys]

    data_dir = one.settings.data_dir
    code, out, err = await _keys(
        "list", "--redis-url", redis_server.url, "--url", URL, data_dir=data_dir
    )
    assert code == 0, err
    local, header, cluster = out.partition(
        "Keys of other nodes, in the cluster's Redis at " + redis_server.url + ":"
    )
    assert header
    assert record.key_id in cluster
    assert record.key_id not in local
    assert record.api_key(URL + TOKEN_PATH) in cluster
    assert all(key_id in local and key_id not in cluster for key_id in own)
    assert "(1 damaged entries skipped)" in cluster

    code, out, err = await _keys(
        "list", "--json", "--redis-url", redis_server.url, "--url", URL, data_dir=data_dir
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["redis"] == redis_server.url
    assert [key["keyId"] for key in document["keys"]] == own
    cluster_keys = {key["keyId"]: key for key in document["cluster"]}
    assert not set(own) & set(cluster_keys)
    assert cluster_keys[record.key_id] == {
        "keyId": record.key_id,
        "label": "from-two",
        "persistence": True,
        "origins": [],
        "page": False,
        "apiKey": record.api_key(URL + TOKEN_PATH),
    }
    assert document["damaged"] == 1


async def test_remove_of_another_nodes_key_deletes_it_from_redis(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(redis_url=redis_server.url, node_id="n2", **CLUSTER)
    record = KeyStore.load(two.settings.data_dir).add("from-two")
    await until(lambda: one.state.keys.get(record.key_id) is not None)
    await two.stop()  # its keys stay in Redis; running, it would write this one back
    keys_file = one.settings.data_dir / KEYS_FILE
    before = keys_file.read_bytes()

    code, out, err = await _keys(
        "remove",
        record.key_id[:12],
        "--redis-url",
        redis_server.url,
        data_dir=one.settings.data_dir,
    )
    assert code == 0, err
    assert f"removed key {record.key_id} (from-two) from the cluster's Redis" in out
    assert "writes it back" in out
    async with _redis(redis_server.url) as client:
        assert not await client.hexists(KEYS_KEY, record.key_id)
    assert keys_file.read_bytes() == before
    await until(lambda: one.state.keys.get(record.key_id) is None)
    code, out, err = await _keys(
        "list", "--redis-url", redis_server.url, data_dir=one.settings.data_dir
    )
    assert code == 0, err
    assert record.key_id not in out


async def test_remove_of_a_local_key_deletes_it_from_redis_too(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(redis_url=redis_server.url, node_id="n1", **CLUSTER)
    two = await start_server(redis_url=redis_server.url, node_id="n2", **CLUSTER)
    record = KeyStore.load(one.settings.data_dir).add("from-one")
    await until(lambda: two.state.keys.get(record.key_id) is not None)
    await one.stop()  # no heartbeat of its own removes it from Redis: only the command does

    code, out, err = await _keys(
        "remove", record.key_id, "--redis-url", redis_server.url, data_dir=one.settings.data_dir
    )
    assert code == 0, err
    assert f"removed key {record.key_id} (from-one) from {one.settings.data_dir}" in out
    assert f"from the cluster's Redis at {redis_server.url} too" in out
    async with _redis(redis_server.url) as client:
        assert not await client.hexists(KEYS_KEY, record.key_id)
    assert not KeyStore.load(one.settings.data_dir).matching(record.key_id)


async def test_without_redis_list_and_remove_fail_and_change_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    data_dir = tmp_path / "data"
    record = KeyStore.load_or_create(data_dir).add("spare")
    keys_file = data_dir / KEYS_FILE
    before = keys_file.read_bytes()
    await redis_server.stop()
    secret_url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    said = f"clusterUnreachable: cannot reach the cluster's Redis at {redis_server.url}: "

    runs = [
        await _keys("remove", record.key_id, "--redis-url", secret_url, data_dir=data_dir),
        await _keys("list", "--redis-url", secret_url, data_dir=data_dir),
        await _keys("list", "--json", data_dir=data_dir, DPKIT_REDIS_URL=secret_url),
    ]
    for code, out, err in runs:
        assert code == 1, (out, err)
        assert err.startswith(said), err
        assert "Traceback" not in out + err
        assert "s3cret" not in out + err
    assert keys_file.read_bytes() == before
