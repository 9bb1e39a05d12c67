"""LruCache keeps the most recently used entries up to its capacity."""

from __future__ import annotations

import pytest

from dpkit.server.persona_media.lru import LruCache


def test_least_recently_used_entry_is_evicted() -> None:
    """Beyond capacity the entry used longest ago goes, not the oldest inserted."""
    cache: LruCache[str, int] = LruCache(2)
    cache.get_or_build("a", lambda: 1)
    cache.get_or_build("b", lambda: 2)
    cache.get_or_build("a", lambda: 99)
    cache.get_or_build("c", lambda: 3)
    assert "a" in cache
    assert "b" not in cache
    assert len(cache) == 2


def test_hits_and_misses_are_counted() -> None:
    """A built entry counts a miss, a found one a hit and returns the stored value."""
    cache: LruCache[str, int] = LruCache(4)
    assert cache.get_or_build("a", lambda: 1) == 1
    assert cache.get_or_build("a", lambda: 2) == 1
    assert (cache.hits, cache.misses) == (1, 1)
    cache.clear()
    assert (len(cache), cache.hits, cache.misses) == (0, 0, 0)


def test_capacity_must_be_positive() -> None:
    """A cache that could hold nothing is a mistake and raises ValueError."""
    with pytest.raises(ValueError, match="capacity"):
        LruCache[str, int](0)
