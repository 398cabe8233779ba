"""Structured events: the pillar for things that *happened* (audit trails, business facts).

An event is a typed record — category, severity, a dotted ``event_type``, a message and
a data dict — dispatched to every handler of the process-wide ``EventEmitter``. By
default those are ``LogEventHandler`` (one structured log line through
``tinyllm.logging``) and ``MetricEventHandler`` (``tinyllm_events_total{category,
severity}``). Add your own by subclassing ``EventHandler``.

Example:
    >>> from tinyllm.events import EventCategory, EventSeverity, emit_event
    >>> event = emit_event(
    ...     "node.execution.completed",
    ...     category=EventCategory.EXECUTION,
    ...     severity="info",                       # the enums or their names
    ...     message="Node execution completed successfully",
    ...     data={"node_id": "entry", "api_key": "sk-abc"},
    ... )
    >>> event.category, event.data["api_key"] != "sk-abc"
    (<EventCategory.EXECUTION: 'execution'>, True)

Rules the module keeps:

* **Redacted once, at the source.** ``data`` and ``message`` go through
  ``tinyllm.redaction`` (the one policy logs also use) before any handler sees them,
  so a handler that ships events elsewhere cannot leak a secret the log would have
  hidden.
* **Trace correlation for free.** Emitted inside an OpenTelemetry span, an event takes
  the span's trace and span ids unless ``trace_id`` is given.
* **A handler never breaks the caller.** Handlers run in order on the caller's thread;
  one that raises is skipped, counted in ``tinyllm_event_handler_errors_total{handler}``
  and logged once, and the remaining handlers still get the event. Handlers must not
  block: one that ships events over the network should queue them and send from a
  thread of its own.
"""

from __future__ import annotations

import logging
import threading
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from random import getrandbits as _getrandbits
from typing import Any, TypeVar

from opentelemetry import trace as _otel_trace

from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector
from tinyllm.redaction import redact, redact_text

__all__ = [
    "BufferedEventHandler",
    "Event",
    "EventCategory",
    "EventEmitter",
    "EventHandler",
    "EventSeverity",
    "LogEventHandler",
    "MetricEventHandler",
    "RequestErrorObserver",
    "emit_error_event",
    "emit_event",
    "get_event_emitter",
    "reset_event_emitter",
]

_DEFAULT_BUFFER_SIZE = 1000


class EventCategory(StrEnum):
    """What part of the system an event is about. Values are the lowercase names."""

    SYSTEM = "system"
    EXECUTION = "execution"
    MODEL = "model"
    CACHE = "cache"
    SECURITY = "security"
    PERFORMANCE = "performance"
    USER = "user"
    INTEGRATION = "integration"
    DATA = "data"


