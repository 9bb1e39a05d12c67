"""A node's record in the cluster: who it is, where clients reach it, how full it is."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

#: The longest record a node writes or reads: a few hundred bytes in practice.
MAX_RECORD_BYTES = 4096
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BadRecord(ValueError):
    """A record in Redis that is not a node's (another program's key, or a damaged one)."""


@dataclass(frozen=True)
class NodeRecord:
    """One node as the cluster sees it.

    ``instance`` tells two runs of the same ``node_id`` apart (a restarted node, or two nodes
    started with the same id by mistake); ``seen_at`` is when the node last renewed it (Unix
    time, the node's clock).
    """

    node_id: str
    url: str
    capacity: int
    load: int
    queue: int
    instance: str
    started_at: float
    seen_at: float

    def __post_init__(self) -> None:
        if not NODE_ID.fullmatch(self.node_id):
            raise BadRecord(f"node id {self.node_id[:80]!r} is not 1-64 of [A-Za-z0-9._-]")
        if urlsplit(self.url).scheme not in ("http", "https") or len(self.url) > 2048:
            raise BadRecord(f"node {self.node_id}: url is not an http(s) URL")
        if self.capacity < 0 or self.load < 0 or self.queue < 0:
            raise BadRecord(f"node {self.node_id}: negative capacity, load or queue")
        if not (math.isfinite(self.started_at) and math.isfinite(self.seen_at)):
            raise BadRecord(f"node {self.node_id}: times are not finite numbers")
        if not 1 <= len(self.instance) <= 64:
            raise BadRecord(f"node {self.node_id}: instance must be 1-64 characters")

    @property
    def free(self) -> int:
        """Digital Persons it could give a new session now."""
        return max(0, self.capacity - self.load)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> NodeRecord:
        """The record in ``raw``; :class:`BadRecord` for anything else."""
        if len(raw) > MAX_RECORD_BYTES:
            raise BadRecord(f"a node record is longer than {MAX_RECORD_BYTES} bytes")
        try:
            data: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRecord(f"a node record is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRecord("a node record is not a JSON object")
        try:
            return cls(
                node_id=_typed(data, "node_id", str),
                url=_typed(data, "url", str),
                capacity=_typed(data, "capacity", int),
                load=_typed(data, "load", int),
                queue=_typed(data, "queue", int),
                instance=_typed(data, "instance", str),
                started_at=float(_typed(data, "started_at", (int, float))),
                seen_at=float(_typed(data, "seen_at", (int, float))),
            )
        except KeyError as exc:
            raise BadRecord(f"a node record has no {exc.args[0]!r}") from None

    def for_api(self, now: float) -> dict[str, object]:
        """The record as ``GET /api/nodes`` shows it."""
        shown = asdict(self)
        shown["free"] = self.free
        shown["seen_s_ago"] = round(max(0.0, now - self.seen_at), 3)
        return shown


def _typed(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BadRecord(f"a node record's {name!r} has the wrong type")
    return value
