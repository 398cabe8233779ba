"""The real ``openai`` SDK, instrumented, against a real OpenAI-compatible server:
llama-cpp-python's own serving the embedded model (the ``llama_server`` fixture).

Each test names its own model so that its series are its own; the server serves its one
model whatever the request names.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry
from tests.support.sinks import every_sink

import tinyllm
from tinyllm._observed import forget_endpoint, observe_endpoint
from tinyllm.lifecycle import get_lifecycle
from tinyllm.metrics import MetricsCollector

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def metrics(default_collector: MetricsCollector) -> Iterator[CollectorRegistry]:
    """The process-wide collector, fresh, with both SDKs instrumented for the test."""
    tinyllm.instrument()
    try:
        yield default_collector.registry
    finally:
        tinyllm.uninstrument()


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def status(registry: CollectorRegistry, model: str, state: str) -> float:
    return value(registry, "tinyllm_inference_requests_total", model=model, status=state)


def active(registry: CollectorRegistry, model: str) -> float:
    return value(registry, "tinyllm_active_requests", model=model, graph="default")


def client(url: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="sk-test-not-a-secret", max_retries=0,
                         **kwargs)


def test_a_chat_completion_is_one_request_with_the_servers_usage(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    answer = client(llama_server).chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=5, temperature=0)
    assert isinstance(answer, openai.types.chat.ChatCompletion)
    mg = {"model": model, "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="chat", **mg) == 1
    assert value(metrics, "tinyllm_tokens_input_total", **mg) == answer.usage.prompt_tokens
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == \
        answer.usage.completion_tokens
    assert status(metrics, model, "success") == 1
    assert active(metrics, model) == 0


def test_a_stream_is_timed_per_chunk_and_counted_when_the_server_reports_no_usage(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    # llama.cpp's server ignores stream_options: no usage, so one token per chunk.
    stream = client(llama_server).chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=6, temperature=0, stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    mg = {"model": model, "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="chat_stream", **mg) == 1
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == len(texts) > 0
    assert value(metrics, "tinyllm_inference_ttft_seconds_count", model=model) == 1
    assert value(metrics, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=model) == len(texts) - 1
    assert status(metrics, model, "success") == 1 and active(metrics, model) == 0


def gateway_tokens(url: str) -> tuple[float, float]:
    """The gateway's own count of gemma3-270m's input and output tokens."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    found = {"tinyllm_tokens_input_total": 0.0, "tinyllm_tokens_output_total": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name in found and sample.labels.get("model") == "gemma3-270m":
                found[sample.name] += sample.value
    return found["tinyllm_tokens_input_total"], found["tinyllm_tokens_output_total"]


def test_a_stream_asks_for_usage_and_hides_the_chunk_the_caller_did_not_ask_for(
        tinyllm_gateway: str, metrics: CollectorRegistry) -> None:
    before = gateway_tokens(tinyllm_gateway)
    chunks = list(client(f"{tinyllm_gateway}/v1").chat.completions.create(
        model="gemma3-270m", messages=MESSAGES, max_tokens=6, stream=True))
    after = gateway_tokens(tinyllm_gateway)
    assert chunks and all(c.choices for c in chunks)  # no usage-only chunk reached us
    assert all(c.usage is None for c in chunks)
    mg = {"model": "gemma3-270m", "graph": "default"}
    # the server's own counts, not a guess from the chunks
    assert value(metrics, "tinyllm_tokens_input_total", **mg) == after[0] - before[0] > 0
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == after[1] - before[1] > 0


def test_a_caller_who_asked_for_usage_still_gets_its_chunk(
        tinyllm_gateway: str, metrics: CollectorRegistry) -> None:
    chunks = list(client(f"{tinyllm_gateway}/v1").chat.completions.create(
        model="gemma3-270m", messages=MESSAGES, max_tokens=4, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert value(metrics, "tinyllm_tokens_output_total", model="gemma3-270m",
                 graph="default") == chunks[-1].usage.completion_tokens


@pytest.mark.parametrize("abandon", ["break", "close", "with-block", "never-iterated",
                                     "caller-raises"])
def test_an_abandoned_stream_ends_once_as_cancelled(
        llama_server: str, metrics: CollectorRegistry, model: str, abandon: str) -> None:
    def run() -> None:
        stream = client(llama_server).chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=30, stream=True)
        assert active(metrics, model) == 1
        if abandon == "break":
            for _ in stream:
                break
        elif abandon == "close":
            next(stream)
            stream.close()
        elif abandon == "with-block":
            with stream:
                next(stream)
        elif abandon == "caller-raises":
            with pytest.raises(ZeroDivisionError):
                for _ in stream:
                    raise ZeroDivisionError
        if abandon != "never-iterated":  # at once, not when the collector gets to it
            assert status(metrics, model, "cancelled") == 1 and active(metrics, model) == 0
        del stream

    run()
    gc.collect()  # the SDK's stream sits in a reference cycle: released by the collector
    assert status(metrics, model, "cancelled") == 1
    assert sum(status(metrics, model, s) for s in ("success", "error", "timeout")) == 0
    assert active(metrics, model) == 0
    assert value(metrics, "tinyllm_errors_total", model=model, graph="default",
                 error_type="cancelled") == 0


def test_raw_responses_with_and_without_parse(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    api = client(llama_server).chat.completions
    raw = api.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3)
    assert raw.http_response.status_code == 200  # never parsed by the caller
    parsed = api.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3)
    answer = parsed.parse()
    assert isinstance(answer, openai.types.chat.ChatCompletion)
    streamed = api.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=3,
                                            stream=True)
    assert list(streamed.parse())
    with api.with_streaming_response.create(model=model, messages=MESSAGES,
                                            max_tokens=3) as response:
        assert response.parse().choices
    with api.with_streaming_response.create(model=model, messages=MESSAGES, max_tokens=3,
                                            stream=True) as response:
        lines = list(response.iter_lines())  # read raw: no stream_options added
        assert not any('"usage":{' in line and '"choices":[]' in line for line in lines)
    assert status(metrics, model, "success") == 5 and active(metrics, model) == 0
    assert value(metrics, "tinyllm_tokens_output_total", model=model, graph="default") >= \
        answer.usage.completion_tokens * 2


