"""Per-client bounds: how many sockets one key or address holds, and how fast one address asks.

Both are keyed by strings (an API key id, a client address) and kept small: a quota forgets a key
whose count returns to zero, and the rate limiter keeps only the addresses seen most recently.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: Addresses the rate limiter remembers; the least recently seen are forgotten first.
MAX_TRACKED_ADDRESSES = 65_536


class ConcurrencyQuota:
    """At most ``limit`` holders per key at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def try_acquire(self, key: str) -> bool:
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: ``rate`` per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_TRACKED_ADDRESSES) -> None:
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` if it has one (at time ``now``, in seconds)."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
