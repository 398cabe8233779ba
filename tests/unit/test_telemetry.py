"""tinyllm.telemetry: spans, traced, sampling, redaction, GenAI spans/metrics, exemplars.

Spans are observed through the public test seam: ``configure_telemetry(...,
span_processors=[SimpleSpanProcessor(InMemorySpanExporter())])`` (and an
``InMemoryMetricReader`` for metrics), with ``exporter="none"`` so nothing leaves the
process. Real OTLP on the wire is tests/integration/test_otlp.py.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

import tinyllm.telemetry as telemetry
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.redaction import reset_redaction
from tinyllm.telemetry import (
    TelemetryConfig,
    check_exporter,
    configure_telemetry,
    get_current_span_id,
    get_current_trace_id,
    get_telemetry_state,
    is_telemetry_enabled,
    record_span_event,
    set_span_attribute,
    set_span_error,
    shutdown_telemetry,
    trace_span,
    traced,
)

_OTEL_VARS = (
    "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "TINYLLM_CAPTURE_CONTENT",
)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    reset_redaction()
    shutdown_telemetry()
    yield
    shutdown_telemetry()
    reset_redaction()


@pytest.fixture
def lifecycle(collector: MetricsCollector) -> RequestLifecycle:
    return RequestLifecycle(collector)


@pytest.fixture
def spans(lifecycle: RequestLifecycle) -> Callable[..., InMemorySpanExporter]:
    """``spans(**config)``: tracing on (exporter none) into an in-memory exporter."""

    def start(**kwargs: Any) -> InMemorySpanExporter:
        exporter = InMemorySpanExporter()
        kwargs.setdefault("exporter", "none")
        configure_telemetry(TelemetryConfig(enable_tracing=True, **kwargs),
                            span_processors=[SimpleSpanProcessor(exporter)],
                            lifecycle=lifecycle)
        return exporter

    return start


def named(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


# -- the facade ---------------------------------------------------------------------------
def test_all_is_sorted_and_complete() -> None:
    mod = importlib.import_module("tinyllm.telemetry")
    key = lambda n: (0, n) if n.isupper() else ((1, n) if n[0].isupper() else (2, n))  # noqa: E731
    assert mod.__all__ == sorted(mod.__all__, key=key)
    public = {n for n in vars(mod) if not n.startswith("_")
              and not isinstance(getattr(mod, n), type(importlib))}
    assert public == set(mod.__all__)


# -- configuration --------------------------------------------------------------------------
def test_config_defaults() -> None:
    c = TelemetryConfig()
    assert (c.enable_tracing, c.service_name, c.exporter, c.sampling_rate) == (
        False, "tinyllm", "console", 1.0)
    assert c.otlp_endpoint is None and c.otlp_protocol is None and not c.enable_metrics


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"sampling_rate": 1.5}, ValueError, "sampling_rate.*0.0 to 1.0"),
    ({"sampling_rate": -0.1}, ValueError, "sampling_rate"),
    ({"sampling_rate": float("nan")}, ValueError, "sampling_rate"),
    ({"sampling_rate": True}, TypeError, "sampling_rate"),
    ({"exporter": "jaeger"}, ValueError, "exporter='jaeger'.*console, otlp, none"),
    ({"exporter": "otlp", "otlp_protocol": "http/json"}, ValueError,
     "otlp_protocol.*grpc, http/protobuf"),
    ({"otlp_endpoint": "ftp://x:1"}, ValueError, "otlp_endpoint"),
    ({"otlp_endpoint": 4317}, TypeError, "otlp_endpoint"),
    ({"otlp_headers": "novalue"}, ValueError, "otlp_headers.*key=value"),
    ({"otlp_headers": {"k": 1}}, TypeError, "otlp_headers"),
    ({"service_name": ""}, ValueError, "service_name"),
    ({"enable_tracing": "yes"}, TypeError, "enable_tracing"),
    ({"export_timeout": 0}, ValueError, "export_timeout"),
])
def test_bad_config_names_the_argument_and_valid_values(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        TelemetryConfig(**kwargs)


def test_environment_fills_what_the_arguments_leave_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret,x-team=llm")
    c = TelemetryConfig(enable_tracing=True)
    assert (c.service_name, c.sampling_rate, c.exporter) == ("svc", 0.25, "otlp")
    assert (c.otlp_endpoint, c.otlp_protocol) == ("http://collector:4317", "grpc")
    assert c.otlp_headers == {"api-key": "s3cret", "x-team": "llm"}
    assert "s3cret" not in repr(c)
    # an argument beats the environment
    c = TelemetryConfig(service_name="mine", sampling_rate=1.0, exporter="console")
    assert (c.service_name, c.sampling_rate, c.exporter, c.otlp_endpoint) == (
        "mine", 1.0, "console", None)


def test_http_protocol_is_chosen_and_paths_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    c = TelemetryConfig(otlp_endpoint="http://c:4318")
    assert (c.otlp_protocol, c.otlp_endpoint) == ("http/protobuf", "http://c:4318/v1/traces")
    assert c._resolved.metrics_endpoint == "http://c:4318/v1/metrics"
    c = TelemetryConfig(otlp_endpoint="https://c:9999/v1/traces")
    assert (c.otlp_protocol, c.otlp_endpoint) == ("http/protobuf", "https://c:9999/v1/traces")
    c = TelemetryConfig(otlp_endpoint="c:5555", otlp_protocol="http/protobuf")
    assert c.otlp_endpoint == "http://c:5555/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:7777")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    c = TelemetryConfig()
    assert (c.exporter, c.otlp_endpoint) == ("otlp", "http://c:7777/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom")
    assert TelemetryConfig().otlp_endpoint == "http://t:1/custom"  # used as is
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='thrift'"):
        TelemetryConfig()


def test_bad_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "lots")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        TelemetryConfig()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "2")
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG"):
        TelemetryConfig()


def test_configure_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="TelemetryConfig"):
        configure_telemetry({"enable_tracing": True})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="span_processors"):
        configure_telemetry(TelemetryConfig(enable_tracing=True),
                            span_processors=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="enable_tracing is False"):
        configure_telemetry(TelemetryConfig(),
                            span_processors=[SimpleSpanProcessor(InMemorySpanExporter())])
    with pytest.raises(ValueError, match="timeout"):
        shutdown_telemetry(timeout=-1)


# -- tracing off ----------------------------------------------------------------------------
def test_tracing_off_is_a_no_op_that_still_yields_a_span() -> None:
    assert not is_telemetry_enabled()
    with trace_span("operation", attributes={"a": 1}) as span:
        assert span is INVALID_SPAN
        assert span.get_span_context().trace_id == 0
        assert get_current_trace_id() is None and get_current_span_id() is None
        record_span_event("e", {"k": "v"})
        set_span_attribute("k", "v")
        set_span_error(ValueError("x"))
    with pytest.raises(KeyError), trace_span("failing"):
        raise KeyError("propagates")
    # the same object every time: nothing is allocated per call
    assert trace_span("a") is trace_span("b")


def test_bad_arguments_raise_even_with_tracing_off() -> None:
    with pytest.raises(TypeError, match="name"):
        trace_span(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="attributes"):
        trace_span("x", attributes=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        set_span_attribute("", 1)
    with pytest.raises(TypeError, match="exc"):
        set_span_error("boom")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        traced(name=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name"):
        record_span_event(None)  # type: ignore[arg-type]


def test_traced_functions_run_unchanged_with_tracing_off() -> None:
    @traced
    def f(x: int) -> int:
        return x + 1

    @traced()
    async def a(x: int) -> int:
        return x * 2

    @traced("gen")
    def g() -> Iterator[int]:
        got = yield 1
        yield got

    @traced()
    async def ag() -> AsyncIterator[int]:
        got = yield 1
        yield got

    async def drive_async_gen() -> list[int]:
        it = ag()
        return [await it.__anext__(), await it.asend(5)]

    gen = g()
    assert (f(1), asyncio.run(a(2)), next(gen), gen.send(7)) == (2, 4, 1, 7)
    assert asyncio.run(drive_async_gen()) == [1, 5]
    assert f.__name__ == "f"


# -- spans ----------------------------------------------------------------------------------
def test_spans_nest_with_attributes_events_and_ids(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans(service_name="svc")
    assert is_telemetry_enabled()
    with trace_span("outer", attributes={"node_id": "entry", "n": 3, "tags": ["a", "b"]}) as o:
        trace_id = o.get_span_context().trace_id
        assert get_current_trace_id() == format(trace_id, "032x")
        assert get_current_span_id() == format(o.get_span_context().span_id, "016x")
        with trace_span("inner"):
            set_span_attribute("user_id", "user-123")
            record_span_event("cache_miss", attributes={"cache_key": "abc"})
    assert get_current_trace_id() is None  # the context is restored
    got = named(exporter)
    outer, inner = got["outer"], got["inner"]
    assert outer.resource.attributes["service.name"] == "svc"
    assert dict(outer.attributes or {}) == {"node_id": "entry", "n": 3, "tags": ("a", "b")}
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert inner.context.trace_id == trace_id
    assert inner.attributes == {"user_id": "user-123"}
    assert [(e.name, dict(e.attributes or {})) for e in inner.events] == [
        ("cache_miss", {"cache_key": "abc"})]


def test_errors_set_status_and_an_exception_event(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans()
    with pytest.raises(RuntimeError), trace_span("leaves"):
        raise RuntimeError("went wrong")
    with trace_span("handled"):
        try:
            raise ValueError("bad input")
        except ValueError as e:
            set_span_error(e)
    got = named(exporter)
    for name, kind in (("leaves", "RuntimeError"), ("handled", "ValueError")):
        span = got[name]
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == kind
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes is not None and event.attributes["exception.type"] == kind
    assert got["leaves"].status.description == "RuntimeError: went wrong"


def test_span_attributes_events_and_errors_are_redacted(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans()
    with pytest.raises(PermissionError), trace_span(
        "call", attributes={"api_key": "sk-abcdef123456", "url": "https://u:pw@host/x",
                            "prompt": "my secret question", "nested": {"password": "p"}}
    ):
        set_span_attribute("authorization", "Bearer abc.def")
        set_span_attribute("note", "token=xyz")
        record_span_event("sent", {"headers": {"Authorization": "Bearer t0k"}})
        raise PermissionError("rejected key sk-abcdef123456")
    span = named(exporter)["call"]
    attrs = dict(span.attributes or {})
    assert attrs["api_key"] == "[REDACTED]"
    assert attrs["url"] == "https://u:[REDACTED]@host/x"
    assert attrs["prompt"] == "[NOT CAPTURED: 18 chars]"
    assert "'password': '[REDACTED]'" in attrs["nested"]
    assert attrs["authorization"] == "[REDACTED]"
    assert attrs["note"] == "token=[REDACTED]"
    sent, exc = span.events
    assert "t0k" not in str(sent.attributes)
    assert exc.attributes is not None
    assert "sk-abcdef123456" not in str(exc.attributes["exception.message"])
    assert "sk-abcdef123456" not in str(exc.attributes["exception.stacktrace"])
    assert "sk-abcdef123456" not in str(span.status.description)


def test_content_is_kept_when_the_policy_captures_it(
    spans: Callable[..., InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TINYLLM_CAPTURE_CONTENT", "true")
    reset_redaction()
    exporter = spans()
    with trace_span("call", attributes={"prompt": "hello"}):
        pass
    assert named(exporter)["call"].attributes == {"prompt": "hello"}


# -- traced -----------------------------------------------------------------------------------
def test_traced_covers_the_four_function_kinds(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans()
    seen: dict[str, str | None] = {}

    @traced(attributes={"component": "executor"})
    def sync_fn() -> int:
        seen["sync"] = get_current_span_id()
        return 1

    @traced("async_fn")
    async def async_fn() -> int:
        await asyncio.sleep(0)
        seen["async"] = get_current_span_id()
        return 2

    @traced("gen")
    def gen() -> Iterator[int]:
        seen["gen"] = get_current_span_id()
        yield 1
        with trace_span("in_gen"):
            pass
        yield 2

    @traced("agen")
    async def agen() -> AsyncIterator[int]:
        seen["agen"] = get_current_span_id()
        yield 1
        await asyncio.sleep(0)
        with trace_span("in_agen"):
            pass
        yield 2

    async def consume() -> list[int]:
        out = []
        async for item in agen():
            seen["between_async"] = get_current_span_id()
            out.append(item)
        return out

    with trace_span("root") as root:
        assert sync_fn() == 1
        assert asyncio.run(async_fn()) == 2
        consumed = []
        for item in gen():
            # the generator's span is not current in the consumer's code
            seen["between"] = get_current_span_id()
            consumed.append(item)
        assert consumed == [1, 2]
        assert asyncio.run(consume()) == [1, 2]
    got = named(exporter)
    root_id = root.get_span_context().span_id
    assert seen["between"] == format(root_id, "016x")
    # the default name is the function's qualified name
    sync_span = got["test_traced_covers_the_four_function_kinds.<locals>.sync_fn"]
    for key, span in (("sync", sync_span), ("async", got["async_fn"]), ("gen", got["gen"]),
                      ("agen", got["agen"])):
        assert seen[key] == format(span.context.span_id, "016x"), key
    # asyncio.run's task inherits the root span, and agen's span does not leak into it
    assert seen["between_async"] == format(root_id, "016x")
    assert sync_span.attributes is not None
    assert sync_span.attributes["component"] == "executor"
    assert str(sync_span.attributes["code.function.name"]).endswith(".sync_fn")
    assert sync_span.parent is not None and sync_span.parent.span_id == root_id
    assert got["in_gen"].parent is not None
    assert got["in_gen"].parent.span_id == got["gen"].context.span_id
    assert got["in_agen"].parent is not None
    assert got["in_agen"].parent.span_id == got["agen"].context.span_id
    assert got["gen"].parent is not None and got["gen"].parent.span_id == root_id


def test_traced_records_errors_of_every_kind(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans()

    @traced("f")
    def f() -> None:
        raise ValueError("f")

    @traced("a")
    async def a() -> None:
        raise ValueError("a")

    @traced("g")
    def g() -> Iterator[int]:
        yield 1
        raise ValueError("g")

    @traced("ag")
    async def ag() -> AsyncIterator[int]:
        yield 1
        raise ValueError("ag")

    async def drain() -> None:
        async for _ in ag():
            pass

    with pytest.raises(ValueError, match="f"):
        f()
    with pytest.raises(ValueError, match="a"):
        asyncio.run(a())
    with pytest.raises(ValueError, match="g"):
        list(g())
    with pytest.raises(ValueError, match="ag"):
        asyncio.run(drain())
    got = named(exporter)
    assert {n: s.status.status_code for n, s in got.items()} == dict.fromkeys(
        ("f", "a", "g", "ag"), StatusCode.ERROR)


def test_traced_generators_forward_send_throw_and_close(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans()
    closed = []

    @traced("echo")
    def echo() -> Iterator[Any]:
        try:
            received = yield "ready"
            while True:
                try:
                    received = yield received * 2
                except KeyError:
                    received = yield "caught"
        finally:
            closed.append(True)

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send(4) == 8
    assert gen.throw(KeyError("k")) == "caught"
    gen.close()
    assert closed == [True]
    span = named(exporter)["echo"]
    assert span.status.status_code is StatusCode.UNSET  # closing early is not an error

    @traced("stream")
    async def stream() -> AsyncIterator[int]:
        for i in range(10):
            yield i

    async def take_two() -> list[int]:
        it = stream()
        out = [await it.__anext__(), await it.__anext__()]
        await it.aclose()  # type: ignore[attr-defined]
        return out

    assert asyncio.run(take_two()) == [0, 1]
    assert named(exporter)["stream"].end_time is not None


def test_traced_generators_still_work_under_track_token_generation(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    from tinyllm.metrics import track_token_generation

    spans()

    @track_token_generation(model="m")
    @traced("tokens")
    def tokens() -> Iterator[str]:
        yield from ["a", "b"]

    assert list(tokens()) == ["a", "b"]


# -- sampling ---------------------------------------------------------------------------------
def test_ratio_zero_drops_whole_traces(spans: Callable[..., InMemorySpanExporter]) -> None:
    exporter = spans(sampling_rate=0.0)
    with trace_span("root") as root, trace_span("child"):
        assert not root.is_recording()
        # the trace id still exists (propagation), it is just not recorded
        assert get_current_trace_id() is not None
    assert exporter.get_finished_spans() == ()


def test_sampling_is_parent_based(spans: Callable[..., InMemorySpanExporter]) -> None:
    exporter = spans(sampling_rate=0.0)
    remote = SpanContext(trace_id=0x1234, span_id=0x99, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with otel_trace.use_span(NonRecordingSpan(remote)), trace_span("continued"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0x1234  # a sampled parent is followed, rate 0 or not


@settings(max_examples=12, deadline=None)
@given(rate=st.floats(min_value=0.0, max_value=1.0))
def test_every_trace_is_kept_or_dropped_whole(rate: float) -> None:
    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none",
                                        sampling_rate=rate),
                        span_processors=[SimpleSpanProcessor(exporter)])
    try:
        for _ in range(40):
            with trace_span("root"), trace_span("a"), trace_span("b"):
                pass
        per_trace: dict[int, int] = {}
        for s in exporter.get_finished_spans():
            per_trace[s.context.trace_id] = per_trace.get(s.context.trace_id, 0) + 1
        assert set(per_trace.values()) <= {3}
        if rate == 1.0:
            assert len(per_trace) == 40
        if rate == 0.0:
            assert per_trace == {}
    finally:
        shutdown_telemetry()


def test_about_the_configured_fraction_is_kept(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    exporter = spans(sampling_rate=0.5)
    for _ in range(400):
        with trace_span("root"):
            pass
    kept = len(exporter.get_finished_spans())
    assert 120 < kept < 280  # binomial(400, 0.5): far outside 6 sigma otherwise


# -- GenAI spans for lifecycle requests ------------------------------------------------------
def test_a_lifecycle_request_opens_a_genai_client_span(
    spans: Callable[..., InMemorySpanExporter], lifecycle: RequestLifecycle,
) -> None:
    exporter = spans()
    with trace_span("app") as app:
        with lifecycle.start("gemma3", "g", "chat", provider="ollama") as req:
            # the request's span is current inside its block: logs and child spans correlate
            assert get_current_span_id() == format(req.span.get_span_context().span_id,
                                                   "016x")
            with trace_span("tool"):
                pass
            req.token()
            req.token(9)
            req.usage(input_tokens=21)
            req.set_finish_reasons("stop")
        assert get_current_span_id() == format(app.get_span_context().span_id, "016x")
    got = named(exporter)
    span = got["chat gemma3"]
    assert span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == app.get_span_context().span_id
    assert got["tool"].parent is not None
    assert got["tool"].parent.span_id == span.context.span_id
    attrs = dict(span.attributes or {})
    ttft = attrs.pop("gen_ai.response.time_to_first_chunk")
    assert req.ttft is not None and ttft == pytest.approx(req.ttft)
    assert attrs == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gemma3",
        "gen_ai.provider.name": "ollama", "gen_ai.system": "ollama",
        "tinyllm.graph": "g", "tinyllm.request_type": "chat",
        "gen_ai.usage.input_tokens": 21, "gen_ai.usage.output_tokens": 10,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.cost": 0.0,  # an Ollama model runs locally: free unless priced
    }
    assert span.status.status_code is StatusCode.UNSET
    assert req.trace_id == format(span.context.trace_id, "032x")


@pytest.mark.parametrize(("request_type", "operation"), [
    ("generate", "text_completion"), ("chat", "chat"), ("stream", "text_completion"),
    ("embed", "embeddings"), ("rerank", "rerank"),
])
def test_request_types_map_to_genai_operation_names(
    spans: Callable[..., InMemorySpanExporter], lifecycle: RequestLifecycle,
    request_type: str, operation: str,
) -> None:
    exporter = spans()
    with lifecycle.start("m", request_type=request_type):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.name == f"{operation} m"
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == operation
    assert span.attributes["gen_ai.provider.name"] == "tinyllm"
    assert span.attributes.get("tinyllm.stream") is (True if request_type == "stream" else None)


def test_a_failed_request_has_error_type_and_status_error(
    spans: Callable[..., InMemorySpanExporter], lifecycle: RequestLifecycle,
) -> None:
    exporter = spans()
    with pytest.raises(ConnectionRefusedError), lifecycle.start("m"):
        raise ConnectionRefusedError("no backend")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ConnectionRefusedError"
    assert span.attributes["tinyllm.error_type"] == "connection"
    assert [e.name for e in span.events] == ["exception"]


def test_generator_requests_never_leak_their_span_into_the_consumer(
    default_collector: MetricsCollector,
) -> None:
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.metrics import track_token_generation

    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)])
    assert get_lifecycle().observers  # observes the process-wide lifecycle by default

    @track_token_generation(model="m")
    def stream() -> Iterator[str]:
        yield from "abc"

    for _ in stream():
        assert get_current_span_id() is None
    (span,) = exporter.get_finished_spans()
    assert span.name == "text_completion m"
    assert span.attributes is not None and span.attributes["gen_ai.usage.output_tokens"] == 3


# -- exemplars -------------------------------------------------------------------------------
def _exemplar_lines(registry: CollectorRegistry) -> dict[str, str]:
    text = openmetrics_latest(registry).decode()
    out = {}
    for line in text.splitlines():
        if " # {" in line:
            out[line.split("{", 1)[0]] = line.split(" # ", 1)[1]
    return out


def test_latency_and_ttft_histograms_carry_the_trace_id_as_exemplar(
    spans: Callable[..., InMemorySpanExporter], lifecycle: RequestLifecycle,
    registry: CollectorRegistry,
) -> None:
    spans()
    with lifecycle.start("m") as req:
        req.token()
    trace_id = req.trace_id
    assert trace_id is not None and len(trace_id) == 32
    lines = _exemplar_lines(registry)
    for family in ("tinyllm_request_latency_seconds_bucket",
                   "tinyllm_inference_request_duration_seconds_bucket",
                   "tinyllm_inference_ttft_seconds_bucket"):
        assert lines[family].startswith(f'{{trace_id="{trace_id}"}} '), family


def test_no_exemplar_without_tracing_or_for_dropped_traces(
    spans: Callable[..., InMemorySpanExporter], lifecycle: RequestLifecycle,
    registry: CollectorRegistry,
) -> None:
    with lifecycle.start("m") as req:
        req.token()
    assert req.exemplar is None and req.span is None
    spans(sampling_rate=0.0)
    with lifecycle.start("m") as req:
        req.token()
    assert req.span is not None and req.exemplar is None and req.trace_id is None
    assert _exemplar_lines(registry) == {}


# -- GenAI metrics -------------------------------------------------------------------------------
def test_genai_metrics_follow_the_conventions(lifecycle: RequestLifecycle) -> None:
    reader = InMemoryMetricReader()
    configure_telemetry(TelemetryConfig(enable_metrics=True, exporter="none"),
                        metric_readers=[reader], lifecycle=lifecycle)
    assert not is_telemetry_enabled()  # metrics only: no spans
    with lifecycle.start("gemma3", request_type="stream") as req:
        req.token()
        req.token(4)
        req.usage(input_tokens=8)
    with pytest.raises(TimeoutError), lifecycle.start("gemma3", request_type="stream"):
        raise TimeoutError
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
               for m in sm.metrics}
    assert set(metrics) == {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
                            "gen_ai.server.time_to_first_token",
                            "gen_ai.server.time_per_output_token"}
    from tinyllm.telemetry._genai import TOKEN_BUCKETS, TTFT_BUCKETS

    duration_points = list(metrics["gen_ai.client.operation.duration"].data.data_points)
    assert sorted(str(p.attributes.get("error.type")) for p in duration_points) == [
        "None", "TimeoutError"]
    for p in duration_points:
        assert p.attributes["gen_ai.operation.name"] == "text_completion"
        assert p.attributes["gen_ai.provider.name"] == "tinyllm"
        assert p.attributes["gen_ai.request.model"] == "gemma3"
    usage = {p.attributes["gen_ai.token.type"]: (p.sum, tuple(p.explicit_bounds))
             for p in metrics["gen_ai.client.token.usage"].data.data_points}
    assert usage == {"input": (8, TOKEN_BUCKETS), "output": (5, TOKEN_BUCKETS)}
    (ttft,) = metrics["gen_ai.server.time_to_first_token"].data.data_points
    assert ttft.count == 1 and tuple(ttft.explicit_bounds) == TTFT_BUCKETS
    (tpot,) = metrics["gen_ai.server.time_per_output_token"].data.data_points
    assert tpot.count == 1


def test_attribute_names_match_the_semantic_conventions_package() -> None:
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as g
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as m

    assert {g.GEN_AI_OPERATION_NAME, g.GEN_AI_REQUEST_MODEL, g.GEN_AI_PROVIDER_NAME,
            g.GEN_AI_USAGE_INPUT_TOKENS, g.GEN_AI_USAGE_OUTPUT_TOKENS, g.GEN_AI_TOKEN_TYPE,
            g.GEN_AI_RESPONSE_FINISH_REASONS, g.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            g.GEN_AI_SYSTEM, g.GEN_AI_REQUEST_STREAM} == {
        "gen_ai.operation.name", "gen_ai.request.model", "gen_ai.provider.name",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.token.type",
        "gen_ai.response.finish_reasons", "gen_ai.response.time_to_first_chunk",
        "gen_ai.system", "gen_ai.request.stream"}
    assert {m.GEN_AI_CLIENT_OPERATION_DURATION, m.GEN_AI_CLIENT_TOKEN_USAGE,
            m.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, m.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN} == {
        "gen_ai.client.operation.duration", "gen_ai.client.token.usage",
        "gen_ai.server.time_to_first_token", "gen_ai.server.time_per_output_token"}


# -- lifecycle of the configuration ------------------------------------------------------------
def test_reconfiguring_replaces_the_previous_setup_cleanly(lifecycle: RequestLifecycle) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(first)], lifecycle=lifecycle)
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none",
                                        service_name="two"),
                        span_processors=[SimpleSpanProcessor(second)], lifecycle=lifecycle)
    assert len(lifecycle.observers) == 1
    with lifecycle.start("m"):
        pass
    assert first.get_finished_spans() == ()
    (span,) = second.get_finished_spans()
    assert span.resource.attributes["service.name"] == "two"
    assert shutdown_telemetry()
    assert lifecycle.observers == [] and lifecycle._activate_span is None
    assert not is_telemetry_enabled()
    with lifecycle.start("m") as req:
        pass
    assert req.span is None
    configure_telemetry(TelemetryConfig())  # tracing off again: still fine
    assert get_telemetry_state()["enabled"] is False


def test_a_missing_otlp_extra_names_it_and_leaves_telemetry_off(
    monkeypatch: pytest.MonkeyPatch, lifecycle: RequestLifecycle,
) -> None:
    import sys

    # enable_metrics: the trace side is built first, then the metric exporter fails
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
                        None)
    with pytest.raises(ImportError, match=r"pip install 'tinyllm\[otlp\]'"):
        configure_telemetry(TelemetryConfig(enable_tracing=True, enable_metrics=True,
                                            exporter="otlp"), lifecycle=lifecycle)
    assert not is_telemetry_enabled()
    assert lifecycle.observers == [] and lifecycle._activate_span is None
    assert get_telemetry_state()["enabled"] is False


def test_a_span_opened_before_shutdown_ends_quietly(
    spans: Callable[..., InMemorySpanExporter],
) -> None:
    spans()
    cm = trace_span("late")
    shutdown_telemetry()
    with cm as span:  # telemetry went away between trace_span() and `with`
        assert span is INVALID_SPAN


def test_state_for_debug_inspect(spans: Callable[..., InMemorySpanExporter]) -> None:
    keys = {"enabled", "exporter", "endpoint", "protocol", "sampling_rate", "service_name",
            "metrics_enabled", "spans_exported", "export_failures"}
    off = get_telemetry_state()
    assert keys <= set(off) and off["enabled"] is False
    spans(sampling_rate=0.2, service_name="svc")
    on = get_telemetry_state()
    assert (on["enabled"], on["exporter"], on["sampling_rate"], on["service_name"]) == (
        True, "none", 0.2, "svc")


def test_otlp_state_hides_header_values() -> None:
    configure_telemetry(TelemetryConfig(
        enable_tracing=True, exporter="otlp", otlp_endpoint="http://127.0.0.1:1",
        otlp_headers={"authorization": "Bearer s3cret"}))
    state = get_telemetry_state()
    assert (state["endpoint"], state["protocol"]) == ("http://127.0.0.1:1", "grpc")
    assert "s3cret" not in repr(state)


def test_check_exporter_opens_a_tcp_connection() -> None:
    assert check_exporter() == (True, "not configured")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{port}"))
        ok, detail = check_exporter(timeout=1)
        assert ok and f"127.0.0.1:{port}" in detail and "grpc" in detail
    ok, detail = check_exporter(timeout=0.5)  # the listener is gone
    assert not ok and "unreachable" in detail
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="console"))
    assert check_exporter() == (True, "not configured")
    with pytest.raises(ValueError, match="timeout"):
        check_exporter(timeout=0)


def test_console_exporter_writes_to_stderr_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="console"))
    with trace_span("printed"):
        pass
    shutdown_telemetry()
    out, err = capsys.readouterr()
    assert out == "" and '"name": "printed"' in err


def test_a_failing_exporter_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture, default_collector: MetricsCollector,
) -> None:
    from tinyllm.telemetry._export import (
        _CountingSpanExporter,
        _FailureCounter,
        _OtelLogCapture,
        _Stats,
    )

    class Down(SpanExporter):
        def __init__(self) -> None:
            self.calls = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.calls += 1
            if self.calls == 2:
                raise OSError("socket closed")
            return SpanExportResult.FAILURE

    stats = _Stats()
    wrapped = _CountingSpanExporter(
        Down(), _FailureCounter("otlp", "traces", "http://c:4317", stats, _OtelLogCapture()),
        stats)
    caplog.set_level(logging.WARNING, logger="tinyllm.telemetry")
    for _ in range(3):
        assert wrapped.export([]) is SpanExportResult.FAILURE  # never raises
    assert stats.export_failures == 3
    assert default_collector.registry.get_sample_value(
        "tinyllm_telemetry_export_failures_total",
        {"exporter": "otlp", "signal": "traces"}) == 3
    assert len([r for r in caplog.records if r.name == "tinyllm.telemetry"]) == 1


def test_the_seeds_correlation_example_works_as_written() -> None:
    # seed 003: `with trace_span("operation") as span: span.get_span_context().trace_id`
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"))
    with trace_span("operation") as span:
        trace_id = span.get_span_context().trace_id
        assert format(trace_id, "032x") == get_current_trace_id()
    assert telemetry.is_telemetry_enabled()


def test_inference_context_makes_its_request_span_current(
    default_collector: MetricsCollector,
) -> None:
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.metrics import InferenceContext
    from tinyllm.telemetry import get_current_trace_id

    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)],
                        lifecycle=get_lifecycle(default_collector))
    with InferenceContext(model="gpt4") as ctx:
        inside = get_current_trace_id()
        ctx.set_token_count(1)
    assert get_current_trace_id() is None
    (span,) = exporter.get_finished_spans()
    assert inside == format(span.context.trace_id, "032x")
