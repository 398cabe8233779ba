"""``OpenAIClient`` against a scripted OpenAI-compatible server speaking SSE over a real
socket: what the client sends (paths, bodies, headers) and how it reads what comes back
(chat and completions, streamed and whole, with and without a usage chunk, ``[DONE]``,
comments and keep-alives), and that the API key stays out of logs and error messages.

The chunks below have the shapes OpenAI's API reference documents and vLLM and
llama.cpp's server send: ``chat.completion.chunk`` objects whose first delta carries the
role, a last chunk with ``finish_reason``, then (with ``stream_options.include_usage``)
one chunk with empty ``choices`` and the ``usage``, then ``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tinyllm.errors import ModelError
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.models import OpenAIClient
from tinyllm.resilience import RetryPolicy

MODEL = "gemma-3-270m"
TEXTS = ("The", " answer", " is", " 4", ".")
# Not shaped like a vendor key, so no log redaction pattern can hide a leak by luck.
API_KEY = "local-llm-key-7f3a9c2e5d"
SSE_TYPE = "text/event-stream"


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1735689600,
            "model": MODEL, "system_fingerprint": "b5627",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]}


def text_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "cmpl-7", "object": "text_completion", "created": 1735689600,
            "model": MODEL, "choices": [{"index": 0, "text": text, "logprobs": None,
                                         "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int, obj: str = "chat.completion.chunk") -> dict[str, Any]:
    return {"id": "chatcmpl-7", "object": obj, "created": 1735689600, "model": MODEL,
            "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}}


def chat_events(texts: tuple[str, ...] = TEXTS, usage: tuple[int, int] | None = None
                ) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = [chat_chunk({"role": "assistant", "content": ""})]
    events += [chat_chunk({"content": t}) for t in texts]
    events.append(chat_chunk({}, "stop"))
    if usage is not None:
        events.append(usage_chunk(*usage))
    events.append(DONE)
    return events


def stream_reply(*events: dict[str, Any] | str) -> Reply:
    return Reply(body=sse(*events), content_type=SSE_TYPE)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault:
        yield fault


@pytest.fixture
def client(server: FaultServer, collector: MetricsCollector) -> Iterator[OpenAIClient]:
    openai = OpenAIClient(server.url + "/v1", MODEL, collector=collector, breaker=False,
                          retry=RetryPolicy(max_attempts=1))
    yield openai
    openai.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- chat ---------------------------------------------------------------------------------


def test_chat_stream_with_a_usage_chunk_takes_the_servers_counts(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    server.script(stream_reply(*chat_events(usage=(14, 9))))
    stream = client.stream("What is 2+2?", max_tokens=16, temperature=0.0)
    assert list(stream) == list(TEXTS)

    done = stream.completion
    assert done is not None
    # The server's 9 (its tokenizer's count) wins over the 5 text chunks counted.
    assert (done.input_tokens, done.output_tokens, done.finish_reason) == (14, 9, "stop")
    assert done.ttft is not None
    (exchange,) = server.exchanges
    assert (exchange.method, exchange.path) == ("POST", "/v1/chat/completions")
    assert exchange.json == {
        "model": MODEL, "stream": True,
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 16, "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    assert "authorization" not in exchange.headers  # no api_key, no header
    assert value(registry, "tinyllm_tokens_input_total", model=MODEL, graph="default") == 14
    assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph="default") == 9
    assert value(registry, "tinyllm_inference_ttft_seconds_count", model=MODEL) == 1
    # The empty role chunk is no token: 5 text chunks, 4 gaps.
    assert value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=MODEL) == 4


def test_chat_stream_without_usage_counts_one_token_per_text_chunk(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    server.script(stream_reply(*chat_events(usage=None)))  # llama.cpp's server, for one
    stream = client.stream(messages=[{"role": "user", "content": "What is 2+2?"}])
    assert "".join(stream) == "".join(TEXTS)

    done = stream.completion
    assert done is not None
    assert (done.input_tokens, done.output_tokens) == (None, 5)
    assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph="default") == 5
    assert value(registry, "tinyllm_tokens_input_total", model=MODEL, graph="default") == 0


def test_chat_whole_answer_sends_no_stream_options(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    server.script(Reply(body=json.dumps({
        "id": "chatcmpl-8", "object": "chat.completion", "created": 1735689600,
        "model": MODEL, "choices": [{"index": 0, "finish_reason": "length", "logprobs": None,
                                     "message": {"role": "assistant", "content": "4"}}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 1, "total_tokens": 22},
    }, indent=2).encode()))  # pretty-printed, as some servers answer
    done = client.generate("What is 2+2?", system="Answer with a number.", top_p=0.5,
                           seed=3, stop=["\n", "."])

    assert (done.text, done.input_tokens, done.output_tokens) == ("4", 21, 1)
    assert done.finish_reason == "length" and done.ttft is None
    assert server.exchanges[0].json == {
        "model": MODEL, "stream": False,
        "messages": [{"role": "system", "content": "Answer with a number."},
                     {"role": "user", "content": "What is 2+2?"}],
        "top_p": 0.5, "seed": 3, "stop": ["\n", "."],
    }
    assert value(registry, "tinyllm_requests_total", model=MODEL, graph="default",
                 request_type="generate") == 1


def test_an_error_object_in_the_stream_is_a_server_error(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    # vLLM reports a failure after the stream began as a data event of its own.
    server.script(stream_reply(
        chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "The"}),
        {"error": {"object": "error", "message": "engine dead", "type": "InternalServerError",
                   "code": 500}}, DONE))
    with pytest.raises(ModelError) as caught:
        list(client.stream("hi"))
    assert caught.value.error_type == "server_error" and "engine dead" in str(caught.value)
    assert value(registry, "tinyllm_errors_total", error_type="server_error", model=MODEL,
                 graph="default") == 1


# -- completions ------------------------------------------------------------------------------


def test_completions_stream_reads_text_and_usage(
        server: FaultServer, collector: MetricsCollector, registry: CollectorRegistry) -> None:
    server.script(stream_reply(*[text_chunk(t) for t in TEXTS], text_chunk("", "stop"),
                               usage_chunk(8, 6, "text_completion"), DONE))
    with OpenAIClient(server.url + "/v1/", MODEL, api="completions", collector=collector,
                      breaker=False) as openai:
        stream = openai.stream("Question: 2+2?\nAnswer:", system="Be brief.", max_tokens=8)
        assert "".join(stream) == "".join(TEXTS)

    done = stream.completion
    assert done is not None and (done.input_tokens, done.output_tokens) == (8, 6)
    (exchange,) = server.exchanges
    assert exchange.path == "/v1/completions"  # a trailing "/" on base_url is fine
    assert exchange.json == {
        "model": MODEL, "stream": True, "prompt": "Be brief.\n\nQuestion: 2+2?\nAnswer:",
        "max_tokens": 8, "stream_options": {"include_usage": True},
    }


def test_completions_whole_answer(server: FaultServer, collector: MetricsCollector) -> None:
    server.script(Reply(body=json.dumps({
        "id": "cmpl-9", "object": "text_completion", "created": 1735689600, "model": MODEL,
        "choices": [{"index": 0, "text": " 4", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }).encode()))
    with OpenAIClient(server.url + "/v1", MODEL, api="completions", collector=collector,
                      breaker=False) as openai:
        done = openai.generate("Question: 2+2?\nAnswer:")
    assert (done.text, done.input_tokens, done.output_tokens) == (" 4", 7, 2)
    assert server.exchanges[0].json == {"model": MODEL, "stream": False,
                                        "prompt": "Question: 2+2?\nAnswer:"}


def test_chat_messages_go_to_chat_even_on_a_completions_client(
        server: FaultServer, collector: MetricsCollector) -> None:
    server.script(stream_reply(*chat_events()))
    with OpenAIClient(server.url + "/v1", MODEL, api="completions", collector=collector,
                      breaker=False) as openai:
        "".join(openai.stream(messages=[{"role": "user", "content": "hi"}]))
    assert server.exchanges[0].path == "/v1/chat/completions"


# -- the SSE framing ----------------------------------------------------------------------------


def test_comments_keep_alives_and_other_sse_fields_are_ignored(
        client: OpenAIClient, server: FaultServer) -> None:
    first = json.dumps(chat_chunk({"role": "assistant", "content": ""})).encode()
    split = json.dumps(chat_chunk({"content": " answer"})).encode()
    server.script(Reply(content_type=SSE_TYPE, body=(
        b": keep-alive\n\n",
        b"retry: 3000\n\n",
        b"event: message\nid: 1\ndata: " + first + b"\n\n",
        b"data:" + json.dumps(chat_chunk({"content": "The"})).encode() + b"\n\n",  # no space
        b": ping - 2025-01-01 00:00:00\n\n",
        b"data: " + split[:25], split[25:] + b"\n\n",  # one event across two reads
        b"data: " + json.dumps(chat_chunk({"content": " is"})).encode() + b"\r\n\r\n",  # CRLF
        *sse(*chat_events(texts=(" 4", "."))[1:]),
    )))
    stream = client.stream("What is 2+2?")
    assert "".join(stream) == "".join(TEXTS)
    assert stream.completion is not None and stream.completion.output_tokens == 5


def test_done_ends_the_stream_and_nothing_after_it_is_read(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    server.script(stream_reply(*chat_events(), "data: {not json}\n\n",
                               chat_chunk({"content": " ignored"})))
    assert "".join(client.stream("hi")) == "".join(TEXTS)
    assert value(registry, "tinyllm_inference_requests_total", model=MODEL,
                 status="success") == 1


# -- the API key -------------------------------------------------------------------------------


def test_the_api_key_goes_in_the_authorization_header(
        server: FaultServer, collector: MetricsCollector) -> None:
    server.script(stream_reply(*chat_events()), stream_reply(*chat_events()))
    with OpenAIClient(server.url + "/v1", MODEL, API_KEY, collector=collector,
                      breaker=False) as openai:
        "".join(openai.stream("hi"))
        "".join(openai.stream("hi"))  # the same client, a second call, the same header
    assert [e.headers.get("authorization") for e in server.exchanges] == [
        f"Bearer {API_KEY}"] * 2
    assert all(API_KEY not in e.body.decode() for e in server.exchanges)


def test_the_api_key_stays_out_of_logs_and_error_messages(
        server: FaultServer, collector: MetricsCollector) -> None:
    server.script(stream_reply(*chat_events(usage=(3, 5))),
                  Reply(status=500, body=b'{"error":{"message":"boom","type":"server_error"}}'),
                  stream_reply(chat_chunk({"content": "half"}), "data: {oops\n\n"))
    caught: list[ModelError] = []
    with capture_logs(level="debug") as logs, \
            OpenAIClient(server.url + "/v1", MODEL, API_KEY, collector=collector,
                         breaker=False, retry=RetryPolicy(max_attempts=1)) as openai:
        "".join(openai.stream("hi"))
        for call in (lambda: openai.generate("hi"), lambda: "".join(openai.stream("hi"))):
            with pytest.raises(ModelError) as failure:
                call()
            caught.append(failure.value)
    assert [e.error_type for e in caught] == ["server_error", "server_error"]
    assert logs  # the request lines were captured
    assert API_KEY not in json.dumps(logs, default=str)
    for error in caught:
        assert API_KEY not in f"{error} {error!r} {error.args}"


def test_an_api_key_echoed_by_the_server_is_kept_out_of_errors_and_logs(
        server: FaultServer, collector: MetricsCollector) -> None:
    # Some servers quote the key they refused; the client must not pass it on.
    server.script(Reply(status=401, body=json.dumps({"error": {
        "message": f"Incorrect API key provided: {API_KEY}.",
        "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()))
    with capture_logs(level="debug") as logs, \
            OpenAIClient(server.url + "/v1", MODEL, API_KEY, collector=collector,
                         breaker=False) as openai, pytest.raises(ModelError) as caught:
        openai.generate("hi")
    error = caught.value
    assert (error.error_type, error.status_code) == ("bad_request", 401)
    assert "Incorrect API key provided" in str(error)  # the server's reason still shows
    assert API_KEY not in f"{error} {error!r} {error.args}"
    assert API_KEY not in json.dumps(logs, default=str)


# -- call-site errors -------------------------------------------------------------------------


def test_bad_arguments_fail_at_the_call_site(collector: MetricsCollector) -> None:
    with pytest.raises(ValueError, match="api='embeddings'; valid: chat, completions"):
        OpenAIClient("http://127.0.0.1:1/v1", MODEL, api="embeddings",  # type: ignore[arg-type]
                     collector=collector, breaker=False)
    with pytest.raises(ValueError, match="base_url"):
        OpenAIClient("127.0.0.1:8000/v1", MODEL, collector=collector, breaker=False)


def test_prompt_cache_hits_are_priced_apart(
        client: OpenAIClient, server: FaultServer, registry: CollectorRegistry) -> None:
    from tinyllm.accounting import configure_prices
    from tinyllm.pricing import ModelPrice, PriceTable

    events = chat_events(usage=(1000, 10))
    usage = next(e for e in events if isinstance(e, dict) and "usage" in e)
    usage["usage"]["prompt_tokens_details"] = {"cached_tokens": 400}
    server.script(stream_reply(*events))
    configure_prices(PriceTable({MODEL: ModelPrice(input=1.0, output=2.0, cached_input=0.25)}))
    try:
        assert list(client.stream("What is 2+2?", max_tokens=16)) == list(TEXTS)
    finally:
        configure_prices(None)
    # 600 uncached at 1.0, 400 cached at 0.25, 10 output at 2.0, per million tokens.
    assert value(registry, "tinyllm_cost_usd_total", model=MODEL) == pytest.approx(
        (600 * 1.0 + 400 * 0.25 + 10 * 2.0) / 1e6)