def test_text_completions_stream_and_whole(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    api = client(llama_server).completions
    whole = api.create(model=model, prompt="2+2=", max_tokens=3)
    pieces = list(api.create(model=model, prompt="2+2=", max_tokens=3, stream=True))
    assert pieces and all(p.usage is None for p in pieces)
    mg = {"model": model, "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="completion", **mg) == 1
    assert value(metrics, "tinyllm_requests_total", request_type="completion_stream",
                 **mg) == 1
    assert value(metrics, "tinyllm_tokens_output_total", **mg) >= \
        whole.usage.completion_tokens + 1


def test_async_calls_and_a_cancelled_task(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    async def main() -> None:
        api = openai.AsyncOpenAI(base_url=llama_server, api_key="x", max_retries=0)
        answer = await api.chat.completions.create(model=model, messages=MESSAGES,
                                                   max_tokens=3)
        assert answer.choices
        stream = await api.chat.completions.create(model=model, messages=MESSAGES,
                                                   max_tokens=3, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        assert [c async for c in stream]

        async def slow_reader() -> None:
            stream = await api.chat.completions.create(model=model, messages=MESSAGES,
                                                       max_tokens=200, stream=True)
            async for _ in stream:
                await asyncio.sleep(10)

        task = asyncio.create_task(slow_reader())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await api.close()

    asyncio.run(main())
    assert status(metrics, model, "success") == 2
    assert status(metrics, model, "cancelled") == 1
    assert active(metrics, model) == 0


def test_one_call_reaches_every_sink_like_a_tinyllm_client(
        llama_server: str, default_collector: MetricsCollector, model: str,
        tmp_path: Path) -> None:
    tinyllm.instrument()
    try:
        with every_sink(default_collector, tmp_path) as sinks:
            answer = client(llama_server).chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=4)
    finally:
        tinyllm.uninstrument()
    spans = sinks.spans("openai")
    assert len(spans) == 1
    attrs = spans[0].attributes
    assert attrs["gen_ai.request.model"] == model
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.response.model"] == answer.model
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == (answer.choices[0].finish_reason,)
    assert len(sinks.lines) == 1 and sinks.lines[0]["model"] == model
    assert sinks.lines[0]["trace_id"] == format(spans[0].context.trace_id, "032x")
    assert "What is 2+2?" not in str(sinks.logs) and "sk-test" not in str(sinks.logs)
    assert sinks.summary["overall"]["total_requests"] == 1


def test_a_call_inside_an_open_request_or_to_a_gateway_here_is_not_counted_again(
        llama_server: str, metrics: CollectorRegistry, model: str) -> None:
    with get_lifecycle().start("outer", request_type="chat"):
        client(llama_server).chat.completions.create(model=model, messages=MESSAGES,
                                                     max_tokens=2)
    host_port = llama_server.split("//")[1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    observe_endpoint(host, int(port))
    try:
        client(llama_server).chat.completions.create(model=model, messages=MESSAGES,
                                                     max_tokens=2)
    finally:
        forget_endpoint(host, int(port))
    assert value(metrics, "tinyllm_requests_total", model=model, graph="default",
                 request_type="chat") == 0
    assert value(metrics, "tinyllm_requests_total", model="outer", graph="default",
                 request_type="chat") == 1


def test_uninstrument_puts_the_sdks_methods_back(default_collector: MetricsCollector) -> None:
    from openai.resources.chat.completions import AsyncCompletions, Completions

    originals = (Completions.create, AsyncCompletions.create)
    assert tinyllm.instrument()["openai"] == "instrumented"
    assert tinyllm.instrument()["openai"] == "instrumented"  # idempotent
    assert Completions.create is not originals[0]
    assert Completions.create.__wrapped__ is originals[0]  # type: ignore[attr-defined]
    tinyllm.uninstrument()
    tinyllm.uninstrument()
    assert (Completions.create, AsyncCompletions.create) == originals
