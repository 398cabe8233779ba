"""Real OTLP on the wire: spans and GenAI metrics reach a gRPC or HTTP receiver.

The receivers (``otlp_receiver.py``) decode what arrived with opentelemetry-proto, so these
tests check the bytes a collector would see: service.name, span names, GenAI attributes,
trace ids and parent/child links. A dead collector must cost a request nothing, and be
counted and logged once.
"""

from __future__ import annotations

import logging
import socket
import statistics
import time
from collections.abc import Iterator

import pytest
from otlp_receiver import GrpcReceiver, HttpReceiver, ReceivedSpan
from prometheus_client import REGISTRY

from tinyllm.lifecycle import get_lifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.telemetry import (
    TelemetryConfig,
    configure_telemetry,
    get_telemetry_state,
    shutdown_telemetry,
    trace_span,
)

pytestmark = pytest.mark.integration

_OTEL_VARS = (
    "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, default_collector: MetricsCollector) -> Iterator[None]:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    shutdown_telemetry()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_workload() -> None:
    """An application span around one chat request with a child span inside it."""
    app_attrs = {"user_id": "u1", "api_key": "sk-secretsecret"}
    with trace_span("operation", attributes=app_attrs), get_lifecycle().start(
        "gemma3", request_type="chat", provider="ollama"
    ) as req:
        with trace_span("inner"):
            pass
        req.token()
        req.token(4)
        req.usage(input_tokens=12)
        req.set_finish_reasons("stop")


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in spans}


def assert_workload_arrived(spans: list[ReceivedSpan], service: str) -> None:
    named = by_name(spans)
    assert set(named) == {"operation", "chat gemma3", "inner"}, [s.name for s in spans]
    op, chat, inner = named["operation"], named["chat gemma3"], named["inner"]
    assert {s.resource["service.name"] for s in spans} == {service}
    assert {s.scope for s in spans} == {"tinyllm"}
    # one trace, linked: operation -> chat request -> inner
    assert len(op.trace_id) == 32 and op.trace_id == chat.trace_id == inner.trace_id
    assert op.parent_span_id == ""
    assert chat.parent_span_id == op.span_id
    assert inner.parent_span_id == chat.span_id
    # GenAI conventions
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    a = chat.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gemma3"
    assert a["gen_ai.provider.name"] == "ollama"
    assert a["gen_ai.usage.input_tokens"] == 12
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.time_to_first_chunk"] >= 0
    # attributes went through the redaction policy before they left the process
    assert op.attributes == {"user_id": "u1", "api_key": "[REDACTED]"}


def test_grpc_receiver_gets_the_trace() -> None:
    with GrpcReceiver() as rx:
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, exporter="otlp", otlp_endpoint=rx.endpoint,
            service_name="svc-grpc"))
        assert get_telemetry_state()["protocol"] == "grpc"
        run_workload()
        assert shutdown_telemetry()
        assert_workload_arrived(rx.spans(), "svc-grpc")
    assert get_telemetry_state()["spans_exported"] == 3
    assert get_telemetry_state()["export_failures"] == 0


def test_http_receiver_gets_the_trace() -> None:
    with HttpReceiver() as rx:
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, exporter="otlp", otlp_endpoint=rx.base_url,
            otlp_protocol="http/protobuf", service_name="svc-http"))
        assert get_telemetry_state()["endpoint"] == rx.base_url + "/v1/traces"
        run_workload()
        assert shutdown_telemetry()
        assert_workload_arrived(rx.spans(), "svc-http")
        assert set(rx.paths) == {"/v1/traces"}


def test_an_error_request_arrives_with_error_type_and_status() -> None:
    with GrpcReceiver() as rx:
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, exporter="otlp", otlp_endpoint=rx.endpoint))
        with pytest.raises(TimeoutError), get_lifecycle().start("m", request_type="stream"):
            raise TimeoutError("model took too long")
        shutdown_telemetry()
    (span,) = rx.spans()
    assert span.name == "text_completion m"
    assert span.attributes["tinyllm.stream"] is True
    assert span.attributes["error.type"] == "TimeoutError"
    assert span.status_code == 2  # STATUS_CODE_ERROR
    assert [name for name, _ in span.events] == ["exception"]


def test_standard_env_vars_select_the_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    # gRPC: only OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME; exporter inferred.
    with GrpcReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
        configure_telemetry(TelemetryConfig(enable_tracing=True))
        with trace_span("env-grpc"):
            pass
        shutdown_telemetry()
        assert [(s.name, s.resource["service.name"]) for s in rx.spans()] == [
            ("env-grpc", "from-env")]
    # HTTP: a base URL plus OTEL_EXPORTER_OTLP_PROTOCOL; /v1/traces is appended.
    with HttpReceiver() as hrx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", hrx.base_url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        configure_telemetry(TelemetryConfig(enable_tracing=True))
        with trace_span("env-http"):
            pass
        shutdown_telemetry()
        assert [s.name for s in hrx.spans()] == ["env-http"]
        assert hrx.paths == ["/v1/traces"]


