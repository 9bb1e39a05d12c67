"""The session journal: every session's timeline, kept in SQLite in the data directory.

One row per session socket (a socket refused with ``noScene`` never gets a session id, but is
still a row) and one row per happening on it: each connection state with its time, each place in
the queue, each camera change, and the ending with its reason. ``dpkit sessions list`` and
``dpkit sessions show <sessionId>`` read it, so a session can be looked up by the id that
``connect()`` returned.

Two things keep it true and bounded across runs (the lifespan in :mod:`dpkit.server.app` does
both at start): a server killed without a shutdown leaves its live rows with no ending, so the
next start of the same node ends them (:meth:`SqliteJournal.unended` finds them); and sessions
that ended more than ``journal_retention_days`` ago are deleted with their events
(:meth:`SqliteJournal.prune`). Rows with no ending are never pruned: they are live, or another
node's to end.

:class:`SqliteJournal` is the store; the server only uses the :class:`Journal` protocol, so
another store can stand in for it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

JOURNAL_FILE = "journal.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    socket_id    TEXT PRIMARY KEY,
    session_id   TEXT,
    key_id       TEXT NOT NULL,
    client_kind  TEXT NOT NULL,
    node         TEXT NOT NULL,
    persona      TEXT NOT NULL,
    opened_at    REAL NOT NULL,
    ended_at     REAL,
    ending       TEXT,
    queue_wait_s REAL,
    microphone   INTEGER,
    camera       INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_by_session_id ON sessions (session_id);
CREATE INDEX IF NOT EXISTS sessions_by_opened_at ON sessions (opened_at);
CREATE INDEX IF NOT EXISTS sessions_by_ended_at ON sessions (ended_at);
CREATE TABLE IF NOT EXISTS events (
    socket_id TEXT NOT NULL REFERENCES sessions (socket_id),
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_socket ON events (socket_id, at);
"""


@dataclass(frozen=True)
class JournalEvent:
    """One happening: ``kind`` is ``state``, ``queue``, ``camera`` or ``end``."""

    at: float
    kind: str
    detail: str


@dataclass(frozen=True)
class SessionRecord:
    """One session socket's row, with its timeline when asked for."""

    socket_id: str
    session_id: str | None
    key_id: str
    client_kind: str
    node: str
    persona: str
    opened_at: float
    ended_at: float | None
    ending: str | None
    queue_wait_s: float | None
    microphone: bool | None
    camera: bool | None
    events: tuple[JournalEvent, ...] = field(default=())


class Journal(Protocol):
    """What the server writes; every call is small and quick."""

    def opened(
        self, socket_id: str, *, key_id: str, client_kind: str, node: str, persona: str, at: float
    ) -> None: ...
    def event(self, socket_id: str, kind: str, detail: str, at: float) -> None: ...
    def update(self, socket_id: str, **fields: object) -> None: ...
    def ended(self, socket_id: str, ending: str, at: float) -> None: ...
    def close(self) -> None: ...


_COLUMNS = (
    "socket_id, session_id, key_id, client_kind, node, persona, opened_at, ended_at, ending, "
    "queue_wait_s, microphone, camera"
)
_UPDATABLE = {"session_id", "queue_wait_s", "microphone", "camera"}
DAY_S = 86400.0


class SqliteJournal:
    """The journal in one SQLite file (write-ahead log, so readers never block the server)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteJournal:
        return cls(data_dir / JOURNAL_FILE)

    def opened(
        self, socket_id: str, *, key_id: str, client_kind: str, node: str, persona: str, at: float
    ) -> None:
        self._db.execute(
            "INSERT INTO sessions (socket_id, key_id, client_kind, node, persona, opened_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (socket_id, key_id, client_kind, node, persona, at),
        )

    def event(self, socket_id: str, kind: str, detail: str, at: float) -> None:
        self._db.execute(
            "INSERT INTO events (socket_id, at, kind, detail) VALUES (?, ?, ?, ?)",
            (socket_id, at, kind, detail),
        )

    def update(self, socket_id: str, **fields: object) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"journal: cannot update {', '.join(sorted(unknown))}")
        # The column names come from _UPDATABLE (checked above), never from a caller's values.
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE sessions SET {assignments} WHERE socket_id = ?",
            (*fields.values(), socket_id),
        )

    def ended(self, socket_id: str, ending: str, at: float) -> None:
        self._db.execute(
            "UPDATE sessions SET ended_at = ?, ending = ? WHERE socket_id = ?",
            (at, ending, socket_id),
        )
        self.event(socket_id, "end", ending, at)

    def unended(self, node: str) -> list[str]:
        """The socket ids of ``node``'s sessions with no ending, oldest first.

        At a node's start these are what its previous run left live when it was killed.
        """
        rows = self._db.execute(
            "SELECT socket_id FROM sessions WHERE node = ? AND ended_at IS NULL "
            "ORDER BY opened_at, rowid",
            (node,),
        ).fetchall()
        return [str(socket_id) for (socket_id,) in rows]

    def prune(self, *, retention_days: float, now: float) -> int:
        """Delete the sessions that ended before ``now`` minus the retention, with their events.

        Returns how many sessions went. One transaction, so a reader never sees a session
        without its events or events without their session.
        """
        cutoff = now - retention_days * DAY_S
        with self._transaction():
            self._db.execute(
                "DELETE FROM events WHERE socket_id IN "
                "(SELECT socket_id FROM sessions WHERE ended_at < ?)",
                (cutoff,),
            )
            deleted = self._db.execute("DELETE FROM sessions WHERE ended_at < ?", (cutoff,))
        return deleted.rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # The connection autocommits (isolation_level=None), so a transaction is explicit.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def list(self, limit: int = 20) -> list[SessionRecord]:
        """The most recent session sockets, newest first, without their timelines."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM sessions ORDER BY opened_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_record(row) for row in rows]

    def show(self, session_or_socket_id: str) -> SessionRecord | None:
        """One session by its session id (or socket id), with its timeline; None if unknown."""
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ? OR socket_id = ? "
            "ORDER BY opened_at DESC LIMIT 1",
            (session_or_socket_id, session_or_socket_id),
        ).fetchone()
        if row is None:
            return None
        events = self._db.execute(
            "SELECT at, kind, detail FROM events WHERE socket_id = ? ORDER BY at, rowid",
            (row[0],),
        ).fetchall()
        record = _record(row)
        return SessionRecord(
            **{**record.__dict__, "events": tuple(JournalEvent(*event) for event in events)}
        )

    def close(self) -> None:
        self._db.close()


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)


def _record(row: tuple[object, ...]) -> SessionRecord:
    (socket_id, session_id, key_id, kind, node, persona, opened, ended, ending, wait, mic, cam) = (
        row
    )
    return SessionRecord(
        socket_id=str(socket_id),
        session_id=None if session_id is None else str(session_id),
        key_id=str(key_id),
        client_kind=str(kind),
        node=str(node),
        persona=str(persona),
        opened_at=float(opened),  # type: ignore[arg-type]
        ended_at=None if ended is None else float(ended),  # type: ignore[arg-type]
        ending=None if ending is None else str(ending),
        queue_wait_s=None if wait is None else float(wait),  # type: ignore[arg-type]
        microphone=_flag(mic),
        camera=_flag(cam),
    )
