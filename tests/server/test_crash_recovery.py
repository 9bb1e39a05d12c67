"""What a server does at start with the journal an earlier run left: crash endings and retention.

Real ``dpkit serve`` processes (tests/served.py), killed with SIGKILL and started again on the same
data directory, read from outside through the admin API, ``/metrics`` and ``dpkit sessions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from dpkit import Scene
from dpkit.server.journal import SqliteJournal
from tests.served import ServedProcess, served
from tests.support import UNIT
from tests.test_cli import run_cli

DAY_S = 86400.0


async def admin_get(server: ServedProcess, path: str) -> Any:
    """GET an admin API path with the admin token; its JSON body."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=10 * UNIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(server.url + path, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def journaled_connected(server: ServedProcess, session_id: str) -> None:
    """Wait until the server's journal has ``session_id`` Connected."""
    async with asyncio.timeout(10 * UNIT):
        while True:
            record = await admin_get(server, f"/api/sessions/{session_id}")
            events = record.get("events", [])
            if any(
                event.get("kind") == "state" and event.get("detail") == "Connected"
                for event in events
            ):
                return
            await asyncio.sleep(0.02)  # polling the journal over HTTP


async def metrics_text(server: ServedProcess) -> str:
    timeout = aiohttp.ClientTimeout(total=10 * UNIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(server.url + "/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def endings(sessions: list[dict[str, Any]]) -> dict[str, str | None]:
    return {row["socket_id"]: row["ending"] for row in sessions}


def seed(
    data_dir: Path, socket_id: str, *, node: str, opened: float, ended: float | None = None
) -> None:
    """A row as an earlier run of some node left it in the data directory's journal."""
    data_dir.mkdir(parents=True, exist_ok=True)
    journal = SqliteJournal.in_data_dir(data_dir)
    journal.opened(socket_id, key_id="k", client_kind="python", node=node, persona="Ava", at=opened)
    journal.event(socket_id, "state", "Connected", opened + 1)
    if ended is not None:
        journal.ended(socket_id, "normal", ended)
    journal.close()


def quiet_scene(server: ServedProcess) -> Scene:
    return Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        ice_addresses=("127.0.0.1",),
    )


async def close_scene(scene: Scene) -> None:
    """Close a client whose server is gone, bounded: it must not hang the test."""
    await asyncio.wait_for(scene.close(), 10 * UNIT)


async def test_a_session_live_at_a_kill_ends_with_server_restart_on_the_next_start(
    tmp_path: Path,
) -> None:
    """After SIGKILL, the next start ends the Connected session: serverRestart, ended_at, event."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(served(tmp_path / "first"))
        scene = quiet_scene(first)
        stack.push_async_callback(close_scene, scene)
        session_id = await asyncio.wait_for(scene.connect(), 30 * UNIT)
        # The client hears `connected` a moment before the server's journal has it.
        await journaled_connected(first, session_id)
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        await asyncio.wait_for(first.process.wait(), 10 * UNIT)

        second = await stack.enter_async_context(
            served(tmp_path / "second", data_dir=first.data_dir)
        )
        listed = await admin_get(second, "/api/sessions")
        [row] = [row for row in listed["sessions"] if row["session_id"] == session_id]
        assert row["ending"] == "serverRestart"
        assert row["ended_at"] >= killed_at
        assert 'dpkit_disconnects_total{reason="serverRestart"} 1' in await metrics_text(second)
        assert "ended 1 session(s) left live by an earlier run" in second.log()

        code, out, err = await run_cli(
            "sessions", "show", session_id, "--json", "--data-dir", str(second.data_dir)
        )
        assert code == 0, err
        timeline = [(event["kind"], event["detail"]) for event in json.loads(out)["events"]]
        assert timeline[-2:] == [("state", "Connected"), ("end", "serverRestart")]


async def test_a_start_leaves_the_live_sessions_of_other_nodes_alone(tmp_path: Path) -> None:
    """Only this node's unended rows get serverRestart; another node's live row stays live."""
    data_dir = tmp_path / "shared"
    seed(data_dir, "mine", node="node-1", opened=time.time() - 60)
    seed(data_dir, "theirs", node="node-2", opened=time.time() - 60)
    async with served(tmp_path / "node-1", data_dir=data_dir, node_id="node-1") as server:
        listed = await admin_get(server, "/api/sessions")
    assert endings(listed["sessions"]) == {"mine": "serverRestart", "theirs": None}


async def test_a_server_prunes_sessions_past_the_retention_at_start(tmp_path: Path) -> None:
    """journal_retention_days=1: a session ended 2 days ago is gone at start; others stay."""
    data_dir = tmp_path / "data"
    now = time.time()
    seed(data_dir, "aged", node="node-1", opened=now - 3 * DAY_S, ended=now - 2 * DAY_S)
    seed(data_dir, "fresh", node="node-1", opened=now - 120, ended=now - 60)
    seed(data_dir, "elsewhere", node="node-2", opened=now - 3 * DAY_S)
    async with served(tmp_path / "run", data_dir=data_dir, journal_retention_days=1.0) as server:
        listed = await admin_get(server, "/api/sessions")
        log = server.log()
    assert endings(listed["sessions"]) == {"fresh": "normal", "elsewhere": None}
    assert "pruned 1 session(s) that ended more than 1 day(s) ago" in log
