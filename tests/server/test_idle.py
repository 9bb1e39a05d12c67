"""The idle timeout: a warning, then sessionTimeout; interaction restarts the count."""

from __future__ import annotations

import asyncio
import json

import pytest

from dpkit import Scene
from dpkit.server import DpkitServer, PersonaSettings
from tests.support import UNIT, ServerFactory, until
from tests.test_cli import run_cli

IDLE = PersonaSettings(
    video_width=160, video_height=120, idle_timeout_s=0.6 * UNIT, idle_warning_s=0.3 * UNIT
)


def watched_scene(server: DpkitServer) -> tuple[Scene, asyncio.Queue[tuple[str, float | str]]]:
    """A scene whose idle warnings and disconnection land, in order, in one queue."""
    scene = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    happened: asyncio.Queue[tuple[str, float | str]] = asyncio.Queue()
    scene.on_idle_warning.add_listener(lambda _s, left: happened.put_nowait(("warning", left)))
    scene.on_disconnected_event.add_listener(
        lambda _s, _id, reason: happened.put_nowait(("disconnected", reason))
    )
    return scene, happened


async def test_an_idle_session_is_warned_then_ended(start_server: ServerFactory) -> None:
    """With nobody interacting: idleWarning with the time left, then sessionTimeout."""
    server = await start_server(persona=IDLE)
    scene, happened = watched_scene(server)
    session_id = await scene.connect()
    first = await asyncio.wait_for(happened.get(), 5 * UNIT)
    second = await asyncio.wait_for(happened.get(), 5 * UNIT)
    assert first == ("warning", 0.3 * UNIT)
    assert second == ("disconnected", "sessionTimeout")
    assert [(i.session_id, i.ending) for i in server.state.ended] == [
        (session_id, "sessionTimeout")
    ]
    await scene.close()


async def test_keep_alive_restarts_the_count(start_server: ServerFactory) -> None:
    """keepAlive after a warning keeps the session: a second warning comes before the end."""
    server = await start_server(persona=IDLE)
    scene, happened = watched_scene(server)
    await scene.connect()
    assert (await asyncio.wait_for(happened.get(), 5 * UNIT))[0] == "warning"
    await scene.keep_alive()
    assert (await asyncio.wait_for(happened.get(), 5 * UNIT))[0] == "warning"
    assert (await asyncio.wait_for(happened.get(), 5 * UNIT)) == (
        "disconnected",
        "sessionTimeout",
    )
    await scene.close()


async def test_cli_reports_the_warning_then_the_timeout(start_server: ServerFactory) -> None:
    """`dpkit connect --json` writes idleWarning, then the disconnection with sessionTimeout."""
    server = await start_server(persona=IDLE)
    code, out, err = await run_cli(
        "connect", server.api_key(), "--json", "--request", "none", "--require", "none"
    )
    assert code == 1, err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events if e["event"] in ("idleWarning", "disconnected")]
    assert kinds == ["idleWarning", "disconnected"]
    assert next(e for e in events if e["event"] == "disconnected")["reason"] == "sessionTimeout"


async def test_connect_timeout_names_the_state_it_was_stuck_in(
    start_server: ServerFactory,
) -> None:
    """The client's connect_timeout: sessionTimeout naming SearchingForDigitalPerson (queued)."""
    from dpkit import SessionTimeout

    server = await start_server(capacity=1)
    holder = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    await holder.connect()
    waiting = Scene(server.api_key(), requested_media_devices={}, required_media_devices={})
    try:
        with pytest.raises(SessionTimeout, match="stuck in SearchingForDigitalPerson"):
            await waiting.connect(connect_timeout=0.3 * UNIT)
        await until(lambda: server.state.pool.queue_length == 0)
    finally:
        await holder.disconnect()
