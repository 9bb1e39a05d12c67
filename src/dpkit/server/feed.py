"""The live feed of session state changes, for other applications (SSE, webhooks, ``dpkit watch``).

:class:`StateFeed` is a journal (see :mod:`dpkit.server.journal`) that turns each happening into
a small JSON event and hands it to every subscriber. A subscriber that falls behind loses its
oldest events rather than slowing the server down.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Any

FeedEvent = dict[str, Any]

#: Events a subscriber may have waiting before the oldest are dropped.
SUBSCRIBER_BACKLOG = 256


class StateFeed:
    """Publishes every session's happenings to any number of subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[FeedEvent]] = set()
        #: The subscribers that also want the other nodes' events (a cluster's event stream).
        self._cluster_subscribers: set[asyncio.Queue[FeedEvent]] = set()
        self._ids: dict[str, str] = {}
        self._sequence = itertools.count(1)
        #: Given each of this node's own events (a cluster node passes them on to the others).
        self.on_local: Callable[[FeedEvent], None] | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: FeedEvent) -> None:
        """One of this node's events: to every subscriber (webhooks too)."""
        if self.on_local is not None:
            self.on_local(event)
        self._deliver(event, self._subscribers)

    def publish_remote(self, event: FeedEvent) -> None:
        """Another node's event: only to the subscribers that asked for the cluster's. Webhooks
        do not get it here (its own node sends those), so each goes out once."""
        self._deliver(event, self._subscribers & self._cluster_subscribers)

    def _deliver(self, event: FeedEvent, queues: set[asyncio.Queue[FeedEvent]]) -> None:
        event = {"seq": next(self._sequence), **event}
        for queue in queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncGenerator[FeedEvent, None]:
        """Every event from now on, for as long as the caller iterates."""
        with self.subscription() as subscription:
            while True:
                yield await subscription.next()

    def subscription(self, *, cluster: bool = False) -> Subscription:
        """A subscription that holds every event from this call on, until it is closed.

        Unlike :meth:`subscribe`, whose generator subscribes only when first iterated, it is
        registered before the caller answers anyone, so an event stream never misses the events
        published between its response and its first read.
        """
        queue: asyncio.Queue[FeedEvent] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        if cluster:
            self._cluster_subscribers.add(queue)
        return Subscription(queue, self._subscribers, self._cluster_subscribers)

    # --- the journal protocol ---------------------------------------------------------------

    def _base(self, socket_id: str, kind: str, at: float) -> FeedEvent:
        return {
            "type": kind,
            "socketId": socket_id,
            "sessionId": self._ids.get(socket_id),
            "at": at,
        }

    def opened(
        self, socket_id: str, *, key_id: str, client_kind: str, node: str, persona: str, at: float
    ) -> None:
        self.publish(
            {
                **self._base(socket_id, "opened", at),
                "client": client_kind,
                "node": node,
                "persona": persona,
            }
        )

    def event(self, socket_id: str, kind: str, detail: str, at: float) -> None:
        if kind == "end":
            return  # ended() says it with the reason
        self.publish({**self._base(socket_id, kind, at), kind: detail})

    def update(self, socket_id: str, **fields: object) -> None:
        session_id = fields.get("session_id")
        if isinstance(session_id, str):
            self._ids[socket_id] = session_id

    def ended(self, socket_id: str, ending: str, at: float) -> None:
        self.publish({**self._base(socket_id, "ended", at), "reason": ending})
        self._ids.pop(socket_id, None)

    def close(self) -> None:
        self._subscribers.clear()
        self._cluster_subscribers.clear()


class Subscription:
    """One subscriber's queue of events; ``close()`` (or leaving its ``with``) unsubscribes."""

    def __init__(
        self,
        queue: asyncio.Queue[FeedEvent],
        subscribers: set[asyncio.Queue[FeedEvent]],
        cluster_subscribers: set[asyncio.Queue[FeedEvent]],
    ) -> None:
        self._queue = queue
        self._subscribers = subscribers
        self._cluster_subscribers = cluster_subscribers

    async def next(self) -> FeedEvent:
        """The oldest event not yet read, waiting for one if there is none."""
        return await self._queue.get()

    def close(self) -> None:
        self._subscribers.discard(self._queue)
        self._cluster_subscribers.discard(self._queue)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
