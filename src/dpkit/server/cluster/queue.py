"""The cluster's one queue: every node's waiters in arrival order, served by the first free node.

* **Standing in it.** A session that finds every Digital Person of its node busy waits in its
  node's pool (:mod:`dpkit.server.pool`) and, in a cluster, in the sorted set ``dpkit:queue``
  as ``<node>|<waiter>``, scored by a counter Redis increments, so arrival order is Redis's, not
  any node's clock.
* **Positions.** Every join, leave and hand-out publishes on ``dpkit:queue:changed``; each node
  then reads the queue (once, however many changes came meanwhile), dropping the members of
  nodes that are gone, and tells its own waiters their position in it, the queue's length and
  an estimated wait over the cluster's capacity, in the usual ``dpkit/queue`` frames.
* **Handing out.** A node whose Digital Person frees up pops the queue's head (atomically, so
  two nodes never take the same waiter). A waiter of its own is served at once. A waiter of
  another node is offered the person: it is reserved under a random grant id and the waiter's
  node is told on ``dpkit:queue:grant:<node>``; that node hands the waiting socket over
  (:mod:`dpkit.server.cluster.relay`, signalling only) to this node's
  :data:`TAKEOVER_PATH`, which claims the reservation. A waiter that left meanwhile declines,
  and a grant not claimed within :data:`CLAIM_TIMEOUT_S` lapses; either way the person goes to
  the next head.
* **Redis away.** The queue is then not :attr:`~ClusterQueue.active`: each node queues alone, as
  one node does. Waiters missing from the shared queue (Redis restarted empty, or they came
  while it was away) are put back in it at the next read, behind those already in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dpkit.server.cluster.membership import KEY_PREFIX, redacted
from dpkit.server.cluster.messages import channel_of, json_body
from dpkit.server.pool import DigitalPerson, DigitalPersonPool, RemoteGrant
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.cluster")

QUEUE_KEY = "dpkit:queue"
SEQUENCE_KEY = "dpkit:queue:sequence"
CHANGED_CHANNEL = "dpkit:queue:changed"
GRANT_PREFIX = "dpkit:queue:grant:"
#: Where a node takes over another node's waiting socket for a Digital Person it reserved.
TAKEOVER_PATH = "/cluster/takeover"
#: How long a Digital Person offered to another node's waiter stays reserved for it.
CLAIM_TIMEOUT_S = 5.0
RETRY_S = 1.0
#: The most members one read of the queue takes in (each node bounds its own waiters too).
MAX_QUEUE_READ = 100_000
MAX_MESSAGE_BYTES = 4096
#: How often the cluster's capacity (for the estimated wait) is read again, at most.
CAPACITY_EVERY_S = 1.0
#: How often a node with waiters reads the queue even if nobody said it changed: a node that
#: died says nothing, and its waiters ahead are dropped only when someone reads.
READ_EVERY_S = 1.0

# Both scripts run atomically in Redis. Members are "<node>|<waiter>".
_JOIN = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""
_LEAVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then redis.call('PUBLISH', KEYS[2], ARGV[1]) end
return 0
"""
#: The head whose node is alive, dropping the heads of gone nodes on the way. It publishes no
#: change: the popping node does once the head has its Digital Person, so that the head's
#: ``established`` goes out before every other waiter's new position.
_POP = """
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not head then return false end
  redis.call('ZREM', KEYS[1], head)
  local node = string.match(head, '^([^|]+)|')
  if node and redis.call('EXISTS', ARGV[1] .. node) == 1 then return head end
end
"""
#: Every member whose node is alive, in order; the members of gone nodes are dropped.
_READ = """
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local alive, live, gone = {}, {}, {}
for _, member in ipairs(members) do
  local node = string.match(member, '^([^|]+)|') or ''
  if alive[node] == nil then alive[node] = redis.call('EXISTS', ARGV[1] .. node) == 1 end
  if alive[node] then table.insert(live, member) else table.insert(gone, member) end
end
for _, member in ipairs(gone) do redis.call('ZREM', KEYS[1], member) end
return live
"""