def test_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with GrpcReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, otlp_endpoint=rx.endpoint, otlp_protocol="grpc"))
        with trace_span("arg"):
            pass
        shutdown_telemetry()
        assert [s.name for s in rx.spans()] == ["arg"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_genai_metrics_arrive_with_the_conventions_buckets(protocol: str) -> None:
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    with receiver as rx:
        endpoint = rx.endpoint if isinstance(rx, GrpcReceiver) else rx.base_url
        configure_telemetry(TelemetryConfig(
            enable_tracing=False, enable_metrics=True, exporter="otlp",
            otlp_endpoint=endpoint, otlp_protocol=protocol))
        with get_lifecycle().start("gemma3", request_type="generate") as req:
            req.token(3)
            req.usage(input_tokens=7)
        with pytest.raises(ConnectionError), get_lifecycle().start("gemma3"):
            raise ConnectionError("refused")
        assert shutdown_telemetry()
        metrics = {m.name: m for m in rx.metrics()}
    if protocol == "http/protobuf":
        assert "/v1/metrics" in rx.paths
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage",
            "gen_ai.server.time_to_first_token"} <= set(metrics)
    duration = metrics["gen_ai.client.operation.duration"]
    assert duration.unit == "s"
    assert duration.points[0]["bounds"] == (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
                                            2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
    outcomes = {p["attributes"].get("error.type") for p in duration.points}
    assert outcomes == {None, "ConnectionError"}
    for p in duration.points:
        assert p["attributes"]["gen_ai.operation.name"] == "text_completion"
        assert p["attributes"]["gen_ai.provider.name"] == "tinyllm"
        assert p["attributes"]["gen_ai.request.model"] == "gemma3"
    usage = {p["attributes"]["gen_ai.token.type"]: p["sum"]
             for p in metrics["gen_ai.client.token.usage"].points}
    assert usage == {"input": 7, "output": 3}
    assert metrics["gen_ai.client.token.usage"].unit == "{token}"


def _failures(signal: str) -> float:
    value = REGISTRY.get_sample_value(
        "tinyllm_telemetry_export_failures_total", {"exporter": "otlp", "signal": signal})
    return value or 0.0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_dead_collector_costs_nothing_and_is_counted_and_logged_once(
    protocol: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # export batches every 20 ms
    caplog.set_level(logging.DEBUG)
    before = _failures("traces"), _failures("metrics")
    configure_telemetry(TelemetryConfig(
        enable_tracing=True, enable_metrics=True, exporter="otlp",
        otlp_endpoint=f"http://127.0.0.1:{closed_port()}", otlp_protocol=protocol,
        export_timeout=0.3))
    took: list[float] = []
    deadline = time.monotonic() + 10
    # Keep making requests until at least three batches have failed.
    while _failures("traces") - before[0] < 3 or len(took) < 10:
        t0 = time.perf_counter()
        with get_lifecycle().start("m") as req:
            req.token()
        took.append(time.perf_counter() - t0)
        assert time.monotonic() < deadline, "span exports never failed"
        time.sleep(0.02)
    # Exports run on a background thread: a request never waits for the collector.
    # (The bounds leave room for a busy CI machine; a request costs ~0.1 ms here.)
    assert statistics.median(took) < 0.005, f"median {statistics.median(took) * 1e3:.1f} ms"
    assert max(took) < 0.05, f"a request took {max(took) * 1000:.1f} ms with the collector down"
    t0 = time.monotonic()
    shutdown_telemetry(timeout=3)
    assert time.monotonic() - t0 < 3.5
    assert _failures("metrics") - before[1] >= 1  # the final metric export failed too
    state = get_telemetry_state()
    assert state["export_failures"] >= 4 and state["spans_exported"] == 0
    ours = [r for r in caplog.records
            if r.name == "tinyllm.telemetry" and r.levelno >= logging.WARNING]
    # once per signal, however many batches failed
    assert len(ours) == 2, [r.getMessage() for r in ours]
    assert {"traces" in r.getMessage() for r in ours} == {True, False}
    assert "telemetry_export_failures_total" in ours[0].getMessage()
    theirs = [r for r in caplog.records
              if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING]
    assert theirs == []


def test_shutdown_does_not_wait_for_retries_to_a_dead_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyllm.telemetry")
    before = _failures("traces")
    # default export_timeout (3 s of retries): the exit must not sit through them
    configure_telemetry(TelemetryConfig(
        enable_tracing=True, otlp_endpoint=f"http://127.0.0.1:{closed_port()}"))
    with trace_span("lost"):
        pass
    t0 = time.monotonic()
    assert shutdown_telemetry()
    assert time.monotonic() - t0 < 1.0
    assert _failures("traces") == before + 1
    (record,) = [r for r in caplog.records if r.name == "tinyllm.telemetry"]
    assert "did not accept a connection" in record.getMessage()


def test_a_collector_that_never_answers_is_cut_off_at_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        configure_telemetry(TelemetryConfig(
            enable_tracing=True, otlp_endpoint=f"http://127.0.0.1:{port}",
            otlp_protocol="http/protobuf", export_timeout=30))
        with trace_span("stuck"):
            pass
        t0 = time.monotonic()
        assert shutdown_telemetry(timeout=0.5) is False
        assert time.monotonic() - t0 < 1.5
    # The collector goes away (its socket closes): the stuck export, still running in
    # the background, fails now, and is counted and logged once, with the reason.
    deadline = time.monotonic() + 5
    while get_telemetry_state()["export_failures"] < 1:
        assert time.monotonic() < deadline, "the stuck export was never given up"
        time.sleep(0.02)
    time.sleep(0.1)  # let the flush thread finish (and log, if it were to log again)
    messages = [r.getMessage() for r in caplog.records
                if r.name.startswith(("tinyllm.telemetry", "opentelemetry"))]
    assert len(messages) == 2, messages
    assert "did not finish within 0.5s; the rest is dropped" in messages[0]
    assert "exporting traces" in messages[1] and "did not finish within 0.5s" in messages[1]
