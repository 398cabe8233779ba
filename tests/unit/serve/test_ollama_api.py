"""The gateway's Ollama API, driven by the official ``ollama`` SDK, in front of an
OpenAI-compatible upstream (either API may front either kind of upstream)."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tests.support.waiting import eventually
from tinyllm.metrics import MetricsCollector

from .conftest import config_for, gateway, sample
from .test_openai_api import USAGE, chunk, stream_reply

MESSAGES = [{"role": "user", "content": "hi"}]


def test_chat_streamed_and_whole_with_ollamas_final_object(
    gateway_url: str, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    upstream.script(stream_reply("Hel", "lo"), stream_reply("Who", "le"))
    client = ollama.Client(host=gateway_url)
    parts = list(client.chat(model="m", messages=MESSAGES, stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Hello"
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == 3 and final.prompt_eval_count == 9  # the upstream's usage
    assert final.total_duration and final.total_duration >= (final.eval_duration or 0)
    whole = client.chat(model="m", messages=MESSAGES, stream=False,
                        options={"temperature": 0.1, "num_predict": 5, "top_k": 3})
    assert whole.message.content == "Whole" and whole.done
    sent = upstream.exchanges[1].json
    assert (sent["temperature"], sent["max_tokens"], sent["top_k"]) == (0.1, 5, 3)
    assert sent["stream"] is True  # always streamed upstream: tokens timed as they come
    v = sample(default_collector)
    assert v("tinyllm_requests_total", model="m", graph="gateway",
             request_type="chat_stream") == 1
    assert v("tinyllm_requests_total", model="m", graph="gateway", request_type="chat") == 1
    # Counted just after the answer went out: the client may have it a moment before.
    eventually(lambda: v("tinyllm_gateway_requests_total", route="/api/chat",
                         status="200") == 2, what="the second answer's count")


@pytest.mark.parametrize("unlimited", [-1, -2])
def test_num_predicts_no_limit_values_send_no_max_tokens(
    gateway_url: str, upstream: FaultServer, unlimited: int,
) -> None:
    # Ollama's -1 (its default: until a stop) and -2 (fill the context) are no limit.
    upstream.script(stream_reply("Hi"))
    answer = ollama.Client(host=gateway_url).chat(
        model="m", messages=MESSAGES, stream=False, options={"num_predict": unlimited})
    assert answer.message.content == "Hi"
    assert "max_tokens" not in upstream.exchanges[0].json


def test_num_predict_as_a_whole_float_is_sent_as_an_integer(
    gateway_url: str, upstream: FaultServer,
) -> None:
    upstream.script(stream_reply("Hi"))
    httpx.post(f"{gateway_url}/api/chat", json={
        "model": "m", "messages": MESSAGES, "stream": False,
        "options": {"num_predict": 7.0}}).raise_for_status()
    sent = upstream.exchanges[0].json["max_tokens"]
    assert sent == 7 and type(sent) is int


@pytest.mark.parametrize("bad", [-3, 0, 1.5, 1_048_577, "8", True])
def test_num_predict_other_values_are_refused_naming_the_valid_ones(
    gateway_url: str, upstream: FaultServer, bad: object,
) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=gateway_url).chat(model="m", messages=MESSAGES,
                                             options={"num_predict": bad})
    assert info.value.status_code == 400
    assert "options.num_predict must be a whole number from 1 to 1,048,576, or -1 (until " \
           f"a stop) or -2 (until the context is full), got {bad!r}" in info.value.error
    assert not upstream.exchanges


def test_generate_with_and_without_a_system_prompt(
    gateway_url: str, upstream: FaultServer,
) -> None:
    piece = {"id": "c", "object": "text_completion", "created": 1, "model": "up",
             "choices": [{"index": 0, "text": " 4", "finish_reason": "stop"}]}
    upstream.script(Reply(body=sse(piece, USAGE, DONE), content_type="text/event-stream"),
                    stream_reply("Sure"))
    client = ollama.Client(host=gateway_url)
    answer = client.generate(model="m", prompt="2+2=")
    assert answer.response == " 4" and answer.done
    assert upstream.exchanges[0].path == "/v1/completions"
    streamed = "".join(p.response for p in client.generate(
        model="m", prompt="hi", system="Be brief.", stream=True))
    assert streamed == "Sure"
    assert upstream.exchanges[1].json["messages"][0] == {"role": "system",
                                                          "content": "Be brief."}


def test_what_ollama_clients_probe(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/").text == "Ollama is running"
    client = ollama.Client(host=gateway_url)
    assert [m.model for m in client.list().models] == ["m"]
    assert client.show("m").details is not None
    assert client.ps().models == []  # no embedded model loaded in this gateway
    assert httpx.get(f"{gateway_url}/api/version").json()["version"]
    with pytest.raises(ollama.ResponseError) as info:
        client.show("nope")
    assert info.value.status_code == 404


def test_errors_in_ollamas_shape(gateway_url: str, upstream: FaultServer) -> None:
    client = ollama.Client(host=gateway_url)
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=MESSAGES)
    assert info.value.status_code == 404 and "not served here" in info.value.error
    r = httpx.post(f"{gateway_url}/api/chat", content=b"{bad")
    assert r.status_code == 400 and set(r.json()) == {"error"}
    upstream.script(Reply(status=500, body=b"{}"), Reply(status=500, body=b"{}"))
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="m", messages=MESSAGES, stream=False)
    assert info.value.status_code == 502
    # Mid-stream: the line carries the error, which the SDK raises.
    upstream.script(Reply(body=(*sse(chunk("partial")), b"data: {oops\n\n"),
                          content_type="text/event-stream"))
    with pytest.raises(ollama.ResponseError):
        list(client.chat(model="m", messages=MESSAGES, stream=True))


def test_another_tinyllm_serve_as_an_ollama_api_upstream(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    # provider ollama speaks Ollama's API: the inner gateway answers it like Ollama.
    from tinyllm.serve.config import parse_config

    upstream.script(stream_reply("via", " ollama"))
    with gateway(config_for(upstream.url, name="inner")) as inner:
        config = parse_config(f"models:\n  - name: llama\n    provider: ollama\n"
                              f"    base_url: {inner}\n    model: inner\n")
        with gateway(config) as outer:
            parts = list(ollama.Client(host=outer).chat(model="llama", messages=MESSAGES,
                                                        stream=True))
    assert "".join(p.message.content or "" for p in parts) == "via ollama"
    v = sample(default_collector)
    assert v("tinyllm_requests_total", model="llama", graph="gateway",
             request_type="chat_stream") == 1
    assert v("tinyllm_gateway_requests_total", route="/api/chat", status="200") == 2
    assert parts[-1].eval_count == 3  # the inner gateway's final object, passed through