class EventSeverity(StrEnum):
    """How much an event matters; the same five levels as logging."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


#: The stdlib logging level of each severity.
_LOG_LEVELS: dict[EventSeverity, int] = {
    EventSeverity.DEBUG: logging.DEBUG,
    EventSeverity.INFO: logging.INFO,
    EventSeverity.WARNING: logging.WARNING,
    EventSeverity.ERROR: logging.ERROR,
    EventSeverity.CRITICAL: logging.CRITICAL,
}

_E = TypeVar("_E", bound=Enum)


def _lookup(enum: type[_E]) -> dict[str, _E]:
    return {member.name.lower(): member for member in enum}


_CATEGORIES = _lookup(EventCategory)
_SEVERITIES = _lookup(EventSeverity)


def _coerce(value: Any, table: dict[str, _E], argument: str) -> _E:
    """``value`` as a member of the enum behind ``table``; its name in any case works too."""
    if isinstance(value, str):
        # The members are StrEnums whose values are their lowercase names, so one
        # table serves the member itself, "info", "INFO" and "Info".
        found = table.get(value.lower())
        if found is not None:
            return found
    raise ValueError(f"{argument}={value!r} is not valid; valid: {', '.join(table)}")


def _parse_category(value: EventCategory | str) -> EventCategory:
    """``value`` as an ``EventCategory``; ValueError listing the valid ones otherwise.

    Example:
        >>> _parse_category("Execution")
        <EventCategory.EXECUTION: 'execution'>
    """
    if type(value) is EventCategory:
        return value
    return _coerce(value, _CATEGORIES, "category")


def _parse_severity(value: EventSeverity | str) -> EventSeverity:
    """``value`` as an ``EventSeverity``; ValueError listing the valid ones otherwise.

    Example:
        >>> _parse_severity("WARNING")
        <EventSeverity.WARNING: 'warning'>
    """
    if type(value) is EventSeverity:
        return value
    return _coerce(value, _SEVERITIES, "severity")


def _new_id() -> str:
    # 128 random bits as 32 hex digits, like a uuid4's hex but without its os.urandom
    # call (2.8 µs against 0.45 µs here). Ids need to be unique, not unguessable, and
    # the random module reseeds itself in a forked child (OpenTelemetry makes its trace
    # ids the same way).
    return format(_getrandbits(128), "032x")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Event:
    """One structured event. Build them with ``emit_event``; handlers receive them.

    ``category`` and ``severity`` given as strings are turned into the enums (ValueError
    for unknown ones). ``trace_id``/``span_id`` are lowercase hex (32 and 16 digits) as
    OpenTelemetry prints them. Handlers must treat an event as read-only: the same
    object goes to every handler.

    Example:
        >>> e = Event("cache.miss", EventCategory.CACHE, EventSeverity.DEBUG, "miss")
        >>> sorted(e.to_dict())[:4]
        ['category', 'data', 'event_id', 'event_type']
    """

    event_type: str
    category: EventCategory
    severity: EventSeverity
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    trace_id: str | None = None
    span_id: str | None = None
    event_id: str = field(default_factory=_new_id)
    timestamp: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        # Exact type checks first: the common case (the enums themselves) costs nothing.
        if type(self.category) is not EventCategory:
            self.category = _parse_category(self.category)
        if type(self.severity) is not EventSeverity:
            self.severity = _parse_severity(self.severity)

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-friendly values (enums as strings, ISO-8601 UTC time).

        ``data`` values are as given (after redaction); serialise with
        ``json.dumps(..., default=str)`` if they may hold non-JSON types.
        """
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "category": self.category.value,
            "severity": self.severity.value,
            "message": self.message,
            "timestamp": self.timestamp.isoformat(),
            "data": dict(self.data),
            "tags": list(self.tags),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }


# -- handlers ---------------------------------------------------------------------------


class EventHandler(ABC):
    """Base class of event sinks: implement ``handle``.

    ``handle`` runs on the emitting thread, so it must not block. If it raises, the
    emitter counts and logs the failure and carries on with the other handlers.

    Example:
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


# -- the emitter ------------------------------------------------------------------------


class EventEmitter:
    """Dispatches events to its handlers, in the order they were added.

    Args:
        handlers: the initial handlers (default none).
        enabled: when False, ``emit`` does nothing.

    ``handlers`` is a plain list (read it freely; change it through ``add_handler``
    and ``remove_handler``). A handler that raises is counted in
    ``tinyllm_event_handler_errors_total{handler=<class name>}``, logged the first
    time, and skipped; the others and the caller carry on.

    Example:
        >>> buffer = BufferedEventHandler()
        >>> emitter = EventEmitter([buffer])
        >>> emitter.emit(Event("demo", EventCategory.USER, EventSeverity.INFO, "hi"))
        >>> len(buffer)
        1
    """

    def __init__(
        self, handlers: Iterable[EventHandler] | None = None, *, enabled: bool = True
    ) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {enabled!r}")
        self.handlers: list[EventHandler] = []
        self._enabled = enabled
        self._lock = threading.Lock()
        # ids of registered handlers that have already failed once: later failures of
        # the same handler are counted but not logged, so a broken sink cannot flood
        # the logs at the event rate.
        self._reported: set[int] = set()
        for handler in handlers or ():
            self.add_handler(handler)

    @property
    def enabled(self) -> bool:
        """Whether ``emit`` dispatches events."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"enabled must be a bool, got {value!r}")
        self._enabled = value

    def add_handler(self, handler: EventHandler) -> None:
        """Append ``handler``; it receives every event emitted from now on."""
        if not callable(getattr(handler, "handle", None)):
            raise TypeError(
                f"handler must be an EventHandler (an object with a handle(event) method), "
                f"got {handler!r}"
            )
        with self._lock:
            self.handlers.append(handler)

    def remove_handler(self, handler: EventHandler) -> None:
        """Remove ``handler``; ValueError if it was not added."""
        with self._lock:
            try:
                self.handlers.remove(handler)
            except ValueError:
                raise ValueError(f"handler {handler!r} is not registered") from None
            self._reported.discard(id(handler))

    def emit(self, event: Event) -> None:
        """Give ``event`` to every handler; never raises because of a handler."""
        if not self._enabled:
            return
        if not isinstance(event, Event):
            raise TypeError(f"event must be an Event, got {event!r}")
        # A snapshot, so a handler may add or remove handlers without breaking the loop.
        for handler in tuple(self.handlers):
            try:
                handler.handle(event)
            except Exception as exc:
                self._handler_failed(handler, exc)

    def _handler_failed(self, handler: EventHandler, exc: Exception) -> None:
        name = type(handler).__name__
        try:
            get_metrics_collector().increment_event_handler_errors(name)
            if id(handler) in self._reported:
                return
            self._reported.add(id(handler))
            from tinyllm.logging import get_logger

            get_logger("tinyllm.events").warning(
                "event handler raised; the event still reached the other handlers "
                "(further failures of this handler are counted, not logged)",
                handler=name,
                error_type=type(exc).__name__,
                error=str(exc),
            )
        except Exception:
            return  # reporting a failure must not break the caller either


