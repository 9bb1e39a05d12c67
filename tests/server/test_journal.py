"""The session journal: each session's timeline in SQLite, readable by its session id."""

from __future__ import annotations

import asyncio
import json

import pytest

from dpkit import NoScene, RetryOptions, Scene
from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from tests.support import ServerFactory, until
from tests.test_cli import run_cli

CONNECT_TIMELINE = [
    ("state", "SearchingForDigitalPerson"),
    ("state", "DownloadingAssets"),
    ("state", "ConnectingToDigitalPerson"),
    ("state", "Connected"),
]


def quiet_scene(server: DpkitServer) -> Scene:
    return Scene(server.api_key(), requested_media_devices={}, required_media_devices={})


def read_journal(server: DpkitServer) -> SqliteJournal:
    return SqliteJournal.in_data_dir(server.settings.data_dir)


async def test_a_session_is_looked_up_by_the_id_connect_returned(server: DpkitServer) -> None:
    """The timeline of a session: its states in order, its client, devices and ending."""
    scene = quiet_scene(server)
    session_id = await scene.connect()
    await scene.disconnect()
    await until(lambda: server.state.pool.in_use == 0)
    journal = read_journal(server)
    record = journal.show(session_id)
    journal.close()
    assert record is not None
    assert [(e.kind, e.detail) for e in record.events] == [
        *CONNECT_TIMELINE,
        ("state", "Disconnected"),
        ("end", "normal"),
    ]
    assert [e.at for e in record.events] == sorted(e.at for e in record.events)
    assert (record.client_kind, record.persona, record.ending) == ("python", "Ava", "normal")
    assert (record.microphone, record.camera) == (False, False)
    assert record.ended_at is not None
    assert record.ended_at >= record.opened_at


async def test_refused_and_queued_sockets_are_recorded(start_server: ServerFactory) -> None:
    """A noScene socket has a row without a session id; a queued one records its positions."""
    server = await start_server(capacity=1, queue_max_length=1)
    holder = quiet_scene(server)
    await holder.connect()
    queued = quiet_scene(server)
    waiting = asyncio.create_task(queued.connect())
    await until(lambda: server.state.pool.queue_length == 1)
    with pytest.raises(NoScene):
        await quiet_scene(server).connect(retry_options=RetryOptions(max_retries=1))
    await holder.disconnect()
    queued_id = await waiting
    await queued.disconnect()
    await until(lambda: server.state.pool.in_use == 0)

    journal = read_journal(server)
    records = journal.list()
    refused = [r for r in records if r.ending == "noScene"]
    assert len(refused) == 1
    assert refused[0].session_id is None
    shown = journal.show(refused[0].socket_id)
    record = journal.show(queued_id)
    journal.close()
    assert shown is not None
    assert [(e.kind, e.detail) for e in shown.events] == [
        ("state", "SearchingForDigitalPerson"),
        ("state", "Disconnected"),
        ("end", "noScene"),
    ]
    assert record is not None
    assert ("queue", "1/1") in [(e.kind, e.detail) for e in record.events]
    assert record.queue_wait_s is not None
    assert record.queue_wait_s > 0


async def test_dpkit_sessions_show_prints_the_timeline(server: DpkitServer) -> None:
    """`dpkit sessions show <id> --json` gives the journal's record; list includes it."""
    scene = quiet_scene(server)
    session_id = await scene.connect()
    await scene.disconnect()
    await until(lambda: server.state.pool.in_use == 0)
    data_dir = str(server.settings.data_dir)
    code, out, err = await run_cli("sessions", "show", session_id, "--data-dir", data_dir, "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["session_id"] == session_id
    assert [e["detail"] for e in record["events"]][:4] == [d for _, d in CONNECT_TIMELINE]
    code, out, err = await run_cli("sessions", "list", "--data-dir", data_dir)
    assert code == 0, err
    assert session_id in out
    code, _out, err = await run_cli("sessions", "show", "nope", "--data-dir", data_dir)
    assert code == 1
    assert "no session 'nope'" in err
