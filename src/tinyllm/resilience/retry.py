"""Retries with exponential backoff and full jitter, for errors that may go away.

``RetryPolicy`` says how many attempts and how long to wait between them;
``retry_call`` / ``aretry_call`` run a zero-argument callable under it. Only errors
whose ``classify_error`` type is in ``RETRYABLE_ERROR_TYPES`` (connection, timeout,
rate_limited, server_error) are retried; anything else, ``CircuitOpenError``
included, propagates at once, unchanged. Each retry is counted with
``MetricsCollector.increment_retry_count(model)`` (``tinyllm_inference_retries_total``)
and logged at debug.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.errors import ModelError
    >>> from tinyllm.metrics import MetricsCollector
    >>> calls = []
    >>> def flaky() -> str:
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ModelError("502 from upstream", error_type="server_error")
    ...     return "ok"
    >>> metrics = MetricsCollector(registry=CollectorRegistry())
    >>> retry_call(flaky, RetryPolicy(max_attempts=3), model="m", collector=metrics,
    ...            sleep=lambda seconds: None)
    'ok'
    >>> metrics.registry.get_sample_value("tinyllm_inference_retries_total", {"model": "m"})
    2.0
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tinyllm._validation import check_amount
from tinyllm.errors import classify_error
from tinyllm.logging import get_logger
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector
from tinyllm.resilience.timeouts import Deadline

__all__ = [
    "RETRYABLE_ERROR_TYPES",
    "OnRetry",
    "RetryPolicy",
    "aretry_call",
    "is_retryable",
    "retry_call",
]

T = TypeVar("T")

#: The ``classify_error`` types worth another attempt: the backend may answer next time.
RETRYABLE_ERROR_TYPES = frozenset({"connection", "timeout", "rate_limited", "server_error"})

#: ``on_retry(attempt, error, delay)``: called before each retry's wait with the number of
#: the attempt that failed (1-based), its error and the seconds about to be slept. Must not
#: block; an exception it raises propagates in place of the retry.
OnRetry = Callable[[int, BaseException, float], None]

_logger = get_logger("tinyllm.resilience")


def is_retryable(error: BaseException) -> bool:
    """Whether ``error`` is worth another attempt (its type is in ``RETRYABLE_ERROR_TYPES``).

    Never true for bad_request, cancelled, circuit_open, oom, cuda or unknown errors.

    Example:
        >>> from tinyllm.errors import CircuitOpenError
        >>> is_retryable(ConnectionRefusedError()), is_retryable(CircuitOpenError("open"))
        (True, False)
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception, got {type(error).__name__} {error!r}")
    return classify_error(error) in RETRYABLE_ERROR_TYPES


