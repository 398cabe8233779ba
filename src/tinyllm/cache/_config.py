"""Building caches by name, and the process-wide cache the model clients consult.

Example:
    >>> from tinyllm.cache import configure_cache, get_response_cache, reset_cache
    >>> cache = configure_cache("memory", max_entries=256, ttl=600)
    >>> get_response_cache() is cache
    True
    >>> reset_cache()
"""

from __future__ import annotations

import threading
from typing import Any

from tinyllm.cache._base import NullCache, ResponseCache

__all__ = ["BACKENDS", "configure_cache", "get_response_cache", "make_cache", "reset_cache"]

#: The names ``make_cache`` and ``configure_cache`` accept.
BACKENDS = ("memory", "redis", "none")


def make_cache(backend: str = "memory", **options: Any) -> ResponseCache:
    """A new cache: ``"memory"`` (``MemoryCache(**options)``), ``"redis"``
    (``RedisCache(**options)``) or ``"none"`` (``NullCache``, caching off).

    Example:
        >>> make_cache("memory", max_entries=10).cache_type
        'memory'
        >>> make_cache("disk")
        Traceback (most recent call last):
        ...
        ValueError: backend='disk' is not a cache backend; valid: memory, redis, none
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str (one of {', '.join(BACKENDS)}), got {backend!r}")
    name = backend.strip().lower()
    if name == "memory":
        from tinyllm.cache.memory import MemoryCache

        return MemoryCache(**options)
    if name == "redis":
        from tinyllm.cache.redis import RedisCache

        return RedisCache(**options)
    if name == "none":
        if options:
            raise TypeError(f"backend 'none' takes no options, got {sorted(options)}")
        return NullCache()
    raise ValueError(f"backend={backend!r} is not a cache backend; valid: {', '.join(BACKENDS)}")


_lock = threading.Lock()
_current: ResponseCache | None = None


def _close(cache: ResponseCache | None) -> None:
    close = getattr(cache, "close", None)
    if callable(close):
        close()


def configure_cache(backend: str | ResponseCache = "memory", **options: Any) -> ResponseCache:
    """Make the process-wide response cache: a backend name and its options (see
    ``make_cache``), or a cache object of your own. Replaces (and closes) the previous one.

    Example:
        >>> configure_cache("none").cache_type
        'none'
        >>> configure_cache("redis", url="redis://cache:6379/0", ttl=600)  # doctest: +SKIP
        RedisCache('cache:6379', db=0, prefix='tinyllm:cache:')
    """
    global _current
    if isinstance(backend, str):
        cache = make_cache(backend, **options)
    elif isinstance(backend, ResponseCache):
        if options:
            raise TypeError("options go with a backend name, not with a cache object")
        cache = backend
    else:
        raise TypeError(f"backend must be one of {', '.join(BACKENDS)} or a ResponseCache, "
                        f"got {type(backend).__name__}")
    with _lock:
        previous, _current = _current, cache
    if previous is not cache:
        _close(previous)
    return cache


def get_response_cache() -> ResponseCache:
    """The process-wide response cache; a default ``MemoryCache()`` until
    ``configure_cache`` says otherwise.

    Example:
        >>> get_response_cache() is get_response_cache()
        True
    """
    global _current
    found = _current
    if found is not None:
        return found
    from tinyllm.cache.memory import MemoryCache

    with _lock:
        if _current is None:
            _current = MemoryCache()
        return _current


def reset_cache() -> None:
    """Forget (and close) the process-wide cache; the next ``get_response_cache()``
    builds a fresh default (tests).

    Example:
        >>> reset_cache()
    """
    global _current
    with _lock:
        previous, _current = _current, None
    _close(previous)
