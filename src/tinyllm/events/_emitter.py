"""The emitter: ``EventEmitter``, the process-wide one, and ``emit_event``, which builds
an event (redacted, correlated with the current span) and hands it to that emitter."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace as _otel_trace

from tinyllm.events._handlers import EventHandler, LogEventHandler, MetricEventHandler
from tinyllm.events._model import (
    Event,
    EventCategory,
    EventSeverity,
    _parse_category,
    _parse_severity,
)
from tinyllm.metrics.collector import get_metrics_collector
from tinyllm.redaction import get_redaction_policy, redact_text

__all__ = [
    "EventEmitter", "emit_error_event", "emit_event", "get_event_emitter", "reset_event_emitter",
]


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
        >>> from tinyllm.events import BufferedEventHandler
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
    # The walk returns a new dict: the caller's data is untouched. Objects other than
    # containers and plain values become their redacted text, as in log lines: a handler
    # that serialises them (json.dumps(default=str)) would otherwise print what their
    # str() holds, secrets included (an exception, a request object).
    redacted: dict[str, Any] = get_redaction_policy()._redact_event(data)
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
    return [redact_text(tag) for tag in out]


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
