"""The session journal: each session's timeline in SQLite, readable by its session id."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from dpkit import NoScene, RetryOptions, Scene
from dpkit.server import DpkitServer
from dpkit.server.journal import SqliteJournal
from dpkit.server.journal_upkeep import prune_periodically
from dpkit.tasks import TaskOwner
from tests.support import UNIT, ServerFactory, make_settings, until
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


DAY_S = 86400.0
#: A fixed "now" for the journal's own tests, so days ago are exact.
NOW = 1_700_000_000.0


def seed(journal: SqliteJournal, socket_id: str, *, node: str = "node-1", opened: float) -> None:
    """One session row with a state event, as the server writes it."""
    journal.opened(socket_id, key_id="k", client_kind="python", node=node, persona="Ava", at=opened)
    journal.event(socket_id, "state", "Connected", opened + 1)


def events_by_socket(path: Path) -> dict[str, int]:
    """How many event rows each socket has, read with a connection of its own."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT socket_id, COUNT(*) FROM events GROUP BY socket_id").fetchall()
    finally:
        db.close()
    return {str(socket_id): int(count) for socket_id, count in rows}


async def test_prune_deletes_only_sessions_that_ended_before_the_retention(
    tmp_path: Path,
) -> None:
    """Ended 31 days ago: gone with its events; ended 29 days ago, or live: kept, events too."""
    path = tmp_path / "journal.sqlite3"
    journal = SqliteJournal(path)
    seed(journal, "old", opened=NOW - 32 * DAY_S)
    journal.ended("old", "normal", NOW - 31 * DAY_S)
    seed(journal, "recent", opened=NOW - 30 * DAY_S)
    journal.ended("recent", "normal", NOW - 29 * DAY_S)
    seed(journal, "live", opened=NOW - 40 * DAY_S)
    assert journal.prune(retention_days=30, now=NOW) == 1
    assert journal.prune(retention_days=30, now=NOW) == 0
    journal.close()

    reread = SqliteJournal(path)
    assert [record.socket_id for record in reread.list()] == ["recent", "live"]
    assert reread.show("old") is None
    reread.close()
    assert events_by_socket(path) == {"recent": 2, "live": 1}


async def test_unended_lists_the_sessions_without_an_ending_of_one_node(tmp_path: Path) -> None:
    """Only rows of the node asked about whose ending is NULL, oldest first."""
    journal = SqliteJournal(tmp_path / "journal.sqlite3")
    seed(journal, "a", opened=NOW - 3)
    seed(journal, "ended", opened=NOW - 2)
    journal.ended("ended", "normal", NOW - 1)
    seed(journal, "elsewhere", node="node-2", opened=NOW - 2)
    seed(journal, "b", opened=NOW - 1)
    assert journal.unended("node-1") == ["a", "b"]
    assert journal.unended("node-2") == ["elsewhere"]
    assert journal.unended("node-3") == []
    journal.close()


async def test_the_periodic_prune_removes_sessions_as_they_pass_the_retention(
    start_server: ServerFactory,
) -> None:
    """prune_periodically prunes on every tick, not only at start, and stops when cancelled."""
    server = await start_server(journal_retention_days=1.0)
    store = server.state.store
    seed(store, "aged", opened=time.time() - 3 * DAY_S)
    store.ended("aged", "normal", time.time() - 2 * DAY_S)
    assert store.show("aged") is not None
    owner = TaskOwner("test")
    task = owner.spawn(prune_periodically(server.state, interval_s=0.05 * UNIT), "prune")
    await until(lambda: store.show("aged") is None)
    await owner.close()
    assert task.cancelled()


async def test_the_lifespan_owns_the_prune_task_and_ends_it_at_shutdown(tmp_path: Path) -> None:
    """A running server has its journal prune task; stopping the server cancels and awaits it."""

    def prune_tasks() -> list[asyncio.Task[object]]:
        return [task for task in asyncio.all_tasks() if task.get_name() == "journal:prune"]

    server = DpkitServer(make_settings(tmp_path))
    await server.start()
    running = prune_tasks()
    assert [task.done() for task in running] == [False]
    await server.stop()
    assert prune_tasks() == []
    assert running[0].cancelled()
