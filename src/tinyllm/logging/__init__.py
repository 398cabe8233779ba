"""Structured logging on structlog: JSON or console, trace ids, redaction, sampling.

Example:
    >>> from tinyllm.logging import configure_logging, get_logger, bind_context
    >>> configure_logging(log_level="INFO", log_format="json")
    >>> logger = get_logger(__name__, component="executor")
    >>> bind_context(request_id="req-123")
    >>> logger.info("task_started", task_id="abc123")  # doctest: +SKIP
    {"logger":"...","component":"executor","request_id":"req-123","task_id":"abc123",...}

Every line, from tinyllm's loggers and from stdlib ``logging`` (uvicorn, httpx, ...) alike,
goes through one chain: bound context, sampling (when configured), exception text,
redaction (:mod:`tinyllm.redaction`), level, timestamp, ``app``/``version``, the current
OpenTelemetry span's ``trace_id``/``span_id``, then the renderer. Output goes to stderr
or a file, never stdout.
"""

from tinyllm.logging._config import (
    LOG_FORMATS,
    LOG_LEVELS,
    capture_logs,
    configure_log_sampling,
    configure_logging,
    get_logger,
    get_logging_state,
    reset_logging,
)
from tinyllm.logging._context import bind_context, clear_context, unbind_context
from tinyllm.logging._lifecycle import RequestLogObserver
from tinyllm.logging._request import RequestLogger, get_request_logger

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "RequestLogObserver",
    "RequestLogger",
    "bind_context",
    "capture_logs",
    "clear_context",
    "configure_log_sampling",
    "configure_logging",
    "get_logger",
    "get_logging_state",
    "get_request_logger",
    "reset_logging",
    "unbind_context",
]
