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

* **Redacted once, at the source.** ``data``, ``message`` and ``tags`` go through
  ``tinyllm.redaction`` (the one policy logs also use) before any handler sees them,
  so a handler that ships events elsewhere cannot leak a secret the log would have
  hidden; an object in ``data`` (an exception, say) becomes its redacted text.
* **Trace correlation for free.** Emitted inside an OpenTelemetry span, an event takes
  the span's trace and span ids unless ``trace_id`` is given.
* **A handler never breaks the caller.** Handlers run in order on the caller's thread;
  one that raises is skipped, counted in ``tinyllm_event_handler_errors_total{handler}``
  and logged once, and the remaining handlers still get the event. Handlers must not
  block: one that ships events over the network should queue them and send from a
  thread of its own.
"""

from tinyllm.events._emitter import (
    EventEmitter,
    emit_error_event,
    emit_event,
    get_event_emitter,
    reset_event_emitter,
)
from tinyllm.events._handlers import (
    BufferedEventHandler,
    EventHandler,
    LogEventHandler,
    MetricEventHandler,
)
from tinyllm.events._model import Event, EventCategory, EventSeverity
from tinyllm.events._observer import RequestErrorObserver

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
