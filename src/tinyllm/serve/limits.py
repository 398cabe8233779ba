"""Per-key limits shared by every instance of the gateway, through Redis.

With ``--redis-url`` each key's ``rpm`` and ``tpm`` buckets live in Redis (one hash per
key and limit, updated by one Lua script, on Redis's clock), so two instances behind a
load balancer enforce one limit; so does each key's spend against its budget
(``tinyllm.serve.budgets``). Without it the buckets live in the process
(``MinuteBucket``). Redis that is down or slow is not the clients' problem: the
instance falls back to its own buckets (limits then hold per instance), logs it once,
counts each failed call in ``tinyllm_gateway_limit_backend_errors_total``, and goes
back to Redis once it answers again.

Example:
    >>> bucket = SharedBucket(None, "team-a:rpm", 600)        # no Redis: in-process
    >>> import asyncio
    >>> asyncio.run(bucket.take())
    0.0
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["MinuteBucket", "RedisLimits", "SharedBucket"]

log = logging.getLogger("tinyllm.serve")
_T = TypeVar("_T")

# KEYS[1]: the bucket's hash. ARGV: capacity, refill per second, amount, mode.
# Modes: take (grant `amount` if there, else the wait), charge (take it whatever is
# left: the bucket may go into debt), wait (0 while anything is left, else the wait).
_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local mode = ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or capacity)
local stamp = tonumber(redis.call('HGET', KEYS[1], 'stamp') or now)
level = math.min(capacity, level + math.max(0, now - stamp) * rate)
local wait = 0
if mode == 'take' then
  if level >= amount then level = level - amount else wait = (amount - level) / rate end
elseif mode == 'charge' then
  level = level - amount
elseif level <= 0 then
  wait = (0.000001 - level) / rate
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return tostring(wait)
"""


class MinuteBucket:
    """A token bucket holding ``per_minute`` tokens, refilled at ``per_minute / 60`` a
    second; ``take`` returns 0 when granted, else the seconds until it would be.

    Example:
        >>> bucket = MinuteBucket(2, clock=lambda: 0.0)
        >>> bucket.take(), bucket.take(), bucket.take() > 0
        (0.0, 0.0, True)
    """

    __slots__ = ("_clock", "_level", "_lock", "_rate", "_stamp", "capacity")

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self._clock()
        level = min(self.capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        return level

    def take(self, amount: float = 1.0) -> float:
        with self._lock:
            level = self._refill()
            if level >= amount:
                self._level = level - amount
                return 0.0
            self._level = level
            return (amount - level) / self._rate

    def wait(self) -> float:
        """0 while anything is left, else the seconds until something is (a bucket that
        is charged after the fact, as tokens are, may be in debt)."""
        with self._lock:
            level = self._level = self._refill()
            return 0.0 if level > 0 else (1e-9 - level) / self._rate

    def charge(self, amount: float) -> None:
        """Take ``amount`` whatever is left: the bucket may go into debt, which the
        refill pays back before the next call is let in."""
        with self._lock:
            self._level = self._refill() - amount


class RedisLimits:
    """The connection the shared buckets and budgets use, and what happens when it fails.

    Every call goes through ``_guarded``: while Redis failed less than
    ``retry_interval`` seconds ago it is not tried (the caller falls back at once);
    a failure is counted and logged once, and its recovery logged once.
    """

    def __init__(self, url: str, *, prefix: str = "tinyllm:limits:",
                 timeout: float = 0.25, retry_interval: float = 1.0) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None)
        self._script: Any = self._client.register_script(_SCRIPT)
        self._retry_interval = retry_interval
        self._down_since: float | None = None
        self.url = url

    async def _guarded(self, operation: Callable[[], Awaitable[_T]]) -> _T | None:
        """``operation``'s answer, or None when Redis cannot be used right now."""
        down = self._down_since
        if down is not None and time.monotonic() - down < self._retry_interval:
            return None
        try:
            answer = await operation()
        except Exception as exc:  # Redis down, slow, or refusing: the instance goes on
            self._failed(exc)
            return None
        if down is not None:
            self._down_since = None
            log.warning("gateway limits: Redis at %s answers again; limits and budgets are "
                        "shared again", self.url)
        return answer

    async def run(self, key: str, capacity: float, rate: float, amount: float,
                  mode: str) -> float | None:
        """The bucket script's answer, or None when Redis cannot be used right now."""
        answer = await self._guarded(lambda: self._script(
            keys=[self.prefix + key], args=[capacity, rate, amount, mode]))
        return None if answer is None else float(answer)

    async def read_amount(self, key: str) -> float | None:
        """The number stored at ``key`` (0 when there is none), or None when Redis cannot
        be used right now."""
        async def read() -> float:
            value = await self._client.get(self.prefix + key)
            return 0.0 if value is None else float(value)

        return await self._guarded(read)

    async def add_amount(self, key: str, amount: float, ttl: float) -> float | None:
        """Add ``amount`` to the number at ``key`` (INCRBYFLOAT), which expires ``ttl``
        seconds from now; the new total, or None when Redis cannot be used right now
        (nothing was added then)."""
        async def add() -> float:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(self.prefix + key, amount)
                pipe.expire(self.prefix + key, max(math.ceil(ttl), 1))
                total, _ = await pipe.execute()
            return float(total)

        return await self._guarded(add)

    def _failed(self, exc: Exception) -> None:
        from tinyllm.metrics.collector import get_metrics_collector

        get_metrics_collector().increment_gateway_limit_backend_errors()
        if self._down_since is None:
            log.warning("gateway limits: Redis at %s failed (%s); each instance keeps its "
                        "own limits and budgets' spend until it answers", self.url, exc)
        self._down_since = time.monotonic()

    async def close(self) -> None:
        await self._client.aclose()


class SharedBucket:
    """A ``MinuteBucket`` kept in Redis when ``limits`` is given (else in-process), with
    the in-process bucket as the fallback while Redis is unavailable."""

    __slots__ = ("_key", "_limits", "_local", "capacity")

    def __init__(self, limits: RedisLimits | None, key: str, per_minute: int) -> None:
        self._limits = limits
        self._key = key
        self._local = MinuteBucket(per_minute)
        self.capacity = float(per_minute)

    async def _run(self, amount: float, mode: str) -> float | None:
        if self._limits is None:
            return None
        return await self._limits.run(self._key, self.capacity, self.capacity / 60.0,
                                      amount, mode)

    async def take(self, amount: float = 1.0) -> float:
        shared = await self._run(amount, "take")
        return self._local.take(amount) if shared is None else shared

    async def wait(self) -> float:
        shared = await self._run(0, "wait")
        return self._local.wait() if shared is None else shared

    async def charge(self, amount: float) -> None:
        if await self._run(amount, "charge") is None:
            self._local.charge(amount)
