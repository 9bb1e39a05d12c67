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
another store can stand in for it. The server opens it for writing and proves at start that it
can write (a read-only data directory is a named error then, not a traceback at the first
session); ``dpkit sessions`` opens it with :meth:`SqliteJournal.read_only`, which creates nothing.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dpkit.errors import ConfigurationError
from dpkit.server.settings import DataDirNotWritable

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
#: The longest id (or id prefix) a lookup takes; the journal's ids are far shorter.
MAX_ID_CHARS = 256


class SqliteJournal:
    """The journal in one SQLite file (write-ahead log, so readers never block the server)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        if read_only:
            self._db = _connect_read_only(path)
            return
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _not_writable(path, exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            # Write once and roll it back: a journal that cannot be written (a read-only file, or
            # a directory where its -wal cannot be made) fails here, at start, not at a session.
            with contextlib.suppress(_RolledBack), self._transaction():
                self._db.execute(
                    "INSERT INTO events (socket_id, at, kind, detail) VALUES ('', 0, 'probe', '')"
                )
                raise _RolledBack
        except sqlite3.Error as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise _not_writable(path, exc) from None
            raise ConfigurationError(f"{path} is not a dpkit session journal: {exc}") from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqliteJournal:
        return cls(data_dir / JOURNAL_FILE)

    @classmethod
    def read_only(cls, path: Path) -> SqliteJournal:
        """The journal at ``path`` for reading only: no schema, no file or directory created."""
        return cls(path, read_only=True)

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

    def matching(self, prefix: str, limit: int = 10) -> builtins.list[str]:
        """Up to ``limit`` ids that start with ``prefix`` (session ids, else socket ids).

        A socket that never got a session is matched by its socket id. Newest first, one per
        session socket, so a caller can tell a unique prefix from an ambiguous one (it asks for
        one more than it will show).
        """
        if not prefix or len(prefix) > MAX_ID_CHARS:
            return []
        rows = self._db.execute(
            "SELECT session_id, socket_id FROM sessions "
            "WHERE substr(session_id, 1, ?) = ? OR substr(socket_id, 1, ?) = ? "
            "ORDER BY opened_at DESC LIMIT ?",
            (len(prefix), prefix, len(prefix), prefix, limit),
        ).fetchall()
        found = []
        for session_id, socket_id in rows:
            matched = session_id if session_id and str(session_id).startswith(prefix) else socket_id
            found.append(str(matched))
        return found

    def close(self) -> None:
        self._db.close()


class _RolledBack(Exception):
    """Raised inside a transaction only to roll it back."""


def _connect_read_only(path: Path) -> sqlite3.Connection:
    # A read-only connection to a write-ahead-log database creates its -wal and -shm files when
    # they are missing (no server has it open) and leaves them behind. Without a -wal file the
    # database file is the whole journal, so it is read as immutable and nothing is created;
    # with one (a server is running, or was killed), the server's files are used as they are.
    wal = path.with_name(path.name + "-wal")
    uri = path.absolute().as_uri() + "?mode=ro" + ("" if wal.exists() else "&immutable=1")
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot read the session journal {path}: {exc}") from None
    try:
        db.execute("SELECT 1 FROM sessions LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise ConfigurationError(f"{path} is not a dpkit session journal: {exc}") from None
    return db


def _not_writable(path: Path, exc: sqlite3.Error) -> DataDirNotWritable:
    return DataDirNotWritable(
        f"cannot write the session journal {path}: {exc} (is the data directory {path.parent} "
        "writable?)"
    )


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
