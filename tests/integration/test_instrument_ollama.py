"""The real ``ollama`` SDK, instrumented, against a faithful replay of recorded real
Ollama answers (no Ollama server can run here): sync and async clients, the module-level
functions, streams abandoned every way, errors, and putting the SDK back."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest
from prometheus_client import CollectorRegistry
from tests.support.fault_server import Reply
from tests.support.ollama_replay import OllamaReplayServer, read_recording
from tests.support.sinks import every_sink

import tinyllm
from tinyllm.metrics import MetricsCollector

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def metrics(default_collector: MetricsCollector) -> Iterator[CollectorRegistry]:
    tinyllm.instrument(openai=False)
    try:
        yield default_collector.registry
    finally:
        tinyllm.uninstrument()


@pytest.fixture
def server() -> Iterator[OllamaReplayServer]:
    with OllamaReplayServer() as found:
        yield found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def recorded_last(name: str) -> dict[str, Any]:
    last: dict[str, Any] = json.loads(read_recording(name).splitlines()[-1])
    return last


def test_chat_whole_and_streamed_take_the_recorded_counts(
        metrics: CollectorRegistry, server: OllamaReplayServer) -> None:
    api = ollama.Client(host=server.url)
    whole = api.chat(model="llama3", messages=MESSAGES, stream=False)
    assert isinstance(whole, ollama.ChatResponse) and whole.message.content
    parts = list(api.chat(model="llama3", messages=MESSAGES, stream=True))
    texts = [p.message.content for p in parts if p.message.content]
    last = recorded_last("chat_stream.ndjson")
    mg = {"model": "llama3", "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="chat", **mg) == 1
    assert value(metrics, "tinyllm_requests_total", request_type="chat_stream", **mg) == 1
    assert value(metrics, "tinyllm_tokens_input_total", **mg) == \
        whole.prompt_eval_count + last["prompt_eval_count"]
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == \
        whole.eval_count + last["eval_count"]
    assert value(metrics, "tinyllm_inference_ttft_seconds_count", model="llama3") == 1
    assert value(metrics, "tinyllm_inference_inter_token_latency_seconds_count",
                 model="llama3") == len(texts) - 1
    assert value(metrics, "tinyllm_inference_requests_total", model="llama3",
                 status="success") == 2


def test_the_module_level_functions_are_observed(
        metrics: CollectorRegistry, server: OllamaReplayServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    default = ollama._client
    monkeypatch.setattr(default, "_client", ollama.Client(host=server.url)._client)
    assert ollama.generate(model="granite", prompt="Describe a rabbit", stream=False).response
    assert value(metrics, "tinyllm_requests_total", model="granite", graph="default",
                 request_type="completion") == 1


@pytest.mark.parametrize("abandon", ["break", "close", "never-iterated", "caller-raises"])
def test_an_abandoned_stream_ends_once_as_cancelled(
        metrics: CollectorRegistry, server: OllamaReplayServer, abandon: str) -> None:
    def run() -> None:
        parts = ollama.Client(host=server.url).generate(model="g", prompt="p", stream=True)
        if abandon == "break":
            for _ in parts:
                break
        elif abandon == "close":
            next(parts)
            parts.close()
        elif abandon == "caller-raises":
            with pytest.raises(KeyError):
                for _ in parts:
                    raise KeyError
        del parts

    run()
    gc.collect()
    assert value(metrics, "tinyllm_inference_requests_total", model="g",
                 status="cancelled") == 1
    assert value(metrics, "tinyllm_inference_requests_total", model="g", status="success") == 0
    assert value(metrics, "tinyllm_active_requests", model="g", graph="default") == 0


def test_async_client_and_a_cancelled_task(
        metrics: CollectorRegistry, server: OllamaReplayServer) -> None:
    server.line_delay = 0.05

    async def main() -> None:
        api = ollama.AsyncClient(host=server.url)
        assert (await api.chat(model="a", messages=MESSAGES, stream=False)).message.content
        assert [p async for p in await api.chat(model="a", messages=MESSAGES, stream=True)]

        async def reader() -> None:
            async for _ in await api.generate(model="a", prompt="p", stream=True):
                pass

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert value(metrics, "tinyllm_inference_requests_total", model="a", status="success") == 2
    assert value(metrics, "tinyllm_inference_requests_total", model="a",
                 status="cancelled") == 1
    assert value(metrics, "tinyllm_active_requests", model="a", graph="default") == 0


def test_a_recorded_error_is_raised_unchanged_and_classified(
        metrics: CollectorRegistry, server: OllamaReplayServer) -> None:
    server.script(server.recorded_error(404))
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=server.url).chat(model="missing", messages=MESSAGES, stream=False)
    assert raised.value.status_code == 404
    assert value(metrics, "tinyllm_errors_total", model="missing", graph="default",
                 error_type="bad_request") == 1


def test_embed_counts_its_input_tokens(
        metrics: CollectorRegistry, server: OllamaReplayServer) -> None:
    # No embed answer was recorded: this one follows Ollama's API reference.
    server.script(Reply(body=json.dumps({
        "model": "all-minilm", "embeddings": [[0.01, -0.02]], "total_duration": 14143917,
        "load_duration": 1019500, "prompt_eval_count": 8}).encode()))
    answer = ollama.Client(host=server.url).embed(model="all-minilm", input="why is the sky")
    assert answer.embeddings == [[0.01, -0.02]]
    assert value(metrics, "tinyllm_requests_total", model="all-minilm", graph="default",
                 request_type="embedding") == 1
    assert value(metrics, "tinyllm_tokens_input_total", model="all-minilm",
                 graph="default") == 8


def test_the_older_embeddings_call_is_observed_without_a_fault(
        metrics: CollectorRegistry, server: OllamaReplayServer) -> None:
    from tinyllm.instrumentation import FAULTS

    # Its answer carries nothing but the vector (Ollama's API reference).
    server.script(Reply(body=json.dumps({"embedding": [0.5, -0.25]}).encode()))
    before = sum(FAULTS.values())
    answer = ollama.Client(host=server.url).embeddings(model="all-minilm", prompt="sky")
    assert list(answer.embedding) == [0.5, -0.25]
    assert sum(FAULTS.values()) == before
    assert value(metrics, "tinyllm_inference_requests_total", model="all-minilm",
                 status="success") == 1


def test_uninstrument_puts_everything_back(default_collector: MetricsCollector) -> None:
    originals = (ollama.Client.chat, ollama.AsyncClient.generate, ollama.chat)
    assert tinyllm.instrument(openai=False) == {"ollama": "instrumented"}
    assert ollama.chat is not originals[2]
    tinyllm.uninstrument()
    assert (ollama.Client.chat, ollama.AsyncClient.generate, ollama.chat) == originals


def test_one_call_reaches_every_sink_like_a_tinyllm_client(
        default_collector: MetricsCollector, server: OllamaReplayServer, tmp_path: Path) -> None:
    tinyllm.instrument(openai=False)
    try:
        with every_sink(default_collector, tmp_path) as sinks:
            parts = list(ollama.Client(host=server.url).chat(model="llama3", messages=MESSAGES,
                                                             stream=True))
    finally:
        tinyllm.uninstrument()
    spans = sinks.spans("ollama")
    assert len(spans) == 1
    attrs = spans[0].attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["tinyllm.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == parts[-1].eval_count
    assert attrs["gen_ai.usage.input_tokens"] == parts[-1].prompt_eval_count
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == (parts[-1].done_reason,)
    assert len(sinks.lines) == 1 and sinks.lines[0]["provider"] == "ollama"
    assert "What is 2+2?" not in str(sinks.logs)
    assert sinks.summary["overall"]["total_requests"] == 1
