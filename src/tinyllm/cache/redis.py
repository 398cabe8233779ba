"""``RedisCache``: a response cache shared by every process that points at one Redis.

Entries live at ``<prefix>entry:<key>`` as JSON with a TTL; the hit and miss counts live
in the hash ``<prefix>stats``, updated by the same server-side script that reads the
entry (one round trip), so ``tinyllm cache-stats --backend redis`` reports them for all
processes at once.

A Redis outage never reaches the caller: ``get`` returns None and ``set`` does nothing,
each counted in ``tinyllm_cache_errors_total{cache_type="redis",operation=...}``; one
warning is logged when the outage starts and one info line when Redis answers again.
While Redis is down it is asked again at most once every ``retry_interval`` seconds, so
an unreachable server costs one request a connect timeout, not every request.

Example:
    >>> from tinyllm.cache import CachedResponse, RedisCache
    >>> cache = RedisCache("redis://127.0.0.1:6379/0", ttl=600)  # doctest: +SKIP
    >>> cache.set("k", CachedResponse(text="4", model="m"))  # doctest: +SKIP
    >>> cache.get("k").text  # doctest: +SKIP
    '4'
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tinyllm.cache._base import (
    CachedResponse,
    CacheStats,
    CacheUnavailableError,
    check_key,
    hit_rate,
)
from tinyllm.cache.memory import _resolve_collector, check_ttl
from tinyllm.logging import get_logger

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector

__all__ = ["DEFAULT_PREFIX", "DEFAULT_REDIS_URL", "RedisCache"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "tinyllm:cache:"

_log = get_logger("tinyllm.cache")

# GET the entry and count the outcome in one atomic round trip.
_GET_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('HINCRBY', KEYS[2], 'hits', 1)
else
  redis.call('HINCRBY', KEYS[2], 'misses', 1)
end
return value
"""

_GLOB_SPECIAL = "\\*?[]"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - the dev install has the extra
        raise ImportError(
            "RedisCache needs redis-py, which is not installed: pip install 'tinyllm[redis]'"
        ) from exc
    return redis


