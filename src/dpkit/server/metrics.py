"""Prometheus metrics, kept by listening to the session journal and served at ``/metrics``.

Sessions by state, queue length and wait, connect time by step, connect errors by name and
disconnects by reason, in the Prometheus text format (no client library needed for this much).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

STATES = (
    "SearchingForDigitalPerson",
    "DownloadingAssets",
    "ConnectingToDigitalPerson",
    "Connected",
)


@dataclass
class _Summary:
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1


@dataclass
class _Socket:
    state: str
    since: float
    connected: bool = False


class SessionMetrics:
    """A journal that keeps the counts and sums ``/metrics`` shows."""

    def __init__(self, queue_length: Callable[[], int]) -> None:
        self._queue_length = queue_length
        self._sockets: dict[str, _Socket] = {}
        self._steps: dict[str, _Summary] = {state: _Summary() for state in STATES[:-1]}
        self._queue_wait = _Summary()
        self.errors: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()

    # --- the journal protocol ---------------------------------------------------------------

    def opened(
        self, socket_id: str, *, key_id: str, client_kind: str, node: str, persona: str, at: float
    ) -> None:
        self._sockets[socket_id] = _Socket("SearchingForDigitalPerson", at)

    def event(self, socket_id: str, kind: str, detail: str, at: float) -> None:
        socket = self._sockets.get(socket_id)
        if socket is None or kind != "state" or detail == socket.state:
            return
        if socket.state in self._steps and not socket.connected:
            self._steps[socket.state].observe(at - socket.since)
        socket.state, socket.since = detail, at
        socket.connected |= detail == "Connected"

    def update(self, socket_id: str, **fields: object) -> None:
        wait = fields.get("queue_wait_s")
        if isinstance(wait, float):
            self._queue_wait.observe(wait)

    def ended(self, socket_id: str, ending: str, at: float) -> None:
        socket = self._sockets.pop(socket_id, None)
        if socket is None:
            return
        if socket.connected:
            self.disconnects[ending] += 1
        else:
            self.errors[ending] += 1

    def ended_in_earlier_run(self, ending: str, *, connected: bool) -> None:
        """Count the ending of a session this run never saw open (one a crash left live)."""
        counts = self.disconnects if connected else self.errors
        counts[ending] += 1

    def close(self) -> None:
        pass

    # --- the text format --------------------------------------------------------------------

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        metric("dpkit_sessions", "gauge", "Open session sockets by connection state.")
        by_state = Counter(socket.state for socket in self._sockets.values())
        for state in STATES:
            lines.append(f'dpkit_sessions{{state="{state}"}} {by_state[state]}')
        metric("dpkit_queue_length", "gauge", "Clients waiting for a Digital Person.")
        lines.append(f"dpkit_queue_length {self._queue_length()}")
        metric("dpkit_queue_wait_seconds", "summary", "Time clients waited for a Digital Person.")
        lines.append(f"dpkit_queue_wait_seconds_sum {self._queue_wait.total:.6f}")
        lines.append(f"dpkit_queue_wait_seconds_count {self._queue_wait.count}")
        metric("dpkit_connect_step_seconds", "summary", "Time spent in each connection state.")
        for step, summary in self._steps.items():
            lines.append(f'dpkit_connect_step_seconds_sum{{step="{step}"}} {summary.total:.6f}')
            lines.append(f'dpkit_connect_step_seconds_count{{step="{step}"}} {summary.count}')
        metric("dpkit_connect_errors_total", "counter", "Sockets that ended before Connected.")
        for name, count in sorted(self.errors.items()):
            lines.append(f'dpkit_connect_errors_total{{name="{name}"}} {count}')
        metric("dpkit_disconnects_total", "counter", "Connected sessions that ended, by reason.")
        for reason, count in sorted(self.disconnects.items()):
            lines.append(f'dpkit_disconnects_total{{reason="{reason}"}} {count}')
        return "\n".join(lines) + "\n"