def _retry_after(error: BaseException | None) -> float | None:
    """The error's ``retry_after`` seconds (a 429's or 503's Retry-After), if it has a sane one."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value < math.inf:  # NaN, negative or infinite: a broken header, ignored
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        max_attempts: calls in all, the first included (1 means no retries).
        base_delay: the backoff before the first retry, seconds.
        max_delay: the cap of the exponential backoff, seconds.
        multiplier: the backoff grows by this factor per retry (>= 1).
        jitter: "full jitter": wait a uniform random time between 0 and the backoff, so
            that many clients failing together do not retry together.
        max_retry_after: the longest Retry-After ``retry_call`` honours, seconds (None:
            any). A server's Retry-After is honoured even above ``max_delay`` (retrying
            sooner only earns another 429); above this limit the error is re-raised at
            once instead of sleeping that long.

    Example:
        >>> policy = RetryPolicy(base_delay=0.5, jitter=False)
        >>> [policy.delay(n, None) for n in (1, 2, 3)]
        [0.5, 1.0, 2.0]
        >>> RetryPolicy(max_attempts=0)
        Traceback (most recent call last):
        ...
        ValueError: max_attempts must be an int >= 1, got 0
    """

    max_attempts: int = 3
    base_delay: float = 0.25
    max_delay: float = 8.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float | None = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        check_amount("base_delay", self.base_delay)
        check_amount("max_delay", self.max_delay)
        if self.max_delay < self.base_delay:
            raise ValueError(
                f"max_delay must be >= base_delay ({self.base_delay!r}), got {self.max_delay!r}"
            )
        check_amount("multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be a finite number >= 1, got {self.multiplier!r}")
        if not isinstance(self.jitter, bool):
            raise TypeError(f"jitter must be a bool, got {self.jitter!r}")
        if self.max_retry_after is not None:
            check_amount("max_retry_after", self.max_retry_after)

    def backoff(self, attempt: int) -> float:
        """Un-jittered wait after failed attempt ``attempt``: base * multiplier^(n-1), capped."""
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise TypeError(f"attempt must be an int >= 1, got {attempt!r}")
        if attempt < 1:
            raise ValueError(f"attempt must be an int >= 1, got {attempt!r}")
        if self.base_delay == 0:
            return 0.0
        try:
            grown = self.base_delay * self.multiplier ** (attempt - 1)
        except OverflowError:  # attempt in the thousands: long past the cap anyway
            return float(self.max_delay)
        return float(min(self.max_delay, grown))

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        The backoff (jittered when ``jitter``), but at least the error's ``retry_after``
        when it carries one: so the result exceeds ``max_delay`` only when the server
        asked for a longer wait.
        """
        wait = self.backoff(attempt)
        if self.jitter and wait > 0:
            wait = random.uniform(0.0, wait)
        asked = _retry_after(error)
        return wait if asked is None else max(wait, asked)


def _check_call(
    fn: Any, policy: Any, model: Any, collector: Any, deadline: Any, sleep: Any, on_retry: Any
) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be a callable taking no arguments, got {fn!r}")
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"policy must be a RetryPolicy, got {type(policy).__name__} {policy!r}")
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__} {model!r}")
    if not model:
        raise ValueError("model must not be empty")
    if collector is not None and not isinstance(collector, MetricsCollector):
        raise TypeError(f"collector must be a MetricsCollector or None, got {collector!r}")
    if deadline is not None and not isinstance(deadline, Deadline):
        raise TypeError(f"deadline must be a Deadline or None, got {deadline!r}")
    if not callable(sleep):
        raise TypeError(f"sleep must be callable, got {sleep!r}")
    if on_retry is not None and not callable(on_retry):
        raise TypeError(f"on_retry must be callable or None, got {on_retry!r}")


def _next_wait(
    error: BaseException,
    attempt: int,
    policy: RetryPolicy,
    model: str,
    collector: MetricsCollector | None,
    deadline: Deadline | None,
    on_retry: OnRetry | None,
) -> float | None:
    """Seconds to sleep before attempt ``attempt + 1``; None to re-raise ``error`` now."""
    if attempt >= policy.max_attempts or not is_retryable(error):
        return None
    asked = _retry_after(error)
    if asked is not None and policy.max_retry_after is not None and asked > policy.max_retry_after:
        _logger.debug("not retrying: Retry-After is longer than max_retry_after", model=model,
                      retry_after=asked, max_retry_after=policy.max_retry_after)
        return None
    wait = policy.delay(attempt, error)
    remaining = None if deadline is None else deadline.remaining()
    # Waiting up to the very deadline would leave no time for the attempt itself.
    if remaining is not None and wait >= remaining:
        _logger.debug("not retrying: the wait would pass the deadline", model=model,
                      delay=wait, remaining=remaining)
        return None
    (collector or get_metrics_collector()).increment_retry_count(model)
    _logger.debug("retrying model call", model=model, attempt=attempt,
                  max_attempts=policy.max_attempts, delay=wait,
                  error_type=classify_error(error), error=type(error).__name__)
    if on_retry is not None:
        on_retry(attempt, error, wait)
    return wait


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    model: str,
    collector: MetricsCollector | None = None,
    deadline: Deadline | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn()``; on a retryable error sleep and call again, up to ``policy.max_attempts``.

    Args:
        fn: the call, taking no arguments (wrap others with ``functools.partial`` or a lambda).
        policy: attempts and backoff.
        model: the ``model`` label retries are counted under.
        collector: where to count; default the process-wide collector.
        deadline: never sleep past it: when the next wait would reach it, the last error
            is re-raised at once.
        sleep: how to wait (inject a recorder in tests).
        on_retry: ``on_retry(attempt, error, delay)`` before each retry's wait.

    Returns:
        What ``fn`` returned.

    Raises:
        The last error, unchanged, when it is not retryable, when the attempts are used
        up, when Retry-After asks for more than ``policy.max_retry_after`` or when the
        wait would pass ``deadline``. Exceptions that are not ``Exception`` subclasses
        (``KeyboardInterrupt``, ``asyncio.CancelledError``) are never caught.

    Example:
        >>> retry_call(lambda: 42, RetryPolicy(), model="m")
        42
    """
    _check_call(fn, policy, model, collector, deadline, sleep, on_retry)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as error:
            wait = _next_wait(error, attempt, policy, model, collector, deadline, on_retry)
            if wait is None:
                raise
        # Slept outside the except block, so the next attempt's error does not chain
        # this one as its __context__.
        sleep(wait)


async def aretry_call(
    afn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    model: str,
    collector: MetricsCollector | None = None,
    deadline: Deadline | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> T:
    """``retry_call`` for coroutines: ``await afn()``, waiting with ``await sleep(delay)``.

    Example:
        >>> async def answer() -> int:
        ...     return 42
        >>> asyncio.run(aretry_call(answer, RetryPolicy(), model="m"))
        42
    """
    _check_call(afn, policy, model, collector, deadline, sleep, on_retry)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await afn()
        except Exception as error:
            wait = _next_wait(error, attempt, policy, model, collector, deadline, on_retry)
            if wait is None:
                raise
        await sleep(wait)
