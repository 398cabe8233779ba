"""``MemoryCache``: an in-process LRU with a TTL and a size bound.

Example:
    >>> from tinyllm.cache import CachedResponse, MemoryCache
    >>> cache = MemoryCache(max_entries=2, ttl=60.0)
    >>> cache.set("k", CachedResponse(text="4", model="m"))
    >>> cache.get("k").text
    '4'
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tinyllm.cache._base import CachedResponse, CacheStats, check_key, hit_rate

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector

__all__ = ["MemoryCache", "check_ttl"]


def check_ttl(ttl: Any) -> float | None:
    """``ttl`` as float seconds, or None (no expiry); TypeError/ValueError naming ``ttl``."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, got {ttl!r}")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a positive, finite number of seconds or None, got {ttl!r}")
    return float(ttl)


def _resolve_collector(collector: MetricsCollector | None) -> MetricsCollector:
    if collector is not None:
        return collector
    from tinyllm.metrics.collector import get_metrics_collector

    return get_metrics_collector()


class MemoryCache:
    """Least-recently-used response cache living in this process, bounded and expiring.

    Args:
        max_entries: the size bound; setting a new key beyond it evicts the least
            recently used entry.
        ttl: seconds an entry lives after it was set (None: until evicted).
        collector: where hits and misses are counted (default: the process-wide one).
        clock: monotonic seconds; tests pass a fake one.

    Thread-safe: one lock guards the dict, held for dict operations only (metrics are
    updated after it is released).

    Example:
        >>> cache = MemoryCache(max_entries=100, ttl=None)
        >>> cache.get("absent") is None
        True
        >>> cache.stats()["misses"]
        1
    """

    cache_type = "memory"

    def __init__(
        self,
        max_entries: int = 1024,
        ttl: float | None = 3600.0,
        *,
        collector: MetricsCollector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int):
            raise TypeError(f"max_entries must be an int, got {max_entries!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.max_entries = max_entries
        self.ttl = check_ttl(ttl)
        self._clock = clock
        self._collector = _resolve_collector(collector)
        # key -> (value, expires_at or inf); order is recency, most recent last.
        self._data: OrderedDict[str, tuple[CachedResponse, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._expirations = 0

    def __len__(self) -> int:
        """Entries held, expired ones not yet purged included (``stats()`` purges)."""
        return len(self._data)

    def get(self, key: str) -> CachedResponse | None:
        """The live entry under ``key`` (now the most recently used), or None."""
        check_key(key)
        value: CachedResponse | None = None
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                if self._clock() >= entry[1]:
                    del self._data[key]
                    self._expirations += 1
                else:
                    self._data.move_to_end(key)
                    value = entry[0]
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        if value is None:
            self._collector.increment_cache_miss(cache_type=self.cache_type)
        else:
            self._collector.increment_cache_hit(cache_type=self.cache_type)
        return value

    def set(self, key: str, value: CachedResponse) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, evicting the LRU entry if full."""
        check_key(key)
        if not isinstance(value, CachedResponse):
            raise TypeError(f"value must be a CachedResponse, got {type(value).__name__}")
        with self._lock:
            expires = math.inf if self.ttl is None else self._clock() + self.ttl
            self._data[key] = (value, expires)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self._evictions += 1

    def _purge_expired(self) -> None:
        now = self._clock()
        expired = [k for k, (_, expires) in self._data.items() if now >= expires]
        for k in expired:
            del self._data[k]
        self._expirations += len(expired)

    def stats(self) -> CacheStats:
        """Live entries (expired ones are purged first), bounds and this cache's counts.

        Example:
            >>> sorted(MemoryCache().stats())[:4]
            ['cache_type', 'entries', 'errors', 'evictions']
        """
        with self._lock:
            self._purge_expired()
            return CacheStats(
                cache_type=self.cache_type,
                entries=len(self._data),
                max_entries=self.max_entries,
                ttl=self.ttl,
                hits=self._hits,
                misses=self._misses,
                hit_rate=hit_rate(self._hits, self._misses),
                errors=0,
                evictions=self._evictions,
                expirations=self._expirations,
            )

    def clear(self) -> None:
        """Remove every entry; hit/miss counts are kept."""
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, ttl={self.ttl})"
