"""Events: the seed's model, its handlers, trace correlation, redaction, failure isolation."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry

from tinyllm.events import (
    BufferedEventHandler,
    Event,
    EventCategory,
    EventEmitter,
    EventHandler,
    EventSeverity,
    LogEventHandler,
    MetricEventHandler,
    emit_error_event,
    emit_event,
    get_event_emitter,
    reset_event_emitter,
)
from tinyllm.logging import capture_logs, configure_logging, reset_logging
from tinyllm.metrics import MetricsCollector

CATEGORIES = ["system", "execution", "model", "cache", "security", "performance", "user",
              "integration", "data"]
SEVERITIES = ["debug", "info", "warning", "error", "critical"]


@pytest.fixture(autouse=True)
def fresh_emitter(default_collector: MetricsCollector) -> Iterator[None]:
    """A fresh process-wide emitter (and collector) per test."""
    reset_event_emitter()
    yield
    reset_event_emitter()


@pytest.fixture
def buffer() -> BufferedEventHandler:
    """A buffer on the process-wide emitter."""
    handler = BufferedEventHandler()
    get_event_emitter().add_handler(handler)
    return handler


def events_total(category: str, severity: str) -> float:
    value = REGISTRY.get_sample_value(
        "tinyllm_events_total", {"category": category, "severity": severity}
    )
    return value or 0.0


def handler_errors(handler: str) -> float:
    value = REGISTRY.get_sample_value("tinyllm_event_handler_errors_total", {"handler": handler})
    return value or 0.0


def ev(event_type: str = "t", category: Any = "system", severity: Any = "info") -> Event:
    return Event(event_type, category, severity, "message")


# -- the model ------------------------------------------------------------------------


def test_categories_and_severities_are_the_seeds_lowercase_strings() -> None:
    assert [c.value for c in EventCategory] == CATEGORIES
    assert [s.value for s in EventSeverity] == SEVERITIES
    assert [c.name.lower() for c in EventCategory] == CATEGORIES
    assert EventCategory.CACHE == "cache" and isinstance(EventSeverity.INFO, str)


@pytest.mark.parametrize(
    ("category", "severity"),
    [("execution", "warning"), ("EXECUTION", "WARNING"), ("Execution", "Warning"),
     (EventCategory.EXECUTION, EventSeverity.WARNING)],
)
def test_category_and_severity_accept_enum_or_name_in_any_case(
    category: Any, severity: Any
) -> None:
    event = emit_event("x", category, severity, "m")
    assert event.category is EventCategory.EXECUTION
    assert event.severity is EventSeverity.WARNING
    built = ev(category=category, severity=severity)
    assert (built.category, built.severity) == (EventCategory.EXECUTION, EventSeverity.WARNING)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"category": "nope"}, ValueError,
         "category='nope' is not valid; valid: " + ", ".join(CATEGORIES)),
        ({"severity": "fatal"}, ValueError,
         "severity='fatal' is not valid; valid: " + ", ".join(SEVERITIES)),
        ({"category": 3}, ValueError, "category=3"),
        ({"event_type": ""}, ValueError, "event_type must not be empty"),
        ({"event_type": 5}, TypeError, "event_type must be a str"),
        ({"message": None}, TypeError, "message must be a str"),
        ({"data": [1, 2]}, TypeError, "data must be a mapping"),
        ({"tags": "oops"}, TypeError, "tags must be a list of str"),
        ({"tags": ["ok", 1]}, TypeError, "tags must be a list of str"),
        ({"trace_id": 123}, TypeError, "trace_id must be a str"),
    ],
)
def test_bad_arguments_raise_naming_the_argument_and_valid_values(
    kwargs: dict[str, Any], error: type[Exception], needle: str, buffer: BufferedEventHandler
) -> None:
    args: dict[str, Any] = {"event_type": "x", "category": "system", "severity": "info",
                            "message": "m", **kwargs}
    with pytest.raises(error) as info:
        emit_event(**args)
    assert needle in str(info.value)
    assert len(buffer) == 0  # nothing half-emitted


def test_event_to_dict_is_json_and_carries_every_field() -> None:
    event = emit_event("a.b", "data", "warning", "msg", data={"n": 1}, tags=["x"])
    d = event.to_dict()
    assert set(d) == {"event_id", "event_type", "category", "severity", "message", "timestamp",
                      "data", "tags", "trace_id", "span_id"}
    assert d["category"] == "data" and d["severity"] == "warning"
    assert d["data"] == {"n": 1} and d["tags"] == ["x"]
    assert d["timestamp"].endswith("+00:00")
    assert len(d["event_id"]) == 32
    json.dumps(d)
    assert emit_event("a", "data", "info", "m").event_id != event.event_id


# -- the emitter ----------------------------------------------------------------------


def test_default_emitter_is_shared_enabled_with_log_and_metric_handlers() -> None:
    emitter = get_event_emitter()
    assert emitter is get_event_emitter()
    assert emitter._enabled is True and emitter.enabled
    assert [type(h).__name__ for h in emitter.handlers] == ["LogEventHandler",
                                                           "MetricEventHandler"]
    reset_event_emitter()
    assert get_event_emitter() is not emitter


def test_handlers_run_in_order_and_can_be_removed() -> None:
    seen: list[str] = []

    class Named(EventHandler):
        def __init__(self, name: str) -> None:
            self.name = name

        def handle(self, event: Event) -> None:
            seen.append(self.name)

    a, b = Named("a"), Named("b")
    emitter = EventEmitter([a, b])
    emitter.emit(ev())
    emitter.remove_handler(a)
    emitter.emit(ev())
    assert seen == ["a", "b", "b"]
    with pytest.raises(ValueError, match="is not registered"):
        emitter.remove_handler(a)
    with pytest.raises(TypeError, match="handle"):
        emitter.add_handler(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Event"):
        emitter.emit({"not": "an event"})  # type: ignore[arg-type]


def test_handler_base_class_requires_handle() -> None:
    class Incomplete(EventHandler):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_disabled_emitter_dispatches_nothing_but_still_returns_the_event() -> None:
    buffer = BufferedEventHandler()
    emitter = get_event_emitter()
    emitter.add_handler(buffer)
    emitter.enabled = False
    event = emit_event("x", "system", "info", "m")
    assert isinstance(event, Event) and len(buffer) == 0
    assert events_total("system", "info") == 0
    emitter.enabled = True
    emit_event("x", "system", "info", "m")
    assert len(buffer) == 1
    with pytest.raises(TypeError, match="enabled must be a bool"):
        emitter.enabled = "yes"  # type: ignore[assignment]


def test_a_raising_handler_stops_neither_the_others_nor_the_caller() -> None:
    class Boom(EventHandler):
        def handle(self, event: Event) -> None:
            raise RuntimeError("sink down")

    before, after = BufferedEventHandler(), BufferedEventHandler()
    emitter = get_event_emitter()
    emitter.add_handler(before)
    emitter.add_handler(Boom())
    emitter.add_handler(after)
    for _ in range(3):
        emit_event("x", "execution", "info", "m")  # does not raise
    assert len(before) == 3 and len(after) == 3
    assert handler_errors("Boom") == 3
    assert events_total("execution", "info") == 3  # the metric handler ran too


def test_a_handler_may_remove_itself_while_handling() -> None:
    emitter = EventEmitter()
    buffer = BufferedEventHandler()

    class Once(EventHandler):
        def handle(self, event: Event) -> None:
            emitter.remove_handler(self)

    emitter.add_handler(Once())
    emitter.add_handler(buffer)
    emitter.emit(ev())
    emitter.emit(ev())
    assert len(buffer) == 2 and len(emitter.handlers) == 1


# -- handlers -------------------------------------------------------------------------


def test_metric_handler_counts_events_by_category_and_severity() -> None:
    emit_event("x", EventCategory.SECURITY, EventSeverity.CRITICAL, "m")
    emit_event("x", "security", "critical", "m")
    emit_event("x", "cache", "debug", "m")
    assert events_total("security", "critical") == 2
    assert events_total("cache", "debug") == 1


def test_metric_handler_with_its_own_collector(registry: CollectorRegistry) -> None:
    handler = MetricEventHandler(MetricsCollector(registry=registry))
    EventEmitter([handler]).emit(ev(category="model", severity="error"))
    assert registry.get_sample_value(
        "tinyllm_events_total", {"category": "model", "severity": "error"}) == 1
    with pytest.raises(TypeError, match="MetricsCollector"):
        MetricEventHandler(registry)  # type: ignore[arg-type]


def test_buffer_keeps_the_newest_events_oldest_first() -> None:
    buffer = BufferedEventHandler(max_size=3)
    emitter = EventEmitter([buffer])
    for n in range(5):
        emitter.emit(ev(f"e{n}"))
    assert [e.event_type for e in buffer.get_events()] == ["e2", "e3", "e4"]
    assert len(buffer) == 3 and buffer.max_size == 3
    buffer.clear()
    assert buffer.get_events() == []


def test_buffer_filters_by_category_exact_severity_and_limit() -> None:
    buffer = BufferedEventHandler()
    emitter = EventEmitter([buffer])
    specs = [("a", "execution", "error"), ("b", "execution", "info"), ("c", "model", "error"),
             ("d", "execution", "error"), ("e", "execution", "critical")]
    for name, category, severity in specs:
        emitter.emit(ev(name, category, severity))
    names = lambda events: [e.event_type for e in events]  # noqa: E731
    assert names(buffer.get_events(category=EventCategory.EXECUTION)) == ["a", "b", "d", "e"]
    assert names(buffer.get_events(severity="ERROR")) == ["a", "c", "d"]
    assert names(buffer.get_events(category="execution", severity="error")) == ["a", "d"]
    assert names(buffer.get_events(category="execution", severity="error", limit=1)) == ["d"]
    assert names(buffer.get_events(limit=2)) == ["d", "e"]
    assert buffer.get_events(limit=0) == []
    assert names(buffer.get_events(limit=100)) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"category": "bogus"}, ValueError, "valid: system"),
        ({"severity": "loud"}, ValueError, "valid: debug"),
        ({"limit": -1}, ValueError, "limit must be >= 0"),
        ({"limit": 1.5}, TypeError, "limit must be an int"),
    ],
)
def test_buffer_rejects_bad_filters(kwargs: dict[str, Any], error: type[Exception],
                                    needle: str) -> None:
    with pytest.raises(error, match=needle):
        BufferedEventHandler().get_events(**kwargs)


@pytest.mark.parametrize(("size", "error"), [(0, ValueError), (-5, ValueError),
                                             (2.0, TypeError), (True, TypeError)])
def test_buffer_size_must_be_a_positive_int(size: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_size"):
        BufferedEventHandler(max_size=size)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 8), count=st.integers(0, 30), limit=st.none() | st.integers(0, 10))
def test_buffer_is_a_ring_of_the_most_recent(size: int, count: int, limit: int | None) -> None:
    buffer = BufferedEventHandler(max_size=size)
    for n in range(count):
        buffer.handle(ev(str(n)))
    kept = [str(n) for n in range(count)][-size:] if count else []
    if limit is not None:
        kept = kept[len(kept) - limit:] if limit else []
    assert [e.event_type for e in buffer.get_events(limit=limit)] == kept


def test_buffer_is_safe_under_concurrent_emits() -> None:
    buffer = BufferedEventHandler(max_size=100_000)
    emitter = EventEmitter([buffer])

    def work() -> None:
        for _ in range(2000):
            emitter.emit(ev())
            buffer.get_events(limit=5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(buffer) == 8000


def test_log_handler_writes_one_line_at_the_events_severity() -> None:
    with capture_logs() as logs:
        event = emit_event("node.failed", "execution", "warning", "Node failed",
                           data={"node_id": "entry", "password": "hunter2"}, tags=["t"])
    (line,) = logs
    assert line["event"] == "Node failed" and line["level"] == "warning"
    assert line["logger"] == "tinyllm.events"
    assert line["event_type"] == "node.failed" and line["category"] == "execution"
    assert line["event_id"] == event.event_id and line["tags"] == ["t"]
    assert line["data"]["node_id"] == "entry" and line["data"]["password"] == "[REDACTED]"


@pytest.mark.parametrize("severity", SEVERITIES)
def test_log_handler_maps_every_severity_to_its_level(severity: str) -> None:
    configure_logging(log_level="debug")
    try:
        with capture_logs() as logs:
            emit_event("x", "system", severity, "m")
    finally:
        reset_logging()
    assert [line["level"] for line in logs] == [severity]


def test_log_handler_respects_the_log_level_but_the_metric_still_counts() -> None:
    with capture_logs() as logs:  # default level: info
        emit_event("x", "cache", "debug", "below the level")
    assert logs == []
    assert events_total("cache", "debug") == 1


def test_log_line_in_a_span_carries_the_events_trace_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    with capture_logs() as logs, tracer.start_as_current_span("s"):
        event = emit_event("x", "system", "info", "m")
    assert logs[0]["trace_id"] == event.trace_id and logs[0]["span_id"] == event.span_id
    with capture_logs() as logs:
        emit_event("x", "system", "info", "m", trace_id="cd" * 16)
    assert logs[0]["trace_id"] == "cd" * 16 and "span_id" not in logs[0]


def test_a_failing_handler_is_logged_once_and_counted_every_time() -> None:
    class Flaky(EventHandler):
        def handle(self, event: Event) -> None:
            raise ConnectionError("slack unreachable")

    flaky = Flaky()
    get_event_emitter().add_handler(flaky)
    with capture_logs() as logs:
        for _ in range(5):
            emit_event("x", "integration", "info", "m")
    failures = [line for line in logs if line.get("handler") == "Flaky"]
    assert len(failures) == 1
    assert failures[0]["level"] == "warning"
    assert failures[0]["error_type"] == "ConnectionError"
    assert "slack unreachable" in failures[0]["error"]
    assert handler_errors("Flaky") == 5
    # Removed and added again, it is a new registration: its next failure is logged.
    get_event_emitter().remove_handler(flaky)
    get_event_emitter().add_handler(flaky)
    with capture_logs() as logs:
        emit_event("x", "integration", "info", "m")
    assert len([line for line in logs if line.get("handler") == "Flaky"]) == 1


def test_a_broken_log_pipeline_does_not_reach_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    handler = get_event_emitter().handlers[0]
    assert isinstance(handler, LogEventHandler)
    monkeypatch.setattr(handler._logger, "info", broken)
    monkeypatch.setattr(handler._logger, "warning", broken)
    event = emit_event("x", "system", "info", "m")  # does not raise
    assert isinstance(event, Event)
    assert handler_errors("LogEventHandler") == 1
    assert events_total("system", "info") == 1


# -- trace correlation ----------------------------------------------------------------


def test_event_in_a_span_takes_its_trace_and_span_ids(buffer: BufferedEventHandler) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        ctx = span.get_span_context()
        event = emit_event("x", "execution", "info", "in a span")
    assert event.trace_id == format(ctx.trace_id, "032x")
    assert event.span_id == format(ctx.span_id, "016x")
    assert buffer.get_events()[-1].trace_id == event.trace_id
    outside = emit_event("x", "execution", "info", "no span")
    assert outside.trace_id is None and outside.span_id is None


def test_an_explicit_trace_id_wins(buffer: BufferedEventHandler) -> None:
    tracer = TracerProvider().get_tracer("test")
    other = "ab" * 16
    with tracer.start_as_current_span("s") as span:
        ctx = span.get_span_context()
        explicit = emit_event("x", "system", "info", "m", trace_id=other)
        same = emit_event("x", "system", "info", "m", trace_id=format(ctx.trace_id, "032x"))
    assert (explicit.trace_id, explicit.span_id) == (other, None)
    assert same.span_id == format(ctx.span_id, "016x")  # same trace: the span is known
    assert emit_event("x", "system", "info", "m", trace_id=other).trace_id == other


# -- redaction ------------------------------------------------------------------------


def test_event_data_is_redacted_before_any_handler_sees_it(buffer: BufferedEventHandler) -> None:
    secret = "sk-abcdefghijklmnopqrstuvwxyz123456"
    data = {"api_key": secret, "node_id": "entry", "nested": {"password": "hunter2"}}
    event = emit_event("x", "security", "warning", "m", data=data)
    assert event.data["node_id"] == "entry"
    assert event.data["api_key"] != secret
    assert event.data["nested"]["password"] != "hunter2"
    seen = json.dumps(buffer.get_events()[-1].to_dict())
    assert secret not in seen and "hunter2" not in seen
    assert data["api_key"] == secret  # the caller's dict is left alone


def test_secret_looking_text_in_the_message_is_redacted(buffer: BufferedEventHandler) -> None:
    secret = "sk-abcdefghijklmnopqrstuvwxyz123456"
    event = emit_event("x", "security", "warning", f"rejected key {secret} for user ann")
    assert secret not in event.message and event.message.startswith("rejected key ")
    assert event.message.endswith(" for user ann")
    assert buffer.get_events()[-1].message == event.message


def test_error_event_redacts_secrets_in_data(buffer: BufferedEventHandler) -> None:
    try:
        raise ValueError("upstream said: invalid api key sk-verysecret0123456789")
    except ValueError as exc:
        event = emit_error_event("failed", exc, data={"token": "hunter2"})
    dumped = json.dumps(event.to_dict())
    assert "sk-verysecret0123456789" not in dumped and "hunter2" not in dumped
    assert "invalid api key" in event.data["error_message"]
    assert "upstream said" in event.data["traceback"]


# -- error events ---------------------------------------------------------------------


def test_error_event_carries_type_message_and_traceback(buffer: BufferedEventHandler) -> None:
    def fail_deep() -> None:
        raise KeyError("missing node")

    try:
        fail_deep()
    except KeyError as exc:
        event = emit_error_event("Lookup failed", exc, category="execution",
                                 data={"node_id": "entry"})
    assert event.severity is EventSeverity.ERROR
    assert event.category is EventCategory.EXECUTION
    assert event.event_type == "error"
    assert event.data["node_id"] == "entry"
    assert event.data["error_type"] == "KeyError"
    assert event.data["error_message"] == "'missing node'"
    assert "fail_deep" in event.data["traceback"] and "Traceback" in event.data["traceback"]
    assert buffer.get_events(severity="error") == [event]
    assert events_total("execution", "error") == 1


def test_error_event_defaults_and_unraised_errors() -> None:
    event = emit_error_event("never raised", TimeoutError("t"))
    assert event.category is EventCategory.SYSTEM and event.data["traceback"] == ""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert "unprintable" in emit_error_event("m", Unprintable()).data["error_message"]
    with pytest.raises(TypeError, match="error must be an exception"):
        emit_error_event("m", "not an error")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a mapping"):
        emit_error_event("m", ValueError(), data=["x"])  # type: ignore[arg-type]


# -- seed 003, verbatim ---------------------------------------------------------------


def test_seed_emitting_events() -> None:
    from tinyllm.events import EventCategory, EventSeverity, emit_event

    buffer = BufferedEventHandler()
    get_event_emitter().add_handler(buffer)

    # Basic event
    emit_event(
        event_type="node.execution.completed",
        category=EventCategory.EXECUTION,
        severity=EventSeverity.INFO,
        message="Node execution completed successfully",
        data={"node_id": "entry", "duration_ms": 123},
        tags=["execution", "success"]
    )

    # Error event with exception
    from tinyllm.events import emit_error_event

    def risky_operation() -> None:
        raise RuntimeError("boom")

    try:
        risky_operation()
    except Exception as e:
        emit_error_event(
            message="Operation failed",
            error=e,
            category=EventCategory.EXECUTION,
            data={"node_id": "entry"}
        )

    first, second = buffer.get_events()
    assert first.data == {"node_id": "entry", "duration_ms": 123}
    assert first.tags == ["execution", "success"]
    assert second.data["error_type"] == "RuntimeError" and second.data["node_id"] == "entry"


def test_seed_event_handlers() -> None:
    # The seed's import list, plus Event and EventHandler, which its snippet uses unimported.
    from tinyllm.events import (
        BufferedEventHandler,
        Event,
        EventHandler,
        LogEventHandler,
        MetricEventHandler,
        get_event_emitter,
    )

    slack: list[Event] = []

    def send_to_slack(event: Event) -> None:
        slack.append(event)

    emitter = get_event_emitter()

    # Add custom handler
    class CustomEventHandler(EventHandler):
        def handle(self, event: Event):  # type: ignore[no-untyped-def]  # as the seed writes it
            # Send to external system
            send_to_slack(event)

    emitter.add_handler(CustomEventHandler())

    # Add buffered handler for testing
    buffer = BufferedEventHandler(max_size=1000)
    emitter.add_handler(buffer)

    emit_event("n.failed", EventCategory.EXECUTION, EventSeverity.ERROR, "failed")
    emit_event("n.ok", EventCategory.EXECUTION, EventSeverity.INFO, "ok")

    # Get buffered events
    events = buffer.get_events(
        category=EventCategory.EXECUTION,
        severity=EventSeverity.ERROR,
        limit=10
    )
    assert [e.event_type for e in events] == ["n.failed"]
    assert [e.event_type for e in slack] == ["n.failed", "n.ok"]
    assert all(isinstance(e, Event) for e in slack)
    assert {LogEventHandler, MetricEventHandler} <= {type(h) for h in emitter.handlers}


def test_seed_troubleshooting_events_not_being_recorded() -> None:
    from tinyllm.events import get_event_emitter
    emitter = get_event_emitter()
    assert emitter._enabled is True  # Should be True
    assert [h.__class__.__name__ for h in emitter.handlers] == [
        "LogEventHandler", "MetricEventHandler"]


def test_seed_best_practice_trace_id_on_events(buffer: BufferedEventHandler) -> None:
    tracer = TracerProvider().get_tracer("seed")
    with tracer.start_as_current_span("operation") as span:
        trace_id = span.get_span_context().trace_id

        # Add trace_id to events
        emit_event(
            "step.completed",
            category=EventCategory.EXECUTION,
            severity=EventSeverity.INFO,
            message="Step completed",
            trace_id=format(trace_id, "032x")
        )
    assert buffer.get_events()[-1].trace_id == format(trace_id, "032x")


def test_the_public_handlers_are_the_seeds() -> None:
    assert issubclass(LogEventHandler, EventHandler)
    assert issubclass(MetricEventHandler, EventHandler)
    assert issubclass(BufferedEventHandler, EventHandler)