_default: EventEmitter | None = None
_default_lock = threading.Lock()


def get_event_emitter() -> EventEmitter:
    """The process-wide emitter, created with ``LogEventHandler`` and ``MetricEventHandler``.

    Example:
        >>> get_event_emitter() is get_event_emitter()
        True
    """
    found = _default
    if found is not None:
        return found
    return _make_default()


def _make_default() -> EventEmitter:
    global _default
    with _default_lock:
        if _default is None:
            _default = EventEmitter([LogEventHandler(), MetricEventHandler()])
        return _default


def reset_event_emitter() -> None:
    """Forget the process-wide emitter; the next ``get_event_emitter()`` builds a fresh one.

    A test seam: handlers added to the old emitter no longer receive events.
    """
    global _default
    with _default_lock:
        _default = None


# -- emitting ---------------------------------------------------------------------------


def _check_str(value: Any, argument: str, *, empty_ok: bool = True) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__}: {value!r}")
    if not empty_ok and not value:
        raise ValueError(f"{argument} must not be empty")
    return value


def _redacted_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    if data is None:
        return {}
    if type(data) is dict and not data:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping (dict) or None, got {type(data).__name__}")
    # redact() walks any Mapping and returns a new dict: the caller's data is untouched.
    redacted: dict[str, Any] = redact(data)
    return redacted


