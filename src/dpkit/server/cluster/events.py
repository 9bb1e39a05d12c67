"""One view of the cluster's sessions: every node's events, live sessions and closes, on Redis.

* **Events.** Each node publishes its own feed events (``dpkit:events``, tagged with its
  ``node``) and passes the other nodes' to its event stream subscribers (``GET /api/events``),
  so the stream of any node carries the whole cluster, in order per session (one node publishes
  a session's events, and Redis keeps one publisher's order). Webhooks stay with each node's own
  events, so each is sent once.
* **Live sessions.** Each node keeps its live sessions in ``dpkit:sessions:<node>`` (by socket
  id: session id, key, state, since when). ``GET /api/cluster/sessions`` on any node reads every
  node's; the sessions of a node that is no longer alive are shown ``lost``.
* **Closing.** ``POST /api/sessions/<id>/close`` on a node that does not hold the session finds
  its owner there and asks it on ``dpkit:control:<owner>``; the owner ends it with the reason.

Redis being away only pauses all this: events of that time are not passed on (each node's own
stream and journal keep them), and everything resumes when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from dpkit.server.cluster.membership import redacted
from dpkit.server.cluster.messages import channel_of, json_body
from dpkit.server.feed import FeedEvent, StateFeed
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.cluster")

EVENTS_CHANNEL = "dpkit:events"
CONTROL_PREFIX = "dpkit:control:"
SESSIONS_PREFIX = "dpkit:sessions:"
#: Own events waiting to be published while Redis is slow or away; the oldest go first.
MAX_OUTBOX = 10_000
MAX_MESSAGE_BYTES = 64 * 1024
RETRY_S = 1.0

#: Ends a live session of this node: (session id, reason) -> whether it was here.
CloseSession = Callable[[str, str], Awaitable[bool]]


class ClusterEvents:
    """This node's part in the cluster's events, live sessions and closes."""

    def __init__(
        self, redis_url: str, node_id: str, feed: StateFeed, close_session: CloseSession
    ) -> None:
        self._url = redis_url
        self._node_id = node_id
        self._feed = feed
        self._close_session = close_session
        self._outbox: deque[FeedEvent] = deque(maxlen=MAX_OUTBOX)
        self._ready = asyncio.Event()
        self._redis: Any = None
        self._tasks = TaskOwner("cluster-events")
        #: Live sessions of this node by socket id, as written to Redis.
        self._live: dict[str, dict[str, Any]] = {}

    @property
    def sessions_key(self) -> str:
        return SESSIONS_PREFIX + self._node_id

    def start(self) -> None:
        import redis.asyncio  # the dpkit[server] extra

        self._redis = redis.asyncio.Redis.from_url(
            self._url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._feed.on_local = self._local
        self._tasks.spawn(self._publish(), "publish")
        self._tasks.spawn(self._listen(), "listen")

    def _local(self, event: FeedEvent) -> None:
        self._outbox.append({**event, "node": self._node_id})
        self._ready.set()

    async def _publish(self) -> None:
        from redis.exceptions import RedisError

        # A node starting afresh has no live sessions: whatever an earlier run left is gone.
        cleared = False
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                event = self._outbox[0]
                try:
                    if not cleared:
                        await self._redis.delete(self.sessions_key)
                        cleared = True
                    await self._track(event)
                    await self._redis.publish(EVENTS_CHANNEL, json.dumps(event))
                except (RedisError, OSError):
                    await asyncio.sleep(RETRY_S)
                    continue
                self._outbox.popleft()

    async def _track(self, event: FeedEvent) -> None:
        """Keep this node's live sessions in Redis as its events say."""
        socket_id = str(event.get("socketId", ""))
        kind = event.get("type")
        if kind == "ended":
            self._live.pop(socket_id, None)
            await self._redis.hdel(self.sessions_key, socket_id)
            return
        entry = self._live.setdefault(socket_id, {"socketId": socket_id, "since": event.get("at")})
        before = dict(entry)
        entry["sessionId"] = event.get("sessionId") or entry.get("sessionId")
        if kind == "state":
            entry["state"] = event.get("state")
        if kind == "opened":
            entry["client"] = event.get("client")
        if entry != before:  # a queue or camera event changes nothing listed: no write
            await self._redis.hset(self.sessions_key, socket_id, json.dumps(entry))

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        while True:
            try:
                pubsub = self._redis.pubsub()
                async with pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL, CONTROL_PREFIX + self._node_id)
                    async for message in pubsub.listen():
                        await self._heard(message)
            except (RedisError, OSError) as exc:
                logger.debug("cluster events: %s at %s", type(exc).__name__, redacted(self._url))
                await asyncio.sleep(RETRY_S)

    async def _heard(self, message: dict[str, Any]) -> None:
        channel = channel_of(message)
        body = json_body(message, MAX_MESSAGE_BYTES)
        if channel is None or body is None:
            return
        if channel == EVENTS_CHANNEL:
            if body.get("node") != self._node_id:
                self._feed.publish_remote(body)
            return
        session_id, reason = body.get("close"), body.get("reason")
        if isinstance(session_id, str) and isinstance(reason, str):
            closed = await self._close_session(session_id, reason)
            logger.info(
                "cluster: asked by node %s to close %s (%s): %s",
                str(body.get("from"))[:64],
                session_id[:64],
                reason,
                "closed" if closed else "not here",
            )

    async def sessions(self, live_nodes: set[str]) -> list[dict[str, Any]]:
        """Every node's live sessions, each with its ``node``; a gone node's are ``lost``."""
        redis = self._client()
        found: list[dict[str, Any]] = []
        async for key in redis.scan_iter(match=SESSIONS_PREFIX + "*", count=100):
            node = (key.decode() if isinstance(key, bytes) else key)[len(SESSIONS_PREFIX) :]
            entries = await redis.hgetall(key)
            for raw in list(entries.values())[:10_000]:
                with contextlib.suppress(ValueError, TypeError):
                    entry = json.loads(raw)
                    if isinstance(entry, dict):
                        found.append({**entry, "node": node, "lost": node not in live_nodes})
        found.sort(key=lambda entry: (str(entry["node"]), str(entry.get("since"))))
        return found

    async def owner_of(self, session_id: str) -> str | None:
        """The node holding live session ``session_id``, from every node's list."""
        for entry in await self.sessions(set()):
            if entry.get("sessionId") == session_id:
                return str(entry["node"])
        return None

    async def ask_to_close(self, node: str, session_id: str, reason: str) -> None:
        body = {"close": session_id, "reason": reason, "from": self._node_id}
        await self._client().publish(CONTROL_PREFIX + node, json.dumps(body))

    def _client(self) -> Any:
        if self._redis is None:
            raise ConnectionError("the cluster's events are closed")
        return self._redis

    async def close(self) -> None:
        await self._tasks.close()
        self._feed.on_local = None
        client, self._redis = self._redis, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await client.aclose()
