"""tinyllm's exception tree and the one place that classifies foreign errors.

::

    TinyLLMError
    ├── MetricsServerError       the metrics server could not start (e.g. port in use)
    └── ModelError               a model backend failed (error_type says how)
        └── CircuitOpenError     the backend's circuit breaker is open: failed fast

``classify_error`` turns any exception (ours, the standard library's, an HTTP
library's, a CUDA runtime's) into one of a small, closed set of ``error_type`` label
values, so that alert rules can enumerate them and metric cardinality stays bounded.
The exception's class name still goes to logs and spans, where cardinality is free.

Example:
    >>> classify_error(TimeoutError("read timed out"))
    'timeout'
    >>> classify_error(MemoryError())
    'oom'
"""

from __future__ import annotations

import asyncio

__all__ = [
    "ERROR_TYPES",
    "CircuitOpenError",
    "MetricsServerError",
    "ModelError",
    "TinyLLMError",
    "classify_error",
]

#: The values ``classify_error`` can return.
ERROR_TYPES = (
    "oom",
    "cuda",
    "timeout",
    "connection",
    "rate_limited",
    "server_error",
    "bad_request",
    "circuit_open",
    "cancelled",
    "unknown",
)


class TinyLLMError(Exception):
    """Root of every exception tinyllm raises on purpose."""


class MetricsServerError(TinyLLMError, OSError):
    """The metrics server could not start; the message names the address and port."""


class ModelError(TinyLLMError):
    """A model backend failed. ``error_type`` is one of ``ERROR_TYPES``.

    ``status_code`` is the backend's HTTP status where there was one, and
    ``retry_after`` the seconds it asked us to wait (a 429's or 503's ``Retry-After``).

    Example:
        >>> err = ModelError("busy", error_type="rate_limited", status_code=429, retry_after=2.0)
        >>> classify_error(err), err.retry_after
        ('rate_limited', 2.0)
    """

    error_type = "unknown"

    def __init__(
        self, message: str, *, error_type: str | None = None,
        status_code: int | None = None, retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if error_type is not None:
            if error_type not in ERROR_TYPES:
                raise ValueError(f"error_type={error_type!r}; valid: {', '.join(ERROR_TYPES)}")
            self.error_type = error_type
        self.status_code = status_code
        self.retry_after = retry_after


class CircuitOpenError(ModelError):
    """Raised without calling the backend while its circuit breaker is open."""

    error_type = "circuit_open"


def _status_code(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        code = getattr(holder, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def classify_error(exc: BaseException) -> str:
    """Map an exception to one of ``ERROR_TYPES`` (never raises)."""
    explicit = getattr(exc, "error_type", None)
    if isinstance(explicit, str) and explicit in ERROR_TYPES:
        return explicit
    if isinstance(exc, MemoryError):
        return "oom"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timeout"
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
        return "cancelled"
    name = type(exc).__name__.lower()
    try:
        text = str(exc)[:300].lower()
    except Exception:  # a broken __str__ must not break accounting
        text = ""
    if "outofmemory" in name or "out of memory" in text or name == "oom":
        return "oom"
    if "cuda" in name or "cuda" in text or "cublas" in text:
        return "cuda"
    if "timeout" in name or "timed out" in text:
        return "timeout"
    code = _status_code(exc)
    if code is not None:
        if code == 429:
            return "rate_limited"
        if code >= 500:
            return "server_error"
        if code >= 400:
            return "bad_request"
    if isinstance(exc, ConnectionError) or "connect" in name:
        return "connection"
    if "ratelimit" in name:
        return "rate_limited"
    return "unknown"
