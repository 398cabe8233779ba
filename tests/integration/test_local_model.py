"""The embedded model for real (Gemma 3 270M through llama-cpp-python): every call
feeds metrics, a span, a log line, an error event and a store row. Token counts are kept
small: the model generates ~30 tokens/s on two cores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tinyllm.errors import ModelError
from tinyllm.events import BufferedEventHandler, get_event_emitter
from tinyllm.lifecycle import get_lifecycle
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.models import LocalClient, default_model_path, get_client
from tinyllm.resilience import RetryPolicy, Timeouts
from tinyllm.store import MetricsDatabase
from tinyllm.store.observer import StoreObserver

PROMPT = "Question: What is 2+2?\nAnswer:"


@pytest.fixture(scope="module")
def gguf() -> Path:
    return default_model_path(progress=False)


@pytest.fixture
def fresh() -> tuple[CollectorRegistry, MetricsCollector]:
    registry = CollectorRegistry()
    return registry, MetricsCollector(registry=registry)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_default_model_is_assembled_once_and_checked(gguf: Path) -> None:
    assert gguf.name == "gemma-3-270m-q4_k_m.gguf"
    assert gguf.stat().st_size > 200_000_000
    assert gguf.with_name(gguf.name + ".sha256").exists()
    assert default_model_path(progress=False) == gguf  # the second call does no work


def test_generate_feeds_every_metric(fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    registry, collector = fresh
    client = LocalClient(collector=collector, breaker=False)
    completion = client.generate(PROMPT, max_tokens=6, temperature=0)
    assert completion.provider == "local" and completion.model == "gemma3-270m"
    assert 1 <= (completion.output_tokens or 0) <= 6
    assert (completion.input_tokens or 0) > 5  # the prompt through the model's tokenizer
    assert completion.finish_reason in ("length", "stop")
    assert completion.ttft is not None  # the embedded model always streams internally
    m = {"model": "gemma3-270m", "graph": "default"}
    assert _value(registry, "tinyllm_requests_total", request_type="generate", **m) == 1
    assert _value(registry, "tinyllm_tokens_output_total", **m) == completion.output_tokens
    assert _value(registry, "tinyllm_tokens_input_total", **m) == completion.input_tokens
    assert _value(registry, "tinyllm_inference_ttft_seconds_count", model="gemma3-270m") == 1
    assert _value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                  model="gemma3-270m") == completion.output_tokens - 1
    assert _value(registry, "tinyllm_inference_requests_total", model="gemma3-270m",
                  status="success") == 1
    assert _value(registry, "tinyllm_active_requests", **m) == 0


def test_stream_pieces_make_the_completion(
        fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    registry, collector = fresh
    client = LocalClient(collector=collector, breaker=False)
    stream = client.stream(PROMPT, max_tokens=5, temperature=0, graph="qa")
    pieces = list(stream)
    assert stream.completion is not None
    assert "".join(pieces) == stream.completion.text
    assert _value(registry, "tinyllm_requests_total", model="gemma3-270m", graph="qa",
                  request_type="stream") == 1


def test_chat_uses_the_gemma_chat_format(
        fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    _, collector = fresh
    client = LocalClient(collector=collector, breaker=False)
    answer = client.generate(messages=[{"role": "user", "content": "Say hello."}],
                             max_tokens=6, temperature=0)
    # Without chat_format="gemma" the GGUF (no template) answers nothing at all.
    assert answer.text.strip() and (answer.output_tokens or 0) >= 1


def test_the_model_loads_once_per_process(gguf: Path) -> None:
    a = LocalClient(collector=MetricsCollector(registry=CollectorRegistry()))
    b = LocalClient(str(gguf), model="gemma3-270m",
                    collector=MetricsCollector(registry=CollectorRegistry()))
    assert a.load() is LocalClient().load()
    assert b.model_path == gguf


def test_async_calls_run_off_the_event_loop(
        fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    _, collector = fresh
    client = LocalClient(collector=collector, breaker=False)

    async def main() -> tuple[str, list[str], str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        whole = await client.agenerate(PROMPT, max_tokens=4, temperature=0)
        stream = client.astream(PROMPT, max_tokens=4, temperature=0)
        pieces = [piece async for piece in stream]
        task.cancel()
        assert ticks > 3  # the loop kept running while the model generated
        assert stream.completion is not None
        return whole.text, pieces, stream.completion.text

    whole, pieces, streamed = asyncio.run(main())
    assert whole == streamed == "".join(pieces)  # temperature 0: the same answer


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file not found: .*nope\.gguf"):
        get_client("local", model=str(tmp_path / "nope.gguf"))


def test_whole_request_timeout_is_enforced_between_tokens(
        fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    registry, collector = fresh
    client = LocalClient(collector=collector, breaker=False,
                         timeouts=Timeouts(total=0.05), retry=RetryPolicy(max_attempts=1))
    client.load()
    with pytest.raises(ModelError) as caught:
        client.generate(PROMPT, max_tokens=200)
    assert caught.value.error_type == "timeout"
    m = {"model": "gemma3-270m"}
    assert _value(registry, "tinyllm_inference_requests_total", status="timeout", **m) == 1
    assert _value(registry, "tinyllm_errors_total", error_type="timeout", graph="default",
                  **m) == 1


def test_one_call_reaches_every_sink(tmp_path: Path) -> None:
    from tinyllm.telemetry import TelemetryConfig, configure_telemetry, shutdown_telemetry

    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    exporter = InMemorySpanExporter()
    lifecycle = get_lifecycle(collector)
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)], lifecycle=lifecycle)
    db = MetricsDatabase(str(tmp_path / "m.db"), collector=collector)
    store = StoreObserver(db)
    lifecycle.add_observer(store)
    events = BufferedEventHandler()
    get_event_emitter().add_handler(events)
    try:
        client = LocalClient(collector=collector, breaker=False,
                             retry=RetryPolicy(max_attempts=1))
        with capture_logs() as logs:
            done = client.generate(PROMPT, max_tokens=4, temperature=0)
            with pytest.raises(ModelError):
                LocalClient(collector=collector, breaker=False, timeouts=Timeouts(total=0.01),
                            retry=RetryPolicy(max_attempts=1)).generate(PROMPT, max_tokens=100)
        db.flush()
        rows = db.get_summary()
    finally:
        lifecycle.remove_observer(store)
        get_event_emitter().remove_handler(events)
        db.close()
        shutdown_telemetry()
    spans = [s for s in exporter.get_finished_spans() if s.attributes
             and s.attributes.get("gen_ai.provider.name") == "local"]
    assert len(spans) == 2
    assert spans[0].attributes["gen_ai.usage.output_tokens"] == done.output_tokens
    lines = [entry for entry in logs if entry["event"].startswith("llm_request")]
    assert [entry["event"] for entry in lines] == ["llm_request", "llm_request_failed"]
    assert lines[0]["trace_id"] == format(spans[0].context.trace_id, "032x")
    assert PROMPT not in str(logs)  # prompt text is never logged unless opted in
    failures = [e for e in events.get_events() if e.event_type == "llm.request.failed"]
    assert len(failures) == 1 and failures[0].data["error_kind"] == "timeout"
    assert rows["overall"]["total_requests"] == 2
    assert rows["overall"]["success_rate"] == 50.0
