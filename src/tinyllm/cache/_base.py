"""What every cache backend shares: the cached value, the stats shape, the Protocol.

Example:
    >>> from tinyllm.cache import CachedResponse
    >>> hit = CachedResponse(text="4", model="gemma3:270m", input_tokens=7,
    ...                      output_tokens=1, finish_reason="stop", created=1.0)
    >>> CachedResponse.from_dict(hit.to_dict()) == hit
    True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

from tinyllm.errors import TinyLLMError

__all__ = [
    "CacheStats",
    "CacheUnavailableError",
    "CachedResponse",
    "NullCache",
    "ResponseCache",
    "check_key",
    "hit_rate",
]


class CacheUnavailableError(TinyLLMError):
    """A cache's backing service cannot be reached (raised by ``stats()``/``clear()`` only).

    ``get``/``set`` never raise it: on the request path an outage means "no cache".

    Example:
        >>> str(CacheUnavailableError("cannot reach Redis at 127.0.0.1:6390: Connection refused"))
        'cannot reach Redis at 127.0.0.1:6390: Connection refused'
    """


def _check_tokens(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """One cached, non-streamed model answer and the usage the backend reported for it.

    ``created`` is wall-clock time (``time.time()``) of the original answer, so a hit
    can say how old it is.

    Example:
        >>> r = CachedResponse(text="4", model="m", input_tokens=3, output_tokens=1,
        ...                    finish_reason="stop", created=0.0)
        >>> r.to_dict()["text"]
        '4'
    """

    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        for name in ("text", "model"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
        _check_tokens("input_tokens", self.input_tokens)
        _check_tokens("output_tokens", self.output_tokens)
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            raise TypeError(f"finish_reason must be a str or None, got {self.finish_reason!r}")
        created = self.created
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise TypeError(f"created must be a number (time.time()), got {created!r}")
        if not math.isfinite(created):
            raise ValueError(f"created must be finite, got {created!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` reads it back."""
        return {
            "text": self.text,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "created": float(self.created),
        }

    @classmethod
    def from_dict(cls, data: Any) -> CachedResponse:
        """Rebuild a response from ``to_dict()`` output; keys it does not know are ignored
        (so an entry written by a newer version still reads).

        Raises ValueError when ``data`` is not such a dict (a corrupt stored entry).
        """
        if not isinstance(data, dict):
            raise ValueError(f"a cached response must be a JSON object, got {data!r:.80}")
        missing = {"text", "model"} - data.keys()
        if missing:
            raise ValueError(f"cached response lacks {', '.join(sorted(missing))}")
        try:
            return cls(
                text=data["text"],
                model=data["model"],
                input_tokens=data.get("input_tokens"),
                output_tokens=data.get("output_tokens"),
                finish_reason=data.get("finish_reason"),
                created=data.get("created", 0.0),
            )
        except TypeError as exc:
            raise ValueError(f"malformed cached response: {exc}") from None


class CacheStats(TypedDict):
    """What ``ResponseCache.stats()`` returns (JSON-ready; ``tinyllm cache-stats --json``).

    ``hits``/``misses``/``errors`` are this cache object's own counts for ``memory``,
    and the counts shared by every process for ``redis``. ``hit_rate`` is None before
    the first lookup. The ``NotRequired`` keys are backend-specific.
    """

    cache_type: str
    entries: int
    max_entries: int | None
    ttl: float | None
    hits: int
    misses: int
    hit_rate: float | None
    errors: int
    evictions: NotRequired[int]
    expirations: NotRequired[int]
    address: NotRequired[str]
    prefix: NotRequired[str]
    redis_version: NotRequired[str]
    used_memory_bytes: NotRequired[int]
    used_memory_human: NotRequired[str]


def hit_rate(hits: int, misses: int) -> float | None:
    """``hits / (hits + misses)``, or None before the first lookup.

    Example:
        >>> hit_rate(3, 1), hit_rate(0, 0)
        (0.75, None)
    """
    total = hits + misses
    return hits / total if total else None


def check_key(key: Any) -> str:
    """``key`` if it is a non-empty str, else TypeError/ValueError naming ``key``."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str (see cache_key()), got {type(key).__name__}")
    if not key:
        raise ValueError("key must be a non-empty str (see cache_key())")
    return key


@runtime_checkable
class ResponseCache(Protocol):
    """The plug-in point for response caches: ``MemoryCache``, ``RedisCache``, your own.

    ``get`` and ``set`` are on the request path: they must not raise on an environment
    failure (a cache that is down is a cache that misses). ``get`` feeds
    ``increment_cache_hit/miss(cache_type=...)``.

    Example:
        >>> from tinyllm.cache import MemoryCache
        >>> isinstance(MemoryCache(), ResponseCache)
        True
    """

    cache_type: str

    def get(self, key: str) -> CachedResponse | None:
        """The response cached under ``key``, or None (a miss, or the cache is down)."""
        ...

    def set(self, key: str, value: CachedResponse) -> None:
        """Cache ``value`` under ``key`` (skipped silently when the cache is down)."""
        ...

    def stats(self) -> CacheStats:
        """Entries, bounds and hit/miss counts."""
        ...

    def clear(self) -> None:
        """Remove every entry (counters are kept: they are totals, like Prometheus's)."""
        ...


class NullCache:
    """The disabled cache (``configure_cache("none")``): every ``get`` is None, no metrics.

    Example:
        >>> NullCache().get("k") is None
        True
    """

    cache_type = "none"

    def get(self, key: str) -> CachedResponse | None:
        """Always None (nothing is cached); not counted as a miss."""
        check_key(key)
        return None

    def set(self, key: str, value: CachedResponse) -> None:
        """Does nothing."""
        check_key(key)

    def stats(self) -> CacheStats:
        """All zero."""
        return CacheStats(cache_type="none", entries=0, max_entries=0, ttl=None, hits=0,
                          misses=0, hit_rate=None, errors=0)

    def clear(self) -> None:
        """Does nothing."""
