"""The built-in event handlers, and ``EventHandler``, the base class of your own."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from tinyllm.events._model import (
    Event,
    EventCategory,
    EventSeverity,
    _parse_category,
    _parse_severity,
)
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector

__all__ = ["BufferedEventHandler", "EventHandler", "LogEventHandler", "MetricEventHandler"]

_DEFAULT_BUFFER_SIZE = 1000

#: The stdlib logging level of each severity.
_LOG_LEVELS: dict[EventSeverity, int] = {
    EventSeverity.DEBUG: logging.DEBUG,
    EventSeverity.INFO: logging.INFO,
    EventSeverity.WARNING: logging.WARNING,
    EventSeverity.ERROR: logging.ERROR,
    EventSeverity.CRITICAL: logging.CRITICAL,
}



class EventHandler(ABC):
    """Base class of event sinks: implement ``handle``.

    ``handle`` runs on the emitting thread, so it must not block. If it raises, the
    emitter counts and logs the failure and carries on with the other handlers.

    Example:
        >>> from tinyllm.events import EventEmitter
        >>> class PrintHandler(EventHandler):
        ...     def handle(self, event: Event) -> None:
        ...         print(event.event_type)
        >>> emitter = EventEmitter([PrintHandler()])
        >>> emitter.emit(Event("demo", "system", "info", "hello"))
        demo
    """

    @abstractmethod
    def handle(self, event: Event) -> None:
        """Deliver ``event`` somewhere."""


class LogEventHandler(EventHandler):
    """Writes each event as one structured log line at the event's severity.

    The line goes through ``tinyllm.logging.get_logger("tinyllm.events")``, so it gets
    the configured format, sampling and trace correlation. The log message is the
    event's message; ``event_type``, ``category``, ``event_id``, ``data``, ``tags``
    and the trace ids are fields. Events below the configured log level are not
    written (they are still counted by ``MetricEventHandler``).

    Example:
        >>> from tinyllm.events import EventEmitter
        >>> emitter = EventEmitter([LogEventHandler()])
    """

    __slots__ = ("_logger",)

    def __init__(self, logger_name: str = "tinyllm.events") -> None:
        from tinyllm.logging import get_logger

        self._logger = get_logger(logger_name)

    def handle(self, event: Event) -> None:
        severity = event.severity
        # Below the level the line would be dropped anyway; asking first skips building
        # its fields (a third of the cost of a filtered event).
        if not self._logger.is_enabled_for(_LOG_LEVELS[severity]):
            return
        fields: dict[str, Any] = {
            "event_type": event.event_type,
            "category": event.category.value,
            "event_id": event.event_id,
        }
        if event.data:
            fields["data"] = event.data
        if event.tags:
            fields["tags"] = event.tags
        # Inside a span the log pipeline sets these itself (to the same values); outside
        # one they carry an explicitly given trace id into the line.
        if event.trace_id is not None:
            fields["trace_id"] = event.trace_id
            if event.span_id is not None:
                fields["span_id"] = event.span_id
        getattr(self._logger, severity.value)(event.message, **fields)


class MetricEventHandler(EventHandler):
    """Counts each event in ``tinyllm_events_total{category,severity}``.

    Args:
        collector: where to count; default the process-wide collector, looked up per
            event so that ``reset_metrics_collector()`` in tests is followed.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.metrics import MetricsCollector
        >>> handler = MetricEventHandler(MetricsCollector(registry=CollectorRegistry()))
    """

    __slots__ = ("_collector",)

    def __init__(self, collector: MetricsCollector | None = None) -> None:
        if collector is not None and not isinstance(collector, MetricsCollector):
            raise TypeError(f"collector must be a MetricsCollector or None, got {collector!r}")
        self._collector = collector

    def handle(self, event: Event) -> None:
        collector = self._collector or get_metrics_collector()
        collector.increment_events(event.category.value, event.severity.value)


class BufferedEventHandler(EventHandler):
    """Keeps the most recent ``max_size`` events in memory (a ring buffer).

    Useful in tests, and behind debug endpoints. When full, the oldest event is
    dropped to make room.

    Example:
        >>> buffer = BufferedEventHandler(max_size=2)
        >>> for n in range(3):
        ...     buffer.handle(Event(f"e{n}", "system", "info", "m"))
        >>> [e.event_type for e in buffer.get_events()]   # oldest first, newest last
        ['e1', 'e2']
    """

    __slots__ = ("_events", "_lock", "max_size")

    def __init__(self, max_size: int = _DEFAULT_BUFFER_SIZE) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int):
            raise TypeError(f"max_size must be an int, got {max_size!r}")
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._events: deque[Event] = deque(maxlen=max_size)
        # deque.append is atomic, but copying a deque while another thread appends
        # raises "deque mutated during iteration"; the lock makes get_events safe.
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def get_events(
        self,
        category: EventCategory | str | None = None,
        severity: EventSeverity | str | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Buffered events, oldest first (newest last), optionally filtered.

        Args:
            category: keep only this category (enum or name).
            severity: keep only this exact severity (enum or name).
            limit: keep only the ``limit`` most recent matches (still oldest first).
        """
        wanted_category = None if category is None else _parse_category(category)
        wanted_severity = None if severity is None else _parse_severity(severity)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"limit must be an int or None, got {limit!r}")
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            events = list(self._events)
        if wanted_category is not None:
            events = [e for e in events if e.category is wanted_category]
        if wanted_severity is not None:
            events = [e for e in events if e.severity is wanted_severity]
        if limit is not None:
            events = events[len(events) - limit:] if limit else []
        return events

    def clear(self) -> None:
        """Forget every buffered event."""
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        return len(self._events)

