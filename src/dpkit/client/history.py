"""The retry history of a scene's last connect: the Web SDK's ``scene.connectionResult``.

The Web SDK stores ``{message: "success" | "failed", value: <sessionId>, retries: [errors]}`` on
the scene after each attempt; :class:`ConnectionResult` carries the same three (as ``message``,
``value`` and ``retries``) and adds each attempt's timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dpkit.errors import ConnectionError_


@dataclass(frozen=True)
class ConnectionAttempt:
    """One attempt of a connect: when it started (seconds after the connect), how long it took,
    and the error it failed with (None: it connected)."""

    started_s: float
    duration_s: float
    error: ConnectionError_ | None


@dataclass(frozen=True)
class ConnectionResult:
    """How the last connect went: ``scene.connection_result`` once an attempt has been made."""

    #: ``success`` or ``failed``, as the Web SDK's ``connectionResult.message``.
    message: Literal["success", "failed"]
    #: The session id when it succeeded (the Web SDK's ``value``), else None.
    value: str | None
    #: The error of each failed attempt, oldest first (the Web SDK's ``retries``).
    retries: tuple[ConnectionError_, ...]
    #: Every attempt, oldest first, with its timing (dpkit's addition).
    attempts: tuple[ConnectionAttempt, ...]

    @property
    def succeeded(self) -> bool:
        return self.message == "success"
