"""Placement: which node of the cluster a new session goes to.

The token endpoint of any node asks :meth:`Placement.choose` with the live nodes' records: the
node with the most free Digital Persons first (this node on a tie, so a lone or quiet cluster
keeps its sessions where they ask), else, when every node is full, the one whose queue is
shortest for its size. The token it issues names that node and is valid only there.

Records are as fresh as each node's last write (a node writes when its load changes, and on its
heartbeat), so a placement the target has not reported yet is held against it here: for
:data:`SETTLE_S` after the target's record is newer than the placement (it had time to take the
session), and never longer than :data:`HOLD_S`. Two nodes placing at the same instant may still
pick the same free node; the loser waits in that node's queue.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from dpkit.server.cluster.nodes import NodeRecord

SETTLE_S = 1.0
HOLD_S = 10.0


class Placement:
    """Chooses nodes for new sessions, remembering the placements not reported yet."""

    def __init__(self, node_id: str, clock: Callable[[], float] = time.time) -> None:
        self._node_id = node_id
        self._clock = clock
        self._placed: dict[str, deque[float]] = {}

    def pending(self, record: NodeRecord) -> int:
        """Placements on ``record``'s node that its record may not count yet."""
        placed = self._placed.get(record.node_id)
        if not placed:
            return 0
        now = self._clock()
        while placed and (now - placed[0] > HOLD_S or record.seen_at - placed[0] > SETTLE_S):
            placed.popleft()
        return len(placed)

    def choose(self, nodes: Sequence[NodeRecord]) -> NodeRecord:
        """The node for the next session, among ``nodes`` (which include this one)."""
        if not nodes:
            raise ValueError("placement needs at least this node's record")

        def free(record: NodeRecord) -> int:
            return record.free - self.pending(record)

        def order(record: NodeRecord) -> tuple[int, float, int, str]:
            spare = free(record)
            # Full everywhere: the shortest queue for the node's size, which clears first.
            backlog = 0.0 if spare > 0 else (record.queue - spare + 1) / max(record.capacity, 1)
            return (-max(spare, 0), backlog, record.node_id != self._node_id, record.node_id)

        return min(nodes, key=order)

    def placed(self, node_id: str) -> None:
        """A token for ``node_id`` was just issued."""
        self._placed.setdefault(node_id, deque()).append(self._clock())
