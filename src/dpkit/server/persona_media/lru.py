"""A small bounded least-recently-used cache.

The persona renderer revisits the same few hundred poses over and over, so finished frames are
kept here. ``functools.lru_cache`` is not used because it would pin ``self`` of the renderer in a
class-level cache and cannot be sized per instance.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """Map at most ``capacity`` keys to values, forgetting the least recently used first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def capacity(self) -> int:
        """The most entries kept at once."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """Return the value for ``key``, calling ``build`` to make it on a miss."""
        try:
            value = self._entries[key]
        except KeyError:
            self.misses += 1
            value = build()
            self._entries[key] = value
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
            return value
        self.hits += 1
        self._entries.move_to_end(key)
        return value

    def clear(self) -> None:
        """Forget every entry and reset the hit and miss counters."""
        self._entries.clear()
        self.hits = 0
        self.misses = 0
