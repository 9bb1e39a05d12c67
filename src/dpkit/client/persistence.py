"""Where the Python client keeps what it needs to resume a persistent session.

The browser keeps ``sm-server``, ``sm-session-id`` and ``sm-api-key`` in sessionStorage; dpkit
keeps the same three values in a :class:`SessionStore`. The default, :class:`FileSessionStore`,
is a JSON file in the user's state directory, keyed by a hash of the API key (the key itself is
never written); :class:`MemorySessionStore` keeps them for the life of the process.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredSession:
    """The node that holds the session, and its id."""

    server: str
    session_id: str


class SessionStore(Protocol):
    def load(self, api_key: str) -> StoredSession | None: ...
    def save(self, api_key: str, session: StoredSession) -> None: ...
    def clear(self, api_key: str) -> None: ...


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/dpkit`` (``~/.local/state/dpkit``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dpkit"


def _key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


class MemorySessionStore:
    """Stored sessions for the life of this object."""

    def __init__(self) -> None:
        self._sessions: dict[str, StoredSession] = {}

    def load(self, api_key: str) -> StoredSession | None:
        return self._sessions.get(_key(api_key))

    def save(self, api_key: str, session: StoredSession) -> None:
        self._sessions[_key(api_key)] = session

    def clear(self, api_key: str) -> None:
        self._sessions.pop(_key(api_key), None)


class FileSessionStore:
    """Stored sessions in one JSON file (``sessions.json`` in the state directory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_state_dir() / "sessions.json"

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, self.path)

    def load(self, api_key: str) -> StoredSession | None:
        entry = self._read().get(_key(api_key))
        if not isinstance(entry, dict):
            return None
        server, session_id = entry.get("server"), entry.get("sessionId")
        if isinstance(server, str) and isinstance(session_id, str):
            return StoredSession(server, session_id)
        return None

    def save(self, api_key: str, session: StoredSession) -> None:
        data = self._read()
        data[_key(api_key)] = {"server": session.server, "sessionId": session.session_id}
        self._write(data)

    def clear(self, api_key: str) -> None:
        data = self._read()
        if data.pop(_key(api_key), None) is not None:
            self._write(data)
