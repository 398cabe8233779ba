"""A token-bucket rate limiter per model, every admission's wait recorded.

The bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per second;
it starts full. ``acquire`` *reserves* its tokens under a lock (the bucket may go
negative) and then sleeps outside the lock until they are due, so concurrent callers
queue up in arrival order, each ``1 / rate`` seconds after the one before, and nobody
holds the lock while sleeping.

Every admission records its wait with ``record_rate_limit_wait(waited, model)``, zero
waits included: so ``tinyllm_rate_limit_wait_seconds_count`` is the number of
admissions and ``_sum`` the total time spent waiting. A caller that gives up
(``timeout``) is not recorded and consumes nothing.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.metrics import MetricsCollector
    >>> now, slept = [0.0], []
    >>> limiter = RateLimiter(2.0, burst=1, model="m", clock=lambda: now[0],
    ...                       sleep=slept.append,
    ...                       collector=MetricsCollector(registry=CollectorRegistry()))
    >>> limiter.acquire(), limiter.acquire(), slept     # the second waits for a refill
    (0.0, 0.5, [0.5])
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tinyllm.errors import ModelError
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector
from tinyllm.resilience.timeouts import Clock, _check_callable, _check_positive

__all__ = ["RateLimiter", "get_rate_limiter", "reset_rate_limiters"]


def _default_burst(rate: float) -> int:
    return max(1, math.ceil(rate))


def _check_model(model: Any) -> str:
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__} {model!r}")
    if not model:
        raise ValueError("model must not be empty")
    return model


class RateLimiter:
    """A thread-safe token bucket: ``rate`` tokens per second, at most ``burst`` at once.

    Args:
        rate: tokens added per second (a finite number > 0).
        burst: the bucket's capacity (an int >= 1); default ``max(1, ceil(rate))``.
        model: the ``model`` label waits are recorded under.
        collector: where to record; default the process-wide collector.
        clock: monotonic seconds; inject a fake in tests.
        sleep: how ``acquire`` waits; inject a recorder in tests.
        async_sleep: how ``aacquire`` waits (default ``asyncio.sleep``).

    Example:
        >>> limiter = RateLimiter(10.0, model="gpt-4o")      # 10 requests/s, bursts of 10
        >>> limiter.burst, limiter.try_acquire()
        (10, True)
    """

    __slots__ = (
        "_async_sleep", "_clock", "_collector", "_lock", "_sleep", "_tokens", "_updated",
        "burst", "model", "rate",
    )

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        model: str,
        collector: MetricsCollector | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        async_sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        checked_rate = _check_positive("rate", rate)
        if burst is None:
            burst = _default_burst(checked_rate)
        elif isinstance(burst, bool) or not isinstance(burst, int):
            raise TypeError(f"burst must be an int >= 1 or None, got {burst!r}")
        elif burst < 1:
            raise ValueError(f"burst must be an int >= 1 or None, got {burst!r}")
        if collector is not None and not isinstance(collector, MetricsCollector):
            raise TypeError(f"collector must be a MetricsCollector or None, got {collector!r}")
        _check_callable("clock", clock)
        _check_callable("sleep", sleep)
        _check_callable("async_sleep", async_sleep)
        self.rate = checked_rate
        self.burst = burst
        self.model = _check_model(model)
        self._collector = collector
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def available(self) -> float:
        """Tokens in the bucket now; negative while admitted callers still wait for theirs."""
        with self._lock:
            self._refill()
            return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now

    def _check_tokens(self, tokens: Any) -> float:
        checked = _check_positive("tokens", tokens)
        if checked > self.burst:
            raise ValueError(
                f"tokens must be <= burst ({self.burst}): more than the bucket holds can "
                f"never be admitted, got {tokens!r}"
            )
        return checked

    def _reserve(self, tokens: Any, timeout: Any) -> tuple[float, float]:
        """Take ``tokens`` now (possibly into debt); return (tokens, seconds until they are due)."""
        amount = self._check_tokens(tokens)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float):
                raise TypeError(f"timeout must be a finite number >= 0 or None, got {timeout!r}")
            if not 0 <= timeout < math.inf:
                raise ValueError(f"timeout must be a finite number >= 0 or None, got {timeout!r}")
        with self._lock:
            self._refill()
            deficit = amount - self._tokens
            wait = deficit / self.rate if deficit > 0 else 0.0
            if timeout is not None and wait > timeout:
                # Decided before taking anything: a caller that will not wait leaves the
                # bucket as it found it.
                raise ModelError(
                    f"rate limit for model {self.model!r} ({self.rate:g}/s, burst "
                    f"{self.burst}): admitting {amount:g} token(s) needs a {wait:.3f}s wait, "
                    f"more than the timeout of {timeout:g}s",
                    error_type="rate_limited",
                    retry_after=wait,
                )
            self._tokens -= amount
        return amount, wait

    def _refund(self, amount: float) -> None:
        # The caller was interrupted while waiting: the slot it reserved goes back, so an
        # abandoned wait does not slow everybody else down.
        with self._lock:
            self._refill()
            self._tokens = min(float(self.burst), self._tokens + amount)

    def _admitted(self, wait: float) -> float:
        (self._collector or get_metrics_collector()).record_rate_limit_wait(wait, self.model)
        return wait

    def acquire(self, tokens: float = 1.0, *, timeout: float | None = None) -> float:
        """Block until ``tokens`` are admitted; return the seconds waited.

        Args:
            tokens: how many tokens (> 0, at most ``burst``).
            timeout: the longest acceptable wait, seconds; None waits as long as needed.

        Raises:
            ModelError: ``error_type="rate_limited"`` (``retry_after`` the wait it would
                have taken) at once, without waiting or consuming, when the wait would
                exceed ``timeout``.

        Example:
            >>> RateLimiter(5.0, model="m").acquire()
            0.0
        """
        amount, wait = self._reserve(tokens, timeout)
        if wait > 0:
            try:
                self._sleep(wait)
            except BaseException:
                self._refund(amount)
                raise
        return self._admitted(wait)

    async def aacquire(self, tokens: float = 1.0, *, timeout: float | None = None) -> float:
        """``acquire`` for coroutines, waiting with ``async_sleep``; a cancelled wait refunds.

        Example:
            >>> asyncio.run(RateLimiter(5.0, model="m").aacquire())
            0.0
        """
        amount, wait = self._reserve(tokens, timeout)
        if wait > 0:
            try:
                await self._async_sleep(wait)
            except BaseException:
                self._refund(amount)
                raise
        return self._admitted(wait)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are there right now; never waits. Admissions record a 0 wait.

        Example:
            >>> limiter = RateLimiter(1.0, model="m")
            >>> limiter.try_acquire(), limiter.try_acquire()
            (True, False)
        """
        amount = self._check_tokens(tokens)
        with self._lock:
            self._refill()
            if self._tokens < amount:
                return False
            self._tokens -= amount
        self._admitted(0.0)
        return True

    def __repr__(self) -> str:
        return f"RateLimiter({self.rate!r}, burst={self.burst!r}, model={self.model!r})"


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def get_rate_limiter(model: str, rate: float, burst: int | None = None) -> RateLimiter:
    """The process-wide limiter of ``model``, created on first use.

    Every client of one model shares its limiter. Asking again with a different
    ``rate`` or ``burst`` is a configuration error (ValueError), not a silent reuse.

    Example:
        >>> reset_rate_limiters()
        >>> get_rate_limiter("m", 5.0) is get_rate_limiter("m", 5.0)
        True
    """
    _check_model(model)
    with _limiters_lock:
        found = _limiters.get(model)
        if found is None:
            found = _limiters[model] = RateLimiter(rate, burst, model=model)
            return found
    wanted_burst = burst
    if wanted_burst is None and isinstance(rate, int | float) and not isinstance(rate, bool):
        wanted_burst = _default_burst(rate) if 0 < rate < math.inf else None
    if rate != found.rate or wanted_burst != found.burst:
        raise ValueError(
            f"the rate limiter of model {model!r} already exists with rate={found.rate!r}, "
            f"burst={found.burst!r}; got rate={rate!r}, burst={burst!r} "
            "(reset_rate_limiters() forgets it)"
        )
    return found


def reset_rate_limiters() -> None:
    """Forget every process-wide limiter (tests); the next ``get_rate_limiter`` builds afresh.

    Example:
        >>> reset_rate_limiters()
    """
    with _limiters_lock:
        _limiters.clear()
