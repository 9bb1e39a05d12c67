"""Session persistence: a client whose socket is cut resumes the same session, within a window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dpkit import NoSessionToResume, Scene
from dpkit.client.persistence import FileSessionStore, MemorySessionStore, StoredSession
from dpkit.server import DpkitServer
from tests.support import UNIT, ServerFactory, until


def persistent_key(server: DpkitServer) -> str:
    server.state.keys.add("persistent", persistence=True)
    return server.api_key("persistent")


async def connect_and_vanish(key: str, state_home: Path, server: DpkitServer) -> str:
    """Connect with `dpkit connect` in another process, then kill it (no close frame)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dpkit",
        "connect",
        key,
        "--request",
        "none",
        "--require",
        "none",
        "--duration",
        "60",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "XDG_STATE_HOME": str(state_home)},
    )
    try:
        await until(lambda: len(server.state.sessions) == 1, within=30 * UNIT)
        await until(
            lambda: all(s.info.connected_at for s in server.state.sessions.values()),
            within=10 * UNIT,
        )
        (session_id,) = server.state.sessions
        # The client stores its session once connect() has returned, a moment after the server
        # sent `connected`: kill it only once it has.
        store = FileSessionStore(state_home / "dpkit" / "sessions.json")
        await until(lambda: store.load(key) is not None, within=10 * UNIT)
        process.send_signal(signal.SIGKILL)
    finally:
        await process.wait()
    await until(lambda: session_id in server.state.detached)
    return session_id


async def test_a_cut_client_resumes_the_same_session(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Killed mid-session, the client's stored values let the next connect resume it."""
    server = await start_server(resume_window_s=10 * UNIT)
    key = persistent_key(server)
    session_id = await connect_and_vanish(key, tmp_path, server)
    store = FileSessionStore(tmp_path / "dpkit" / "sessions.json")
    assert store.load(key) == StoredSession(server.settings.node_id, session_id)
    assert server.state.pool.in_use == 1  # the person stays reserved while detached

    scene = Scene(key, requested_media_devices={}, required_media_devices={}, session_store=store)
    resumed = await scene.connect()
    assert resumed == session_id
    assert scene.is_resumed_session()
    assert scene.supports_session_persistence()
    assert list(server.state.sessions) == [session_id]
    async for _frame in scene.video_frames():
        break
    await scene.disconnect()
    assert store.load(key) is None
    await until(lambda: server.state.pool.in_use == 0)


async def test_after_the_window_resume_gives_no_session_to_resume(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """Past the window the session is gone: noSessionToResume, the store is cleared, then a
    plain connect starts a new session."""
    server = await start_server(resume_window_s=0.3 * UNIT)
    key = persistent_key(server)
    session_id = await connect_and_vanish(key, tmp_path, server)
    await until(lambda: session_id not in server.state.detached)
    assert server.state.pool.in_use == 0
    store = FileSessionStore(tmp_path / "dpkit" / "sessions.json")
    scene = Scene(key, requested_media_devices={}, required_media_devices={}, session_store=store)
    with pytest.raises(NoSessionToResume) as caught:
        await scene.connect()
    assert caught.value.message == "websocket closed: noSessionToResume"
    assert store.load(key) is None
    fresh = await scene.connect()
    assert fresh != session_id
    assert not scene.is_resumed_session()
    await scene.disconnect()


async def test_keys_without_persistence_are_not_resumable(server: DpkitServer) -> None:
    """accepted says resumeRequested false; nothing is stored; disconnect ends it for good."""
    store = MemorySessionStore()
    scene = Scene(
        server.api_key(),
        requested_media_devices={},
        required_media_devices={},
        session_store=store,
    )
    await scene.connect()
    assert not scene.supports_session_persistence()
    assert store.load(server.api_key()) is None
    await scene.disconnect()


async def test_a_key_added_by_the_cli_works_on_the_running_server(server: DpkitServer) -> None:
    """`dpkit keys add --persistence` prints a key the running server accepts at once."""
    from tests.test_cli import run_cli

    code, out, err = await run_cli(
        "keys",
        "add",
        "--persistence",
        "--label",
        "kiosk",
        "--data-dir",
        str(server.settings.data_dir),
        "--url",
        server.url,
    )
    assert code == 0, err
    key = "".join(out.split())
    scene = Scene(
        key,
        requested_media_devices={},
        required_media_devices={},
        session_store=MemorySessionStore(),
    )
    await scene.connect()
    assert scene.supports_session_persistence()
    await scene.disconnect()