def _reason(exc: BaseException) -> str:
    """The shortest true account of a failure: the OS's words when there are some
    ("Connection refused"), else redis-py's message."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _positive(name: str, value: Any, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return float(value)


class RedisCache:
    """Response cache in Redis (extra ``redis``: ``pip install 'tinyllm[redis]'``).

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` or
            ``unix:///path?db=N``; default ``redis://127.0.0.1:6379/0``.
        host, port, db: instead of ``url``.
        ttl: seconds an entry lives (None: no expiry; Redis's own eviction policy
            then bounds the size).
        prefix: namespace of every key this cache writes.
        collector: where hits, misses and errors are counted (default: process-wide).
        socket_timeout: connect and read timeout per command, seconds; it bounds what
            an unreachable Redis costs a request.
        retry_interval: while Redis is down, seconds between attempts to use it again
            (0: try on every call).
        clock: monotonic seconds, for the retry interval; tests pass a fake one.

    Example:
        >>> RedisCache(host="127.0.0.1", port=6379, prefix="myapp:")  # doctest: +SKIP
        RedisCache('127.0.0.1:6379', db=0, prefix='myapp:')
    """

    cache_type = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        ttl: float | None = 3600.0,
        prefix: str = DEFAULT_PREFIX,
        collector: MetricsCollector | None = None,
        socket_timeout: float = 0.25,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url is not None and (host, port, db) != (None, None, None):
            raise ValueError("pass either url or host/port/db, not both")
        if url is not None and (not isinstance(url, str) or not url.startswith(
                ("redis://", "rediss://", "unix://"))):
            raise ValueError(f"url must start with redis://, rediss:// or unix://, got {url!r}")
        if host is not None and (not isinstance(host, str) or not host):
            raise TypeError(f"host must be a non-empty str, got {host!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 < port < 65536):
            raise ValueError(f"port must be an int from 1 to 65535, got {port!r}")
        if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
            raise ValueError(f"db must be an int >= 0, got {db!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        self.ttl = check_ttl(ttl)
        self.socket_timeout = _positive("socket_timeout", socket_timeout)
        self.retry_interval = _positive("retry_interval", retry_interval, zero_ok=True)
        self.prefix = prefix
        self._collector = _resolve_collector(collector)
        self._clock = clock

        redis = _import_redis()
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            # One immediate retry, on a connection error only: it reconnects a pooled
            # socket that a restarted Redis closed, without redis-py's default backoff
            # (seconds) on a dead server. Not on a timeout: a Redis that does not answer
            # would then cost a request two socket_timeouts instead of one.
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        }
        if url is not None:
            self._client: Any = redis.Redis.from_url(url, **options)
        else:
            self._client = redis.Redis(host=host or "127.0.0.1", port=port or 6379,
                                       db=db or 0, **options)
        kw = self._client.connection_pool.connection_kwargs
        self.db = int(kw.get("db") or 0)
        #: Where Redis is, for messages: ``host:port`` or the socket path, never a password.
        self.address = str(kw["path"]) if kw.get("path") else f"{kw.get('host')}:{kw.get('port')}"
        self._entry_prefix = f"{prefix}entry:"
        self._stats_key = f"{prefix}stats"
        self._get_script = self._client.register_script(_GET_SCRIPT)
        self._errors_seen = (redis.RedisError, OSError)

        self._state_lock = threading.Lock()
        self._down = False
        self._retry_at = -math.inf
        self._errors = 0
        self._bad_entry_logged = False

    # -- outage bookkeeping --------------------------------------------------------------
    def _count_error(self, operation: str) -> None:
        with self._state_lock:
            self._errors += 1
        self._collector.increment_cache_errors(cache_type=self.cache_type, operation=operation)

    def _skipping(self) -> bool:
        # Read without the lock: a stale answer costs one extra attempt or skip, no more.
        return self._down and self._clock() < self._retry_at

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._count_error(operation)
        with self._state_lock:
            first = not self._down
            self._down = True
            self._retry_at = self._clock() + self.retry_interval
        if first:
            _log.warning(
                "redis_cache_unavailable",
                address=self.address,
                operation=operation,
                error_type=type(exc).__name__,
                error=_reason(exc),
                note="caching is off until Redis answers again; requests go on uncached "
                     "(further failures are counted in cache_errors_total, not logged)",
            )

    def _succeeded(self) -> None:
        if not self._down:
            return
        with self._state_lock:
            was_down, self._down = self._down, False
        if was_down:
            _log.info("redis_cache_recovered", address=self.address)

    # -- the request path ----------------------------------------------------------------
    def get(self, key: str) -> CachedResponse | None:
        """The response under ``key``, or None on a miss or while Redis is unreachable
        (counted in ``cache_errors_total{operation="get"}``, not as a miss)."""
        check_key(key)
        if self._skipping():
            self._count_error("get")
            return None
        try:
            raw = self._get_script(keys=[self._entry_prefix + key, self._stats_key])
        except self._errors_seen as exc:
            self._failed("get", exc)
            return None
        self._succeeded()
        if raw is None:
            self._collector.increment_cache_miss(cache_type=self.cache_type)
            return None
        try:
            value = CachedResponse.from_dict(json.loads(raw))
        except ValueError as exc:  # written by something else, or truncated: drop it
            self._bad_entry(key, exc)
            return None
        self._collector.increment_cache_hit(cache_type=self.cache_type)
        return value

    def _bad_entry(self, key: str, exc: ValueError) -> None:
        self._count_error("get")
        if not self._bad_entry_logged:
            self._bad_entry_logged = True
            _log.warning("redis_cache_bad_entry", address=self.address, key=key,
                         error=str(exc)[:200],
                         note="entry deleted; further bad entries are counted, not logged")
        with contextlib.suppress(*self._errors_seen):  # it expires anyway
            self._client.delete(self._entry_prefix + key)

    def set(self, key: str, value: CachedResponse) -> None:
        """Store ``value`` under ``key`` with the TTL; skipped while Redis is unreachable
        (counted in ``cache_errors_total{operation="set"}``)."""
        check_key(key)
        if not isinstance(value, CachedResponse):
            raise TypeError(f"value must be a CachedResponse, got {type(value).__name__}")
        payload = json.dumps(value.to_dict(), separators=(",", ":"), ensure_ascii=False)
        if self._skipping():
            self._count_error("set")
            return
        px = None if self.ttl is None else max(1, round(self.ttl * 1000))
        try:
            self._client.set(self._entry_prefix + key, payload, px=px)
        except self._errors_seen as exc:
            self._failed("set", exc)
            return
        self._succeeded()

    # -- administration (these raise CacheUnavailableError) -----------------------------
    def _unavailable(self, operation: str, exc: BaseException) -> CacheUnavailableError:
        self._count_error(operation)
        redis = _import_redis()
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            return CacheUnavailableError(f"cannot reach Redis at {self.address}: {_reason(exc)}")
        return CacheUnavailableError(f"Redis at {self.address} failed: {_reason(exc)}")

    def _entry_keys(self) -> Any:
        return self._client.scan_iter(match=_glob_escape(self._entry_prefix) + "*", count=1000)

    def stats(self) -> CacheStats:
        """Entries under the prefix (counted with SCAN), the hits and misses of every
        process, and the server's memory use and version.

        Raises CacheUnavailableError (one line naming the address) when Redis cannot
        be reached: unlike ``get``/``set`` this is a question, and "unknown" is the answer.

        Example:
            >>> RedisCache().stats()["redis_version"]  # doctest: +SKIP
            '7.0.15'
        """
        try:
            entries = sum(1 for _ in self._entry_keys())
            counts = self._client.hgetall(self._stats_key)
            memory = self._client.info("memory")
            server = self._client.info("server")
        except self._errors_seen as exc:
            raise self._unavailable("stats", exc) from exc
        hits = int(counts.get(b"hits", 0))
        misses = int(counts.get(b"misses", 0))
        with self._state_lock:
            errors = self._errors
        return CacheStats(
            cache_type=self.cache_type,
            entries=entries,
            max_entries=None,
            ttl=self.ttl,
            hits=hits,
            misses=misses,
            hit_rate=hit_rate(hits, misses),
            errors=errors,
            address=self.address,
            prefix=self.prefix,
            redis_version=str(server.get("redis_version", "unknown")),
            used_memory_bytes=int(memory.get("used_memory", 0)),
            used_memory_human=str(memory.get("used_memory_human", "")),
        )

    def clear(self) -> None:
        """Delete every entry under the prefix (SCAN + UNLINK in batches); the shared
        hit/miss counts are kept. Raises CacheUnavailableError when Redis is unreachable."""
        try:
            batch: list[bytes] = []
            for name in self._entry_keys():
                batch.append(name)
                if len(batch) >= 500:
                    self._client.unlink(*batch)
                    batch.clear()
            if batch:
                self._client.unlink(*batch)
        except self._errors_seen as exc:
            raise self._unavailable("clear", exc) from exc

    def close(self) -> None:
        """Close the connection pool (the cache reconnects if used again)."""
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisCache({self.address!r}, db={self.db}, prefix={self.prefix!r})"
