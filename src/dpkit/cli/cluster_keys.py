"""The API keys in a cluster's Redis (hash ``dpkit:keys``), for ``dpkit keys --redis-url``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from dpkit.server.cluster.membership import KEYS_KEY, MAX_SHARED_KEYS, redacted
from dpkit.server.keys import key_from_json

if TYPE_CHECKING:
    from dpkit.server.keys import KeyRecord

TIMEOUT_S = 2.0
SCAN_BATCH = 1000

T = TypeVar("T")


class ClusterUnreachable(Exception):
    """Redis could not be reached, or answered with an error."""

    def __init__(self, url: str, error: BaseException) -> None:
        self.message = (
            f"cannot reach the cluster's Redis at {redacted(url)}: {type(error).__name__}"
        )
        super().__init__(self.message)


@dataclass
class SharedKeys:
    """What Redis holds: the keys read, the entries skipped as damaged, and whether all fit."""

    #: The Redis URL without its password.
    shown_url: str
    records: list[KeyRecord] = field(default_factory=list)
    damaged: int = 0
    complete: bool = True

    def matching(self, key_id_prefix: str) -> list[KeyRecord]:
        """The key whose id is ``key_id_prefix``, else every key whose id starts with it."""
        exact = [record for record in self.records if record.key_id == key_id_prefix]
        if exact:
            return exact
        return [record for record in self.records if record.key_id.startswith(key_id_prefix)]


class ClusterKeys:
    """The cluster's shared keys on the Redis at ``url`` (every error is ClusterUnreachable)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown_url = redacted(url)

    def read(self) -> SharedKeys:
        """Every shared key, at most MAX_SHARED_KEYS entries; damaged ones are counted."""
        entries = self._call(self._scan)
        shared = SharedKeys(self.shown_url, complete=len(entries) < MAX_SHARED_KEYS)
        for value in entries.values():
            try:
                shared.records.append(key_from_json(value))
            except ValueError:
                shared.damaged += 1
        return shared

    def delete(self, key_id: str) -> bool:
        """Remove ``key_id`` from the hash; whether it was there."""
        removed: int = self._call(lambda client: int(client.hdel(KEYS_KEY, key_id)))
        return removed > 0

    @staticmethod
    def _scan(client: Any) -> dict[bytes, bytes]:
        entries: dict[bytes, bytes] = {}
        for name, value in client.hscan_iter(KEYS_KEY, count=SCAN_BATCH):
            entries[name] = value
            if len(entries) >= MAX_SHARED_KEYS:
                break
        return entries

    def _call(self, action: Callable[[Any], T]) -> T:
        import redis

        try:
            client = redis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
            )
            with client:
                return action(client)
        except (redis.RedisError, OSError, ValueError) as exc:
            raise ClusterUnreachable(self.url, exc) from None