@dataclass(eq=False)
class _Reservation:
    person: DigitalPerson
    settled: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ClusterQueue:
    """This node's part in the cluster's queue, for ``pool``; ``up`` says whether the node
    is in the cluster now (its Redis answers), ``capacity`` reads the cluster's capacity."""

    def __init__(
        self,
        redis_url: str,
        node_id: str,
        pool: DigitalPersonPool,
        *,
        up: Callable[[], bool],
        capacity: Callable[[], Awaitable[int]],
    ) -> None:
        self._url = redis_url
        self._node_id = node_id
        self._pool = pool
        self._up = up
        self._capacity = capacity
        self._public_url = ""
        self._redis: Any = None
        self._tasks = TaskOwner("cluster-queue")
        self._listening = False
        self._dirty = asyncio.Event()
        self._reserved: dict[str, _Reservation] = {}
        self._cluster_capacity = pool.capacity
        self._capacity_read_at = -CAPACITY_EVERY_S
        self._closed = False
        #: Persons handed to another node's waiter, and to one of this node's: for /metrics.
        self.handed_out = {"here": 0, "remote": 0}

    @property
    def active(self) -> bool:
        return self._listening and self._redis is not None and self._up()

    def start(self, public_url: str) -> None:
        import redis.asyncio  # the dpkit[server] extra

        self._public_url = public_url.rstrip("/")
        self._redis = redis.asyncio.Redis.from_url(
            self._url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._pool.shared = self
        self._tasks.spawn(self._listen(), "listen")
        self._tasks.spawn(self._read_positions(), "positions")

    # -- the pool's side ---------------------------------------------------------------------

    def joined(self, waiter_id: str) -> None:
        if self.active:
            self._tasks.spawn(self._join(waiter_id), "join")

    def left(self, waiter_id: str) -> None:
        if self._redis is not None:
            self._tasks.spawn(self._leave(waiter_id), "leave")

    def declined(self, grant: RemoteGrant) -> None:
        body = {"declined": grant.grant, "from": self._node_id}
        self._tasks.spawn(self._publish(GRANT_PREFIX + grant.node, body), "decline")

    def offer(self, person: DigitalPerson) -> None:
        self._tasks.spawn(self._offer(person), "offer")

    def claim(self, grant: str) -> DigitalPerson | None:
        """The Digital Person reserved under ``grant``, taken (once); None if there is none."""
        reservation = self._reserved.pop(grant, None)
        if reservation is None or reservation.settled.done():
            return None
        reservation.settled.set_result(True)
        return reservation.person

    # -- the work ----------------------------------------------------------------------------

    def _member(self, waiter_id: str) -> str:
        return f"{self._node_id}|{waiter_id}"

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._client().eval(script, len(keys), *keys, *args)

    async def _join(self, waiter_id: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._script(
                _JOIN, [QUEUE_KEY, SEQUENCE_KEY, CHANGED_CHANNEL], [self._member(waiter_id)]
            )
        except (RedisError, OSError, ConnectionError) as exc:
            logger.debug("cluster queue: join failed: %s", type(exc).__name__)
            return
        if waiter_id not in self._pool.waiting_ids():  # it left while it joined
            await self._leave(waiter_id)

    async def _leave(self, waiter_id: str) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError, ConnectionError):
            await self._script(_LEAVE, [QUEUE_KEY, CHANGED_CHANNEL], [self._member(waiter_id)])

    async def _publish(self, channel: str, body: dict[str, Any]) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError, ConnectionError):
            await self._client().publish(channel, json.dumps(body))

    async def _offer(self, person: DigitalPerson) -> None:
        """Hand ``person`` to the cluster queue's head, or back to this node if none waits;
        then tell every node the queue changed."""
        try:
            await self._hand_out(person)
        finally:
            await self._publish_change()

    async def _publish_change(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError, ConnectionError):
            await self._client().publish(CHANGED_CHANNEL, self._node_id)

    async def _hand_out(self, person: DigitalPerson) -> None:
        from redis.exceptions import RedisError

        while not self._closed:
            try:
                head = await self._script(_POP, [QUEUE_KEY], [KEY_PREFIX])
            except (RedisError, OSError, ConnectionError) as exc:
                logger.debug("cluster queue: cannot pop (%s); served here", type(exc).__name__)
                break
            if head is None:
                break
            node, _, waiter_id = (head.decode() if isinstance(head, bytes) else head).partition("|")
            if node == self._node_id:
                if self._pool.grant(waiter_id, person):
                    self.handed_out["here"] += 1
                    return
                continue  # it left just now
            if await self._offer_remote(person, node, waiter_id):
                self.handed_out["remote"] += 1
                return
        self._pool.free_here(person)

    async def _offer_remote(self, person: DigitalPerson, node: str, waiter_id: str) -> bool:
        """Reserve ``person`` for waiter ``waiter_id`` of ``node``; whether it was claimed."""
        grant = secrets.token_urlsafe(18)
        reservation = _Reservation(person)
        self._reserved[grant] = reservation
        body = {"grant": grant, "waiter": waiter_id, "node": self._node_id, "url": self._public_url}
        await self._publish(GRANT_PREFIX + node, body)
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT_S):
                claimed = await reservation.settled
        except TimeoutError:
            claimed = False
            logger.info("cluster queue: node %s did not take person %d in time", node, person.index)
        finally:
            self._reserved.pop(grant, None)
        return claimed

    async def _listen(self) -> None:
        from redis.exceptions import RedisError

        while not self._closed:
            try:
                pubsub = self._client().pubsub()
                async with pubsub:
                    await pubsub.subscribe(CHANGED_CHANNEL, GRANT_PREFIX + self._node_id)
                    self._listening = True
                    self._dirty.set()  # (re)joined: read the queue, put missing waiters back
                    async for message in pubsub.listen():
                        self._heard(message)
            except (RedisError, OSError, ConnectionError) as exc:
                logger.debug("cluster queue: %s at %s", type(exc).__name__, redacted(self._url))
            self._listening = False
            await asyncio.sleep(RETRY_S)

    def _heard(self, message: dict[str, Any]) -> None:
        channel = channel_of(message)
        if channel == CHANGED_CHANNEL:
            self._dirty.set()
            return
        body = json_body(message, MAX_MESSAGE_BYTES)
        if channel is None or body is None:
            return
        if isinstance(body.get("declined"), str):
            reservation = self._reserved.get(body["declined"])
            if reservation is not None and not reservation.settled.done():
                reservation.settled.set_result(False)
            return
        fields = [body.get(name) for name in ("grant", "waiter", "node", "url")]
        texts = [value for value in fields if isinstance(value, str) and 0 < len(value) <= 512]
        if len(texts) != len(fields) or not texts[3].startswith(("http://", "https://")):
            return
        grant, waiter, node, url = texts
        remote = RemoteGrant(node, url, grant)
        if not self._pool.grant(waiter, remote):
            self.declined(remote)
            return
        # Popped already; but a read of the queue just before the pop may have found it missing
        # and put it back (reads put back what they miss: Redis may have restarted empty).
        self.left(waiter)

    async def _read_positions(self) -> None:
        """Each time the queue changed: read it once and tell this node's waiters."""
        from redis.exceptions import RedisError

        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READ_EVERY_S if self._pool.waiting_ids() else None):
                    await self._dirty.wait()
            self._dirty.clear()
            if not self.active or not self._pool.waiting_ids():
                continue
            try:
                raw = await self._script(_READ, [QUEUE_KEY], [KEY_PREFIX, MAX_QUEUE_READ])
                await self._read_capacity()
            except (RedisError, OSError, ConnectionError) as exc:
                logger.debug("cluster queue: cannot read it (%s)", type(exc).__name__)
                continue
            members = [m.decode() if isinstance(m, bytes) else str(m) for m in raw]
            prefix = self._node_id + "|"
            positions = {
                member[len(prefix) :]: index + 1
                for index, member in enumerate(members)
                if member.startswith(prefix)
            }
            self._pool.set_positions(positions, len(members), self._cluster_capacity)
            for waiter_id in self._pool.waiting_ids():
                if waiter_id not in positions:
                    self._tasks.spawn(self._join(waiter_id), "rejoin")

    async def _read_capacity(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._capacity_read_at >= CAPACITY_EVERY_S:
            self._capacity_read_at = loop.time()
            self._cluster_capacity = await self._capacity()

    def _client(self) -> Any:
        if self._redis is None:
            raise ConnectionError("the cluster's queue is closed")
        return self._redis

    async def close(self) -> None:
        """Leave: this node's waiters out of the shared queue, reservations lapsed."""
        self._closed = True
        self._pool.shared = None
        for reservation in self._reserved.values():
            if not reservation.settled.done():
                reservation.settled.set_result(False)
        await self._tasks.close()
        client, self._redis = self._redis, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                members = [self._member(w) for w in self._pool.waiting_ids()]
                if members:
                    await client.zrem(QUEUE_KEY, *members)
                    await client.publish(CHANGED_CHANNEL, "left")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await client.aclose()
