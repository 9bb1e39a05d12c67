"""``dpkit sessions cluster`` and ``dpkit watch`` against any node see the whole cluster."""

from __future__ import annotations

import asyncio
import json
import sys

from dpkit import Scene
from tests.server.cluster.redis_server import RedisServer
from tests.server.cluster.test_membership import CLUSTER, eventually, nodes_of
from tests.support import UNIT, ServerFactory


async def _dpkit(*arguments: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dpkit",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60 * UNIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sessions_cluster_and_watch_through_node_1_see_node_3(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    one = await start_server(capacity=1, redis_url=redis_server.url, node_id="n1", **CLUSTER)
    three = await start_server(capacity=1, redis_url=redis_server.url, node_id="n3", **CLUSTER)

    async def both() -> bool:
        return set(await nodes_of(one)) - {""} == {"n1", "n3"}

    await eventually(both)
    token = one.admin_token
    watcher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dpkit",
        *("watch", one.url, "--admin-token", token, "--json", "--max-events", "5"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert watcher.stderr is not None
    # It says "following <url>" once the server has it subscribed.
    said = await asyncio.wait_for(watcher.stderr.readline(), 30 * UNIT)
    assert said.startswith(b"following"), said
    scene = Scene(three.api_key(), requested_media_devices={}, required_media_devices={})
    session_id = await scene.connect()
    try:
        out_bytes, err_bytes = await asyncio.wait_for(watcher.communicate(), 30 * UNIT)
        assert watcher.returncode == 0, err_bytes.decode()
        events = [json.loads(line) for line in out_bytes.decode().splitlines()]
        assert {event["node"] for event in events} == {"n3"}
        assert "Connected" in [event.get("state") for event in events]

        async def listed() -> bool:
            code, out, _err = await _dpkit("sessions", "cluster", one.url, "--admin-token", token)
            return code == 0 and session_id in out

        await eventually(listed, 20 * UNIT)
        code, out, _err = await _dpkit("sessions", "cluster", one.url, "--admin-token", token)
        assert "n3" in out
        assert "Connected" in out
        code, out, _err = await _dpkit(
            "sessions", "cluster", one.url, "--admin-token", token, "--json"
        )
        [entry] = json.loads(out)["sessions"]
        assert (entry["node"], entry["sessionId"], entry["lost"]) == ("n3", session_id, False)
        code, _out, err = await _dpkit("sessions", "cluster", one.url, "--admin-token", "wrong")
        assert code == 1
        assert "HTTP 401" in err
    finally:
        await scene.disconnect()
