"""The gateway's OpenAI API, driven by the official openai SDK (sync, async, streaming)
against an OpenAI-compatible upstream on a real socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tinyllm.metrics import MetricsCollector

from .conftest import sample

MESSAGES = [{"role": "user", "content": "hi"}]


def completion(text: str = "Hello there", model: str = "up") -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }).encode()


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
         "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                  "total_tokens": 12}}


def stream_reply(*pieces: str, **options: Any) -> Reply:
    return Reply(body=sse(*(chunk(p) for p in pieces), chunk(finish="stop"), USAGE, DONE),
                 content_type="text/event-stream", **options)


def test_a_whole_chat_answer_with_usage_metrics_and_overhead(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    upstream.script(Reply(body=completion()))
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello there"
    assert answer.model == "m"  # the name the client asked for, not the upstream's
    assert answer.usage is not None and answer.usage.total_tokens == 11
    assert float(raw.headers["x-tinyllm-overhead-ms"]) >= 0
    sent = upstream.exchanges[0]
    assert sent.path == "/v1/chat/completions" and sent.json["model"] == "up"
    v = sample(default_collector)
    assert v("tinyllm_requests_total", model="m", graph="gateway", request_type="chat") == 1
    assert v("tinyllm_tokens_input_total", model="m", graph="gateway") == 9
    assert v("tinyllm_tokens_output_total", model="m", graph="gateway") == 2
    assert v("tinyllm_inference_requests_total", model="m", status="success") == 1
    assert v("tinyllm_gateway_requests_total", route="/v1/chat/completions",
             status="200") == 1
    assert v("tinyllm_gateway_overhead_seconds_count", route="/v1/chat/completions") == 1


def test_a_stream_asks_the_upstream_for_usage_and_passes_it_only_when_asked(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    upstream.script(stream_reply("Hel", "lo", "!"), stream_reply("a", "b", "c"))
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert all(c.usage is None for c in chunks)  # not asked: not passed on
    assert upstream.exchanges[0].json["stream_options"] == {"include_usage": True}
    asked = list(client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3
    v = sample(default_collector)
    # Tokens from the upstream's usage, although the first client never asked for it.
    assert v("tinyllm_tokens_output_total", model="m", graph="gateway") == 6
    assert v("tinyllm_inference_ttft_seconds_count", model="m") == 2
    assert v("tinyllm_inference_inter_token_latency_seconds_count", model="m") == 4


def test_stream_headers_say_no_buffering(gateway_url: str, upstream: FaultServer) -> None:
    upstream.script(stream_reply("x"))
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", timeout=5,
                      json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        body = r.read().decode()
    assert body.endswith("data: [DONE]\n\n")


def test_each_chunk_reaches_the_client_as_it_arrives(
    gateway_url: str, upstream: FaultServer,
) -> None:
    upstream.script(stream_reply("a", "b", stall_between=0.3))
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", timeout=5,
                      json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
        pieces = r.iter_raw()
        first = next(pieces)
        assert b'"content":"a"' in first and b'"content":"b"' not in first


def test_keep_alive_comments_while_the_first_token_is_slow(
    gateway_url: str, upstream: FaultServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tinyllm.serve import proxy

    monkeypatch.setattr(proxy, "KEEPALIVE_SECONDS", 0.1)
    # The upstream answers its headers at once, then takes 0.35 s for the first token.
    upstream.script(Reply(body=(b": upstream thinking\n\n",
                                *sse(chunk("late"), chunk(finish="stop"), USAGE, DONE)),
                          content_type="text/event-stream", stall_between=0.35))
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", timeout=5,
                      json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
        body = r.read().decode()
    assert body.count(": keep-alive\n\n") >= 2
    assert '"content":"late"' in body and body.endswith("data: [DONE]\n\n")


def test_completions_whole_and_streamed(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    whole = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "up",
             "choices": [{"index": 0, "text": " 4", "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    piece = {"id": "c", "object": "text_completion", "created": 1, "model": "up",
             "choices": [{"index": 0, "text": " 4", "finish_reason": None}]}
    upstream.script(Reply(body=json.dumps(whole).encode()),
                    Reply(body=sse(piece, DONE), content_type="text/event-stream"))
    assert client.completions.create(model="m", prompt="2+2=").choices[0].text == " 4"
    streamed = list(client.completions.create(model="m", prompt="2+2=", stream=True))
    assert [c.choices[0].text for c in streamed] == [" 4"]
    assert [e.path for e in upstream.exchanges] == ["/v1/completions"] * 2


def test_fields_the_gateway_does_not_know_reach_the_upstream_unchanged(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    upstream.script(Reply(body=completion()))
    client.chat.completions.create(model="m", messages=MESSAGES, temperature=0.2,
                                   extra_body={"top_k": 40, "repetition_penalty": 1.1})
    sent = upstream.exchanges[0].json
    assert sent["top_k"] == 40 and sent["repetition_penalty"] == 1.1
    assert sent["temperature"] == 0.2


def test_the_async_client(gateway_url: str, upstream: FaultServer) -> None:
    upstream.script(Reply(body=completion("async")), stream_reply("x", "y"))

    async def main() -> tuple[str | None, str]:
        async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="k",
                                      max_retries=0) as c:
            whole = await c.chat.completions.create(model="m", messages=MESSAGES)
            stream = await c.chat.completions.create(model="m", messages=MESSAGES,
                                                     stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                            if ch.choices])
            return whole.choices[0].message.content, text

    assert asyncio.run(main()) == ("async", "xy")


def test_models_are_listed_and_looked_up(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["m"]
    assert client.models.retrieve("m").owned_by == "openai"
    with pytest.raises(openai.NotFoundError, match="not served here; available: m"):
        client.models.retrieve("other")


def test_metrics_health_and_ready_on_the_same_port(gateway_url: str) -> None:
    assert "tinyllm_requests_total" in httpx.get(f"{gateway_url}/metrics").text
    assert httpx.get(f"{gateway_url}/health").json()["status"] == "healthy"
    assert httpx.get(f"{gateway_url}/ready").json() == {"status": "ready", "models": ["m"]}


def test_a_gateway_can_front_another_gateway(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    from .conftest import config_for, gateway

    upstream.script(stream_reply("a", "b"), Reply(body=completion("whole")))
    with gateway(config_for(upstream.url, name="inner")) as inner, \
            gateway(config_for(inner.removesuffix("/v1"), name="outer",
                               upstream_model="inner")) as outer, \
            openai.OpenAI(base_url=f"{outer}/v1", api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model="outer", messages=MESSAGES,
                                                     stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks
                       if c.choices) == "ab"
        assert client.chat.completions.create(
            model="outer", messages=MESSAGES).choices[0].message.content == "whole"
    v = sample(default_collector)
    for name in ("inner", "outer"):  # one process here: both gateways' requests counted
        assert v("tinyllm_requests_total", model=name, graph="gateway",
                 request_type="chat_stream") == 1
        assert v("tinyllm_tokens_output_total", model=name, graph="gateway") == 5


def test_embeddings_go_to_an_upstream_that_embeds(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    answer = {"object": "list", "model": "up", "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    upstream.script(Reply(body=json.dumps(answer).encode()))
    result = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    assert result.data[0].embedding == [0.1, -0.2, 0.3] and result.model == "m"
    assert upstream.exchanges[0].path == "/v1/embeddings"
    v = sample(default_collector)
    assert v("tinyllm_requests_total", model="m", graph="gateway",
             request_type="embedding") == 1
    assert v("tinyllm_tokens_input_total", model="m", graph="gateway") == 4


def test_langchain_chat_openai_with_a_custom_base_url_gets_its_tokens_counted(
    gateway_url: str, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    # ChatOpenAI does not ask for streamed usage when base_url is custom: the gateway
    # asks the upstream itself, so the token metrics are right all the same.
    from langchain_openai import ChatOpenAI

    upstream.script(stream_reply("Lang", "Chain", "!"), Reply(body=completion("whole")))
    llm = ChatOpenAI(model="m", base_url=f"{gateway_url}/v1", api_key="unused",
                     max_retries=0, streaming=True)
    pieces = list(llm.stream("hi"))
    assert "".join(str(piece.content) for piece in pieces) == "LangChain!"
    # It did not ask (no usage came back to it), the upstream was asked all the same.
    assert all(not piece.usage_metadata for piece in pieces)
    assert upstream.exchanges[0].json["stream_options"] == {"include_usage": True}
    assert ChatOpenAI(model="m", base_url=f"{gateway_url}/v1", api_key="unused",
                      max_retries=0).invoke("hi").content == "whole"
    v = sample(default_collector)
    assert v("tinyllm_tokens_output_total", model="m", graph="gateway") == 3 + 2
    assert v("tinyllm_tokens_input_total", model="m", graph="gateway") == 9 + 9
