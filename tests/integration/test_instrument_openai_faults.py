"""The instrumented ``openai`` SDK where a real server would have to misbehave: errors,
dropped streams, and the APIs llama.cpp's server lacks (embeddings for a chat model, the
Responses API). A ``FaultServer`` on a real socket answers in OpenAI's documented shapes.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client import CollectorRegistry
from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tests.support.servers import free_port

import tinyllm
from tinyllm.instrumentation import FAULTS
from tinyllm.metrics import MetricsCollector

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def metrics(default_collector: MetricsCollector) -> Iterator[CollectorRegistry]:
    tinyllm.instrument(ollama=False)
    try:
        yield default_collector.registry
    finally:
        tinyllm.uninstrument()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as found:
        yield found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def client(url: str, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0, **kwargs)


def chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-1",
            "choices": [{"index": 0, "delta": {"content": content},
                         "finish_reason": finish}]}


USAGE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up-1",
         "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3,
                                  "total_tokens": 10}}


@pytest.mark.parametrize(("reply", "error_type"), [
    (Reply(status=429, body=b'{"error":{"message":"slow down"}}'), "rate_limited"),
    (Reply(status=503, body=b'{"error":{"message":"busy"}}'), "server_error"),
    (Reply(status=400, body=b'{"error":{"message":"bad"}}'), "bad_request"),
    (Reply(stall_before=2.0), "timeout"),
])
def test_sdk_errors_are_classified_and_raised_unchanged(
        metrics: CollectorRegistry, server: FaultServer, reply: Reply, error_type: str) -> None:
    server.script(reply)
    with pytest.raises(openai.APIError) as raised:
        client(f"{server.url}/v1", timeout=0.5).chat.completions.create(
            model="m", messages=MESSAGES)
    expected = {"rate_limited": openai.RateLimitError, "server_error": openai.InternalServerError,
                "bad_request": openai.BadRequestError, "timeout": openai.APITimeoutError}
    assert type(raised.value) is expected[error_type]
    assert value(metrics, "tinyllm_errors_total", model="m", graph="default",
                 error_type=error_type) == 1
    assert value(metrics, "tinyllm_active_requests", model="m", graph="default") == 0


def test_a_refused_connection_is_a_connection_error(metrics: CollectorRegistry) -> None:
    with pytest.raises(openai.APIConnectionError):
        client(f"http://127.0.0.1:{free_port()}/v1").chat.completions.create(
            model="m", messages=MESSAGES)
    assert value(metrics, "tinyllm_errors_total", model="m", graph="default",
                 error_type="connection") == 1


def test_a_stream_the_server_drops_midway_is_an_error_after_its_tokens(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    server.script(Reply(body=sse(chunk("a"), chunk("b"), chunk("c")), close_after=2,
                        content_type="text/event-stream"))
    got = []
    with pytest.raises(openai.APIConnectionError):
        for piece in client(f"{server.url}/v1").chat.completions.create(
                model="m", messages=MESSAGES, stream=True):
            got.append(piece.choices[0].delta.content)
    assert got == ["a", "b"]
    assert value(metrics, "tinyllm_inference_requests_total", model="m", status="error") == 1
    assert value(metrics, "tinyllm_tokens_output_total", model="m", graph="default") == 2


def test_usage_is_asked_for_and_its_chunk_hidden(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    server.script(Reply(body=sse(chunk("a"), chunk("b", "stop"), USAGE, DONE),
                        content_type="text/event-stream"))
    pieces = list(client(f"{server.url}/v1").chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={}))
    assert json.loads(server.exchanges[0].body)["stream_options"] == {"include_usage": True}
    assert [p.choices[0].delta.content for p in pieces] == ["a", "b"]
    mg = {"model": "m", "graph": "default"}
    assert value(metrics, "tinyllm_tokens_input_total", **mg) == 7
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == 3  # the server's count


def test_the_caller_keeps_include_usage_false(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    server.script(Reply(body=sse(chunk("a"), DONE), content_type="text/event-stream"))
    list(client(f"{server.url}/v1").chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": False}))
    assert json.loads(server.exchanges[0].body)["stream_options"] == {"include_usage": False}


def test_embeddings_count_their_input_tokens(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    server.script(Reply(body=json.dumps({
        "object": "list", "model": "emb-1",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4}}).encode()))
    answer = client(f"{server.url}/v1").embeddings.create(model="emb", input="four words here")
    assert answer.data[0].embedding == [0.1, 0.2]
    assert value(metrics, "tinyllm_requests_total", model="emb", graph="default",
                 request_type="embedding") == 1
    assert value(metrics, "tinyllm_tokens_input_total", model="emb", graph="default") == 4


def _response(status: str = "completed") -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": "up-1",
            "status": status, "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7,
                                   "input_tokens_details": {"cached_tokens": 0},
                                   "output_tokens_details": {"reasoning_tokens": 0}}}


def test_the_responses_api_whole_and_streamed(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    delta = {"type": "response.output_text.delta", "item_id": "i", "output_index": 0,
             "content_index": 0, "delta": "hi", "sequence_number": 1, "logprobs": []}
    done = {"type": "response.completed", "response": _response(), "sequence_number": 3}
    server.script(Reply(body=json.dumps(_response()).encode()),
                  Reply(body=sse({**delta}, {**delta, "sequence_number": 2}, done),
                        content_type="text/event-stream"))
    api = client(f"{server.url}/v1").responses
    assert api.create(model="r", input="hi").usage.output_tokens == 2
    events = list(api.create(model="r", input="hi", stream=True))
    assert [e.type for e in events][-1] == "response.completed"
    mg = {"model": "r", "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="response", **mg) == 1
    assert value(metrics, "tinyllm_requests_total", request_type="response_stream", **mg) == 1
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == 4
    assert value(metrics, "tinyllm_inference_ttft_seconds_count", model="r") == 1


def test_a_fault_of_ours_never_reaches_the_caller(
        metrics: CollectorRegistry, server: FaultServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyllm.instrumentation import openai as integration

    def broken(call: Any, piece: Any) -> bool:
        raise RuntimeError("an SDK object shaped unlike any we know")

    server.script(Reply(body=sse(chunk("a"), chunk("b"), DONE), content_type="text/event-stream"))
    tinyllm.uninstrument()
    monkeypatch.setattr(integration, "_chat_chunk", broken)
    tinyllm.instrument(ollama=False)
    before = FAULTS["reading a chunk"]
    pieces = list(client(f"{server.url}/v1").chat.completions.create(
        model="m", messages=MESSAGES, stream=True))
    assert [p.choices[0].delta.content for p in pieces] == ["a", "b"]
    assert FAULTS["reading a chunk"] == before + 2
    assert value(metrics, "tinyllm_inference_requests_total", model="m", status="success") == 1


def test_an_unsupported_release_is_left_alone_with_one_warning(
        default_collector: MetricsCollector, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from openai.resources.chat.completions import Completions

    original = Completions.create
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "4.0.0" if name == "openai" else real(name))
    monkeypatch.setattr("tinyllm.instrumentation._warned", set())
    with caplog.at_level(logging.WARNING, logger="tinyllm.instrumentation"):
        assert tinyllm.instrument(ollama=False) == {"openai": "unsupported 4.0.0"}
        assert tinyllm.instrument(ollama=False) == {"openai": "unsupported 4.0.0"}
    assert Completions.create is original
    warnings = [r for r in caplog.records if "outside the supported releases" in r.message]
    assert len(warnings) == 1


def test_sdk_request_timeouts_still_apply(metrics: CollectorRegistry,
                                         server: FaultServer) -> None:
    server.script(Reply(body=sse(chunk("a"), chunk("b"), DONE), stall_between=2.0,
                        content_type="text/event-stream"))
    stream = client(f"{server.url}/v1", timeout=httpx2.Timeout(0.5)).chat.completions.create(
        model="m", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APITimeoutError):
        list(stream)
    assert value(metrics, "tinyllm_inference_requests_total", model="m", status="timeout") == 1


def test_async_raw_and_streaming_responses(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    answer = json.dumps({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()
    server.fallback = Reply(body=answer)

    async def main() -> None:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        raw = await api.chat.completions.with_raw_response.create(model="m",
                                                                   messages=MESSAGES)
        assert raw.parse().choices[0].message.content == "4"
        async with api.chat.completions.with_streaming_response.create(
                model="m", messages=MESSAGES) as response:
            assert (await response.parse()).usage.completion_tokens == 1
        async with api.chat.completions.with_streaming_response.create(
                model="m", messages=MESSAGES) as response:
            assert b'"content": "4"' in await response.read()  # read raw: ends at close
        await api.close()

    import asyncio

    asyncio.run(main())
    mg = {"model": "m", "graph": "default"}
    assert value(metrics, "tinyllm_inference_requests_total", model="m", status="success") == 3
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == 2  # the two parsed
    assert value(metrics, "tinyllm_active_requests", **mg) == 0


def test_structured_parse_and_the_stream_helper_are_each_one_request(
        metrics: CollectorRegistry, server: FaultServer) -> None:
    answer = json.dumps({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"n": 4}'},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}).encode()
    server.script(Reply(body=answer),
                  Reply(body=sse(chunk("a"), chunk("b", "stop"), USAGE, DONE),
                        content_type="text/event-stream"))
    api = client(f"{server.url}/v1").chat.completions
    assert api.parse(model="m", messages=MESSAGES).choices[0].message.content == '{"n": 4}'
    with api.stream(model="m", messages=MESSAGES) as stream:
        assert stream.get_final_completion().choices[0].message.content == "ab"
    mg = {"model": "m", "graph": "default"}
    assert value(metrics, "tinyllm_requests_total", request_type="chat", **mg) == 1
    assert value(metrics, "tinyllm_requests_total", request_type="chat_stream", **mg) == 1
    assert value(metrics, "tinyllm_tokens_output_total", **mg) == 5 + 3


def test_stream_usage_off_sends_the_call_as_written(
        default_collector: MetricsCollector, server: FaultServer) -> None:
    server.script(Reply(body=sse(chunk("a"), chunk("b"), DONE), content_type="text/event-stream"))
    tinyllm.instrument(ollama=False, stream_usage=False)
    try:
        list(client(f"{server.url}/v1").chat.completions.create(
            model="m", messages=MESSAGES, stream=True))
    finally:
        tinyllm.uninstrument()
    assert "stream_options" not in json.loads(server.exchanges[0].body)
    assert value(default_collector.registry, "tinyllm_tokens_output_total", model="m",
                 graph="default") == 2  # one per chunk, as nothing reported usage


def test_the_states_instrument_reports(default_collector: MetricsCollector) -> None:
    from tinyllm.instrumentation import instrumented

    tinyllm.uninstrument()
    assert instrumented()["openai"] == "off"
    tinyllm.instrument(ollama=False)
    try:
        assert instrumented()["openai"] == "instrumented"
    finally:
        tinyllm.uninstrument()
    assert instrumented()["openai"] == "off"


def test_a_release_whose_insides_moved_is_left_alone(
        default_collector: MetricsCollector, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from openai.resources.chat.completions import Completions

    from tinyllm.instrumentation import openai as integration

    original = Completions.create
    real_patch = integration.patch

    def half_then_raise(sdk: Any, patches: Any, **kwargs: Any) -> None:
        real_patch(sdk, patches, **kwargs)  # every method replaced...
        raise AttributeError("a class this release no longer has")  # ...then a surprise

    monkeypatch.setattr(integration, "patch", half_then_raise)
    with caplog.at_level(logging.WARNING, logger="tinyllm.instrumentation"):
        assert tinyllm.instrument(ollama=False) == {"openai": "failed"}
    assert Completions.create is original  # what was replaced is put back
    assert any("instrumenting openai" in r.message for r in caplog.records)


def test_the_environment_switch_names_what_to_instrument(
        default_collector: MetricsCollector, caplog: pytest.LogCaptureFixture) -> None:
    from tinyllm.instrumentation import instrument_from_env

    try:
        with caplog.at_level(logging.WARNING, logger="tinyllm.instrumentation"):
            assert instrument_from_env({"TINYLLM_INSTRUMENT": "openai,anthropic"}) == {
                "openai": "instrumented"}
        assert any("anthropic" in r.message and "valid:" in r.message
                   for r in caplog.records)
    finally:
        tinyllm.uninstrument()
    assert instrument_from_env({}) == {}
