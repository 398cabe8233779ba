"""Correlation through the gateway: X-Request-Id and W3C traceparent, from the client to
the log line, the span, the store row and the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.fault_server import FaultServer, Reply
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.telemetry import TelemetryConfig, configure_telemetry, shutdown_telemetry

from .test_openai_api import MESSAGES, completion

CHAT = "/v1/chat/completions"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


def test_a_request_id_is_kept_echoed_forwarded_logged_and_stored(
    gateway_url: str, upstream: FaultServer, default_collector: MetricsCollector,
    tmp_path: object,
) -> None:
    from tinyllm.store import close_store, configure_store

    db = configure_store(f"{tmp_path}/store.db")
    assert db is not None
    try:
        upstream.script(Reply(body=completion()), Reply(body=completion()))
        with capture_logs() as logs:
            r = httpx.post(f"{gateway_url}{CHAT}", json={"model": "m", "messages": MESSAGES},
                           headers={"X-Request-Id": "req-42"})
            bad = httpx.post(f"{gateway_url}{CHAT}", json={"model": "m", "messages": MESSAGES},
                             headers={"X-Request-Id": "no spaces <allowed>"})
        assert r.headers["x-request-id"] == "req-42"
        made = bad.headers["x-request-id"]
        assert len(made) == 32 and made != "no spaces <allowed>"
        assert upstream.exchanges[0].headers["x-request-id"] == "req-42"
        lines = [e for e in logs if e["event"] == "llm_request"]
        assert [e["request_id"] for e in lines] == ["req-42", made]
        db.flush()
        stored = [e["metadata"]["request_id"] for e in db.get_summary()["recent_events"]]
        assert sorted(stored) == sorted(["req-42", made])
    finally:
        close_store()
    # Errors carry it too: the client can find the failed call in the logs.
    r = httpx.post(f"{gateway_url}{CHAT}", content=b"{", headers={"X-Request-Id": "e-1"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "e-1"


def test_without_tracing_the_clients_traceparent_goes_to_the_upstream_as_it_came(
    gateway_url: str, upstream: FaultServer,
) -> None:
    upstream.script(Reply(body=completion()))
    httpx.post(f"{gateway_url}{CHAT}", json={"model": "m", "messages": MESSAGES},
               headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    sent = upstream.exchanges[0].headers
    assert sent["traceparent"] == TRACEPARENT and sent["tracestate"] == "vendor=1"


@pytest.fixture
def spans(default_collector: MetricsCollector) -> Iterator[InMemorySpanExporter]:
    # After default_collector: tracing observes the process-wide lifecycle made fresh.
    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)])
    yield exporter
    shutdown_telemetry()


def test_with_tracing_the_span_continues_the_clients_trace_and_the_upstream_continues_ours(
    spans: InMemorySpanExporter, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    from .conftest import config_for, gateway

    upstream.script(Reply(body=completion()))
    with gateway(config_for(upstream.url)) as url:
        httpx.post(f"{url}{CHAT}", json={"model": "m", "messages": MESSAGES},
                   headers={"traceparent": TRACEPARENT, "X-Request-Id": "r-7"})
    (span,) = [s for s in spans.get_finished_spans() if s.name == "chat m"]
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT
    assert span.attributes is not None and span.attributes["tinyllm.request.id"] == "r-7"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    forwarded = upstream.exchanges[0].headers["traceparent"]
    assert forwarded == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"


def test_llama_cpps_own_timings_reach_the_span(
    spans: InMemorySpanExporter, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    # llama.cpp's server puts its own timings on a whole answer (and a stream's last
    # chunk): passed through onto the request's span.
    import json

    from .conftest import config_for, gateway

    answer = json.loads(completion())
    answer["timings"] = {"prompt_n": 9, "prompt_ms": 12.5, "predicted_n": 2,
                         "predicted_ms": 40.0, "predicted_per_second": 50.0}
    upstream.script(Reply(body=json.dumps(answer).encode()))
    with gateway(config_for(upstream.url)) as url:
        httpx.post(f"{url}{CHAT}", json={"model": "m", "messages": MESSAGES})
    (span,) = [s for s in spans.get_finished_spans() if s.name == "chat m"]
    assert span.attributes is not None
    assert span.attributes["tinyllm.upstream.predicted_ms"] == 40.0
    assert span.attributes["tinyllm.upstream.prompt_n"] == 9
