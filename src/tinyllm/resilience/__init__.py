"""Resilience for model clients: circuit breaker, retries with backoff, rate limiter, timeouts.

Each primitive is a small object that takes its collaborators (collector, clock, sleep)
as arguments, so clients compose them and tests drive them with fake time:

* ``CircuitBreaker`` / ``get_circuit_breaker``: fail fast while a backend is down.
* ``RetryPolicy`` / ``retry_call`` / ``aretry_call``: try again on errors that may pass.
* ``RateLimiter`` / ``get_rate_limiter``: a token bucket per model.
* ``Timeouts`` / ``Deadline``: connect, read, whole-request and token-gap limits.

Example:
    >>> from tinyllm.resilience import (
    ...     RateLimiter, RetryPolicy, Timeouts, get_circuit_breaker, retry_call)
    >>> breaker = get_circuit_breaker("ollama")
    >>> limiter = RateLimiter(5.0, model="llama3")
    >>> deadline = Timeouts(total=60.0).total_deadline()
    >>> def attempt() -> str:
    ...     limiter.acquire(timeout=deadline.remaining())
    ...     return breaker.call(lambda: "4")     # the backend call goes here
    >>> retry_call(attempt, RetryPolicy(), model="llama3", deadline=deadline)
    '4'

See docs/resilience.md for the defaults, which errors count and retry, and the metrics.
"""

from tinyllm.resilience.breaker import (
    BREAKER_FAILURE_TYPES,
    CircuitBreaker,
    counts_as_failure,
    get_circuit_breaker,
    reset_circuit_breakers,
)
from tinyllm.resilience.ratelimit import RateLimiter, get_rate_limiter, reset_rate_limiters
from tinyllm.resilience.retry import (
    RETRYABLE_ERROR_TYPES,
    OnRetry,
    RetryPolicy,
    aretry_call,
    is_retryable,
    retry_call,
)
from tinyllm.resilience.timeouts import Clock, Deadline, Timeouts

__all__ = [
    "BREAKER_FAILURE_TYPES",
    "RETRYABLE_ERROR_TYPES",
    "CircuitBreaker",
    "Clock",
    "Deadline",
    "OnRetry",
    "RateLimiter",
    "RetryPolicy",
    "Timeouts",
    "aretry_call",
    "counts_as_failure",
    "get_circuit_breaker",
    "get_rate_limiter",
    "is_retryable",
    "reset_circuit_breakers",
    "reset_rate_limiters",
    "retry_call",
]