def _tags(tags: Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    # Exact type checks first: an ABC isinstance() costs more than the rest of this.
    if type(tags) is not list and type(tags) is not tuple and (
        # A bare string is iterable too; taking it as a list of letters would be a
        # silent bug.
        isinstance(tags, str | bytes) or not isinstance(tags, Iterable)
    ):
        raise TypeError(f"tags must be a list of str or None, got {tags!r}")
    out = list(tags)
    for tag in out:
        if type(tag) is not str and not isinstance(tag, str):
            raise TypeError(f"tags must be a list of str, got an item {tag!r}")
    return out


def _span_ids(trace_id: str | None) -> tuple[str | None, str | None]:
    """The (trace_id, span_id) an event gets from the current span, if there is one."""
    ctx = _otel_trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return trace_id, None
    current = format(ctx.trace_id, "032x")
    if trace_id is None or trace_id.lower() == current:
        return current, format(ctx.span_id, "016x")
    # An explicit trace id from another trace: the current span is not this event's.
    return trace_id, None


def emit_event(
    event_type: str,
    category: EventCategory | str,
    severity: EventSeverity | str,
    message: str,
    data: Mapping[str, Any] | None = None,
    tags: Iterable[str] | None = None,
    trace_id: str | None = None,
) -> Event:
    """Build an event and give it to the process-wide emitter's handlers.

    Args:
        event_type: dotted name of what happened, e.g. ``"node.execution.completed"``.
        category: an ``EventCategory`` or its name (any case).
        severity: an ``EventSeverity`` or its name (any case).
        message: one human sentence (secret-looking text in it is redacted).
        data: details; a redacted copy is stored (secrets become ``[REDACTED]``).
        tags: free-form labels.
        trace_id: 32 hex digits; default the current OpenTelemetry span's.

    Returns:
        The event, as the handlers saw it.

    Raises:
        ValueError: an unknown category or severity (the message lists the valid ones),
            or an empty ``event_type``.
        TypeError: an argument of the wrong type.

    Example:
        >>> e = emit_event("cache.miss", "cache", "debug", "key not cached", tags=["lru"])
        >>> e.category.value, e.tags
        ('cache', ['lru'])
    """
    event = Event(
        _check_str(event_type, "event_type", empty_ok=False),
        _parse_category(category),
        _parse_severity(severity),
        redact_text(_check_str(message, "message")),
        _redacted_data(data),
        _tags(tags),
        *_span_ids(None if trace_id is None else _check_str(trace_id, "trace_id")),
    )
    get_event_emitter().emit(event)
    return event


def emit_error_event(
    message: str,
    error: BaseException,
    category: EventCategory | str = EventCategory.SYSTEM,
    data: Mapping[str, Any] | None = None,
) -> Event:
    """Emit an ``ERROR`` event describing ``error``.

    The event's type is ``"error"``; its data is ``data`` plus ``error_type`` (the
    exception's class name), ``error_message`` and ``traceback`` (formatted, empty
    when the exception was never raised), all redacted.

    Example:
        >>> try:
        ...     raise TimeoutError("model did not answer")
        ... except TimeoutError as exc:
        ...     e = emit_error_event("Generation failed", exc, category="model")
        >>> e.severity.value, e.data["error_type"]
        ('error', 'TimeoutError')
    """
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception, got {type(error).__name__}: {error!r}")
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping (dict) or None, got {type(data).__name__}")
    details: dict[str, Any] = dict(data or {})
    details["error_type"] = type(error).__name__
    try:
        details["error_message"] = str(error)
    except Exception:  # a broken __str__ must not turn reporting into a second failure
        details["error_message"] = f"<unprintable {type(error).__name__}>"
    details["traceback"] = (
        "".join(traceback.format_exception(error)) if error.__traceback__ is not None else ""
    )
    return emit_event("error", category, EventSeverity.ERROR, message, details)


class RequestErrorObserver:
    """A lifecycle observer that emits an ``llm.request.failed`` event (category
    ``model``, severity error) for each failed LLM request: model, graph, provider,
    request type and the classified ``error_kind`` beside the exception's class name,
    correlated with the request's trace.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.lifecycle import RequestLifecycle
        >>> from tinyllm.metrics import MetricsCollector
        >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
        >>> lc.add_observer(RequestErrorObserver())
        >>> buffer = BufferedEventHandler()
        >>> get_event_emitter().add_handler(buffer)
        >>> try:
        ...     with lc.start("m"):
        ...         raise TimeoutError("no answer")
        ... except TimeoutError:
        ...     pass
        >>> buffer.get_events()[-1].data["error_kind"]
        'timeout'
        >>> get_event_emitter().remove_handler(buffer)
    """

    __slots__ = ()

    def on_start(self, request: Any) -> None:
        """Nothing to do: only failures become events."""

    def on_end(self, request: Any) -> None:
        """Emit the event when the request failed."""
        error = request.error
        if error is None:
            return
        try:
            text = str(error)
        except Exception:  # a broken __str__ must not turn reporting into a second failure
            text = f"<unprintable {type(error).__name__}>"
        # No traceback: a classified backend failure is an outcome, not a bug in the
        # caller, and its stack would bury the message (the span keeps the stack).
        emit_event(
            "llm.request.failed", EventCategory.MODEL, EventSeverity.ERROR,
            f"LLM request to {request.model} failed ({request.error_type})",
            {"model": request.model, "graph": request.graph,
             "provider": request.provider or "tinyllm", "request_type": request.request_type,
             "error_kind": request.error_type, "error_type": type(error).__name__,
             "error_message": text,
             "duration_ms": round((request.duration or 0.0) * 1000, 3)},
            trace_id=request.trace_id,
        )
