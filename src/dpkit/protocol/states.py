"""Connection state data, exactly as the Web SDK reports it (docs/protocol.md, section 5).

Five states in order; ``current_step`` is the index, ``total_steps`` is 5 and ``percentage_loaded``
is ``100 / 4 * current_step``. :class:`ConnectionState` holds the current data and changes it from
one setter that reports whether anything changed, so listeners fire only on a change.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("dpkit.protocol.states")


class ConnectionStateName(enum.StrEnum):
    """The five connection states, in the order a connect passes through them."""

    DISCONNECTED = "Disconnected"
    SEARCHING_FOR_DIGITAL_PERSON = "SearchingForDigitalPerson"
    DOWNLOADING_ASSETS = "DownloadingAssets"
    CONNECTING_TO_DIGITAL_PERSON = "ConnectingToDigitalPerson"
    CONNECTED = "Connected"

    @property
    def step(self) -> int:
        return list(ConnectionStateName).index(self)


TOTAL_STEPS = len(ConnectionStateName)


@dataclass(frozen=True)
class QueueInfo:
    """Where a client waits for a Digital Person (dpkit's ``queue`` frame): 1 is next in line."""

    position: int
    size: int
    eta_ms: int

    def to_json(self) -> dict[str, int]:
        return {"position": self.position, "size": self.size, "etaMs": self.eta_ms}


@dataclass(frozen=True)
class ConnectionStateData:
    """What a connection state listener receives (the Web SDK's ``ConnectionStateData``).

    ``queue`` is dpkit's addition: set while the client waits in SearchingForDigitalPerson.
    """

    name: ConnectionStateName
    current_step: int
    total_steps: int
    percentage_loaded: float
    queue: QueueInfo | None = None

    @classmethod
    def of(cls, name: ConnectionStateName) -> ConnectionStateData:
        step = name.step
        return cls(name, step, TOTAL_STEPS, 100 / (TOTAL_STEPS - 1) * step)

    def to_json(self) -> dict[str, Any]:
        """The Web SDK's field names, for feeds that other applications read."""
        data: dict[str, Any] = {
            "name": self.name.value,
            "currentStep": self.current_step,
            "totalSteps": self.total_steps,
            "percentageLoaded": self.percentage_loaded,
        }
        if self.queue is not None:
            data["queue"] = self.queue.to_json()
        return data


class ConnectionState:
    """The current connection state; :meth:`set` is the one place it changes."""

    def __init__(self) -> None:
        self._data = ConnectionStateData.of(ConnectionStateName.DISCONNECTED)

    @property
    def data(self) -> ConnectionStateData:
        return self._data

    @property
    def name(self) -> ConnectionStateName:
        return self._data.name

    def set(self, name: ConnectionStateName) -> ConnectionStateData | None:
        """Move to ``name``; return the new data, or None when the state did not change."""
        if name == self._data.name:
            return None
        self._data = ConnectionStateData.of(name)
        logger.debug("connection state %s (%d%%)", name.value, self._data.percentage_loaded)
        return self._data

    def set_queue(self, queue: QueueInfo) -> ConnectionStateData | None:
        """Record a new place in the queue; return the new data, or None when nothing changed."""
        if queue == self._data.queue:
            return None
        self._data = dataclasses.replace(self._data, queue=queue)
        logger.debug("queue position %d of %d", queue.position, queue.size)
        return self._data

    def reset(self) -> ConnectionStateData | None:
        return self.set(ConnectionStateName.DISCONNECTED)
