"""Seed 003's Logging and Tracing examples, run as the seed writes them.

(The Events examples are run verbatim in test_events.py, the debug commands in
tests/e2e/test_cli_debug.py.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tinyllm.logging import capture_logs, reset_logging
from tinyllm.telemetry import (
    TelemetryConfig,
    configure_telemetry,
    get_telemetry_state,
    shutdown_telemetry,
)


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    shutdown_telemetry()
    reset_logging()
    yield
    shutdown_telemetry()
    reset_logging()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)])
    return exporter


def test_logging_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from tinyllm.logging import configure_logging, get_logger

    configure_logging(log_level="INFO", log_format="json")
    logger = get_logger(__name__, component="executor")
    logger.info("task_started", task_id="abc123")
    logger.info("node_executed", node_id="entry", duration_ms=123, tokens_used=45)

    def risky_operation() -> None:
        raise RuntimeError("boom")

    try:
        risky_operation()
    except Exception as e:
        logger.error("operation_failed", error=str(e), exc_info=True)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["task_started", "node_executed", "operation_failed"]
    assert lines[1] | {"node_id": "entry", "duration_ms": 123, "tokens_used": 45} == lines[1]
    assert all(x["component"] == "executor" and x["app"] == "tinyllm" for x in lines)
    assert "RuntimeError: boom" in lines[2]["exception"]


def test_log_sampling_examples() -> None:
    from tinyllm.logging import configure_log_sampling, get_logger

    configure_log_sampling(sample_rate=0.1)
    configure_log_sampling(max_per_second=1000)
    configure_log_sampling(sample_rate=0.5, max_per_second=500, hash_based=True)
    log = get_logger("sampled")
    with capture_logs() as first, capture_logs() as logs:
        for i in range(400):
            log.info(f"tick-{i}")
        log.warning("never_sampled")
    kept = {x["event"] for x in logs if x["event"].startswith("tick")}
    assert 100 < len(kept) < 300  # about half of 400 distinct events
    assert logs[-1]["event"] == "never_sampled"
    with capture_logs() as again:  # hash-based: the same events are kept again
        for i in range(400):
            log.info(f"tick-{i}")
    assert {x["event"] for x in again} == kept
    assert first == []  # only the innermost capture receives


def test_telemetry_configuration_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    from tinyllm.telemetry import trace_span

    # Console exporter (development)
    config = TelemetryConfig(
        enable_tracing=True,
        service_name="tinyllm",
        exporter="console",
        sampling_rate=1.0
    )
    configure_telemetry(config)
    with trace_span("my_operation"):
        pass
    shutdown_telemetry()
    assert '"name": "my_operation"' in capsys.readouterr().err

    # OTLP exporter (production - Jaeger/Tempo); nothing listens there in the test
    config = TelemetryConfig(
        enable_tracing=True,
        service_name="tinyllm",
        exporter="otlp",
        otlp_endpoint="http://localhost:4317",
        sampling_rate=0.1  # Sample 10% of traces
    )
    configure_telemetry(config)
    state = get_telemetry_state()
    assert state["exporter"] == "otlp" and state["sampling_rate"] == 0.1
    assert state["protocol"] == "grpc"


def test_span_examples(spans: InMemorySpanExporter) -> None:
    from tinyllm.telemetry import (
        record_span_event,
        set_span_attribute,
        set_span_error,
        trace_span,
        traced,
    )

    with trace_span(
        "node_execution",
        attributes={
            "node_id": "entry",
            "node_type": "router"
        }
    ):
        pass

    @traced(attributes={"component": "executor"})
    async def execute_graph(graph_id: str) -> str:
        return graph_id

    assert asyncio.run(execute_graph("g1")) == "g1"

    with trace_span("processing"):
        set_span_attribute("user_id", "user-123")
        record_span_event(
            "cache_miss",
            attributes={"cache_key": "abc"}
        )

    def dangerous_code() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError), trace_span("risky_operation"):
        try:
            dangerous_code()
        except Exception as e:
            set_span_error(e)
            raise

    done = {s.name: s for s in spans.get_finished_spans()}
    assert done["node_execution"].attributes == {"node_id": "entry", "node_type": "router"}
    graph = next(s for name, s in done.items() if "execute_graph" in name)
    assert graph.attributes is not None and graph.attributes["component"] == "executor"
    assert done["processing"].attributes == {"user_id": "user-123"}
    assert [e.name for e in done["processing"].events] == ["cache_miss"]
    assert done["risky_operation"].status.status_code.name == "ERROR"
    assert any(e.name == "exception" for e in done["risky_operation"].events)


def test_trace_correlation_example(spans: InMemorySpanExporter) -> None:
    from tinyllm.logging import get_logger
    from tinyllm.telemetry import get_current_trace_id, is_telemetry_enabled, trace_span

    logger = get_logger(__name__)
    with capture_logs() as logs, trace_span("my_operation") as span:
        logger.info("operation_started")
        trace_id = span.get_span_context().trace_id
    assert is_telemetry_enabled()
    assert logs[0]["trace_id"] == format(trace_id, "032x")
    assert len(logs[0]["span_id"]) == 16
    assert get_current_trace_id() is None  # outside the span again
