"""Membership: each node's record in Redis, renewed on a heartbeat, gone when the node is.

A node writes ``dpkit:node:<node_id>`` (its :class:`~dpkit.server.cluster.nodes.NodeRecord` as
JSON) every ``heartbeat_s`` with an expiry of ``expiry_s``: a node that dies, SIGKILL included,
leaves the cluster when its key expires, within ``expiry_s``; one that stops deletes its key at
once. Listing the cluster is a scan of those keys. A Redis restarted empty is filled again by the
next heartbeats.

When Redis cannot be reached the node keeps serving alone: it says so once in its log (never
with the URL's password), in ``/metrics`` (``dpkit_cluster_redis_up``) and in ``GET
/api/nodes``, lists only itself, and keeps trying on every heartbeat; the first that succeeds
re-registers it and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from secrets import token_hex
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dpkit.server.cluster.nodes import BadRecord, NodeRecord
from dpkit.server.keys import KeyStore, key_from_json, key_to_json
from dpkit.tasks import TaskOwner

logger = logging.getLogger("dpkit.server.cluster")

KEY_PREFIX = "dpkit:node:"
#: The cluster's shared secrets: the first node's, taken by every node that joins.
SECRETS_KEY = "dpkit:secrets"
#: Every node's API keys, by key id: a key any node holds opens sessions at every node.
KEYS_KEY = "dpkit:keys"
MAX_SHARED_KEYS = 10_000
#: Heartbeats between rewriting every key, changed or not.
REPUBLISH_EVERY = 10
MAX_SECRET_CHARS = 512
#: Scanning stops after this many keys: a cluster is a handful of nodes, not thousands.
MAX_NODES = 1000
CLOSE_TIMEOUT_S = 2.0

UP = "up"
DOWN = "down"


@dataclass(frozen=True)
class Load:
    """How full a node is, as its pool says: Digital Persons, in use, and clients waiting."""

    capacity: int
    in_use: int
    waiting: int


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a call to Redis raises when Redis is away (redis is imported only by a cluster
    node: a server without the ``server`` extra never reaches here)."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


def redacted(url: str) -> str:
    """``url`` without its user name and password, for logs and errors."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Membership:
    """This node's place in the cluster on the Redis at ``redis_url``."""

    def __init__(
        self,
        redis_url: str,
        node_id: str,
        load: Callable[[], Load],
        *,
        heartbeat_s: float = 1.0,
        expiry_s: float = 3.0,
        clock: Callable[[], float] = time.time,
        local_secrets: Callable[[], dict[str, str]] | None = None,
        adopt_secrets: Callable[[dict[str, str]], None] | None = None,
        keys: KeyStore | None = None,
    ) -> None:
        self._url = redis_url
        self._node_id = node_id
        self._load = load
        self._heartbeat_s = heartbeat_s
        self._expiry_s = expiry_s
        self._clock = clock
        self._local_secrets = local_secrets
        self._adopt_secrets = adopt_secrets
        self._keys = keys
        #: This node's keys as last written to Redis (id -> JSON), to write only changes.
        self._published: dict[str, str] = {}
        self._beats = 0
        self._wake = asyncio.Event()
        self._instance = token_hex(8)
        self._started_at = clock()
        self._public_url = ""
        self._redis: Any = None
        self._tasks = TaskOwner("cluster")
        self.status = DOWN
        self._clash_reported = False
        self._closed = False
        #: Heartbeats that failed since the server started (Redis unreachable).
        self.failures = 0

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def key(self) -> str:
        return KEY_PREFIX + self._node_id

    def record(self) -> NodeRecord:
        """This node's record now."""
        load = self._load()
        return NodeRecord(
            node_id=self._node_id,
            url=self._public_url,
            capacity=load.capacity,
            load=load.in_use,
            queue=load.waiting,
            instance=self._instance,
            started_at=self._started_at,
            seen_at=self._clock(),
        )

    async def start(self, public_url: str) -> None:
        """Register (once, now: whether Redis answers shows at start-up) and keep renewing."""
        import redis.asyncio  # the dpkit[server] extra; only a cluster node needs it

        self._public_url = public_url
        timeout = max(0.1, min(self._heartbeat_s, 2.0))
        self._redis = redis.asyncio.Redis.from_url(
            self._url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        await self.beat()
        self._tasks.spawn(self._heartbeat(), "heartbeat")

    def beat_soon(self) -> None:
        """Write the record now rather than at the next heartbeat (the load changed)."""
        self._wake.set()

    async def _heartbeat(self) -> None:
        # Checked as well as cancellation: in Python 3.11 a cancel that lands as the wait's
        # own timeout fires can be taken for the timeout.
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await self._wake.wait()
            self._wake.clear()
            await self.beat()

    async def beat(self) -> None:
        """Write this node's record with its expiry; note whether Redis answered."""
        from redis.exceptions import RedisError

        redis = self._redis
        if redis is None:
            return  # closed
        try:
            if self.status == DOWN:  # registering: another live node may hold this id
                self._check_not_taken(await redis.get(self.key))
            await redis.set(self.key, self.record().to_json(), px=round(self._expiry_s * 1000))
        except (RedisError, OSError) as exc:
            self.failures += 1
            if self.status == UP or self.failures == 1:
                logger.warning(
                    "cluster: Redis at %s is unreachable (%s); serving alone until it is back",
                    redacted(self._url),
                    type(exc).__name__,
                )
            self.status = DOWN
            return
        if self.status == DOWN:
            self._published = {}  # Redis may have come back empty: write every key again
            try:
                await self._share_secrets(redis)
            except (RedisError, OSError):
                return  # still down: the next heartbeat tries again
            logger.info(
                "cluster: node %s registered at Redis %s (expiry %g s)",
                self._node_id,
                redacted(self._url),
                self._expiry_s,
            )
        self.status = UP
        try:
            await self._share_keys(redis)
        except (RedisError, OSError):
            logger.debug("cluster: could not share API keys this heartbeat")

    async def _share_keys(self, redis: Any) -> None:
        """Write this node's keys (new, changed, removed) and read every node's."""
        if self._keys is None:
            return
        own = {record.key_id: key_to_json(record) for record in self._keys.own_keys()}
        self._beats += 1
        if self._beats % REPUBLISH_EVERY == 0:
            self._published = {}  # a Redis restarted between two heartbeats lost them
        changed = {
            key_id: text for key_id, text in own.items() if self._published.get(key_id) != text
        }
        removed = [key_id for key_id in self._published if key_id not in own]
        if changed:
            await redis.hset(KEYS_KEY, mapping=changed)
        if removed:
            await redis.hdel(KEYS_KEY, *removed)
        self._published = own
        shared = []
        raw = await redis.hgetall(KEYS_KEY)
        for key_id, value in list(raw.items())[:MAX_SHARED_KEYS]:
            try:
                record = key_from_json(value)
            except ValueError as exc:
                logger.debug("cluster: ignoring shared key %r: %s", key_id[:40], exc)
                continue
            if record.key_id not in own:
                shared.append(record)
        self._keys.set_cluster_keys(shared)

    async def _share_secrets(self, redis: Any) -> None:
        """Offer this node's secrets (the first node's win) and take the cluster's."""
        if self._local_secrets is None or self._adopt_secrets is None:
            return
        for name, value in self._local_secrets().items():
            await redis.hsetnx(SECRETS_KEY, name, value)
        raw = await redis.hgetall(SECRETS_KEY)
        shared: dict[str, str] = {}
        for name, value in raw.items():
            try:
                text_name, text = name.decode(), value.decode()
            except (AttributeError, UnicodeDecodeError):
                continue
            if 0 < len(text) <= MAX_SECRET_CHARS and text.isprintable():
                shared[text_name] = text
        self._adopt_secrets(shared)

    def _check_not_taken(self, raw: bytes | None) -> None:
        """Say so (once) if another live node writes under this node's id."""
        if raw is None:
            return
        try:
            other = NodeRecord.from_json(raw)
        except BadRecord:
            return
        if other.instance != self._instance and not self._clash_reported:
            self._clash_reported = True
            logger.error(
                "cluster: another node (at %s) uses node id %r too; give each node its own "
                "node_id, or the two take turns in the cluster's view",
                other.url,
                self._node_id,
            )

    async def nodes(self) -> list[NodeRecord]:
        """Every live node's record (this one's fresh), by node id; only this one when Redis
        is unreachable."""
        from redis.exceptions import RedisError

        own = self.record()
        redis = self._redis
        if redis is None or self.status == DOWN:
            return [own]
        found: dict[str, NodeRecord] = {own.node_id: own}
        try:
            keys = []
            async for key in redis.scan_iter(match=KEY_PREFIX + "*", count=100):
                keys.append(key)
                if len(keys) >= MAX_NODES:
                    break
            values = await redis.mget(keys) if keys else []
        except (RedisError, OSError):
            return [own]
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired between the scan and the read
            try:
                record = NodeRecord.from_json(value)
            except BadRecord as exc:
                logger.debug("cluster: ignoring %r: %s", key[:80], exc)
                continue
            if record.node_id != own.node_id:
                found[record.node_id] = record
        return [found[node_id] for node_id in sorted(found)]

    async def close(self) -> None:
        """Stop renewing and leave the cluster at once (bounded). Idempotent."""
        from redis.exceptions import RedisError

        self._closed = True
        await self._tasks.close()
        client, self._redis = self._redis, None
        if client is None:
            return
        with contextlib.suppress(RedisError, OSError, TimeoutError, BadRecord):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                raw = await client.get(self.key)
                # Only our own record: a node restarted under this id may have written since.
                if raw is not None and NodeRecord.from_json(raw).instance == self._instance:
                    await client.delete(self.key)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await client.aclose()
