"""What the gateway answers when the upstream or the client misbehaves: the status the
official SDK expects, OpenAI's error shape, the metrics, never a 500 for user input."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tests.support.servers import free_port
from tinyllm.metrics import MetricsCollector

from .conftest import config_for, gateway, sample
from .test_openai_api import MESSAGES, USAGE, chunk, completion

CHAT = "/v1/chat/completions"


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"messages": []}', 400, "model is required"),
    (b'{"model": "m"}', 400, "messages must be a non-empty list"),
    (b'{"model": "m", "messages": "hi"}', 400, "messages must be a non-empty list"),
    (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', 400, "role must be"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', 400, "content must be"),
    (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', 400, "stream must"),
    (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 99999999999}', 400,
     "no model generates more"),
    (b'{"model": "m", "messages": [{"role": "user"}], "stream_options": 1}', 400,
     "stream_options must be an object"),
    (b'{"model": "nope", "messages": [{"role": "user"}]}', 404, "not served here"),
])
def test_bad_requests_are_4xx_in_openai_shape_and_never_reach_the_upstream(
    gateway_url: str, upstream: FaultServer, body: bytes, status: int, words: str,
) -> None:
    r = httpx.post(f"{gateway_url}{CHAT}", content=body,
                   headers={"content-type": "application/json"})
    assert r.status_code == status
    error = error_of(r)
    assert words in str(error["message"])
    assert "garbage" not in r.text and "robot" not in r.text  # the input is not echoed
    assert upstream.requests == 0


def test_a_body_too_large_is_413_declared_or_not(gateway_url: str) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 2**20 + b'"}]}'
    r = httpx.post(f"{gateway_url}{CHAT}", content=big)
    assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"

    def chunks():  # no Content-Length: chunked, the limit is enforced while reading
        yield big[: 2**19]
        yield big[2**19:]

    r = httpx.post(f"{gateway_url}{CHAT}", content=chunks())
    assert r.status_code == 413


def test_headers_too_large_are_431(gateway_url: str) -> None:
    r = httpx.post(f"{gateway_url}{CHAT}", json={"model": "m", "messages": MESSAGES},
                   headers={"x-big": "y" * 20_000})
    assert r.status_code == 431


def test_wrong_methods_and_paths(gateway_url: str) -> None:
    r = httpx.get(f"{gateway_url}{CHAT}")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    r = httpx.post(f"{gateway_url}/v1/nope", json={})
    assert r.status_code == 404 and error_of(r)["code"] == "unknown_url"
    r = httpx.post(f"{gateway_url}/v1/embeddings", json={"model": "m", "input": []})
    assert r.status_code == 400 and error_of(r)["param"] == "input"


def test_an_upstream_that_refuses_connections_is_502(
    default_collector: MetricsCollector,
) -> None:
    with gateway(config_for(f"http://127.0.0.1:{free_port()}")) as url, \
            openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as c, \
            pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 502 and "cannot reach" in info.value.message
    v = sample(default_collector)
    assert v("tinyllm_errors_total", error_type="connection", model="m", graph="gateway") == 1
    assert v("tinyllm_gateway_requests_total", route=CHAT, status="502") == 1


def test_an_upstream_500_is_retried_once_then_502(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    upstream.script(Reply(status=500, body=b'{"error": {"message": "boom"}}'),
                    Reply(status=500, body=b'{"error": {"message": "boom again"}}'))
    with pytest.raises(openai.InternalServerError, match="boom again") as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 502 and upstream.requests == 2
    upstream.script(Reply(status=503, body=b"{}"), Reply(body=completion("recovered")))
    answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "recovered"


def test_an_upstream_429_is_429_with_retry_after(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    busy = Reply(status=429, body=b'{"error": {"message": "slow down"}}',
                 headers={"Retry-After": "7"})
    upstream.script(busy, busy)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "7"


def test_an_upstream_400_is_the_clients_400_with_the_upstreams_reason(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    upstream.script(Reply(status=400, body=b'{"error": {"message": "context too long"}}'))
    with pytest.raises(openai.BadRequestError, match="context too long"):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert upstream.requests == 1  # a refusal is not retried


def test_an_upstream_that_never_answers_is_504(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    upstream.script(Reply(body=completion(), stall_before=5), Reply(body=completion(),
                                                                     stall_before=5))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    # Connect + read limits (1 + 1 s) per attempt, and a timeout is retried once.
    assert info.value.status_code == 504 and time.monotonic() - started < 6
    assert upstream.requests == 2
    assert sample(default_collector)("tinyllm_inference_requests_total", model="m",
                                     status="timeout") == 1


@pytest.mark.parametrize("fault", ["stall", "cut", "malformed", "error"])
def test_a_stream_that_fails_after_it_started_ends_with_an_error_the_sdk_raises(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
    fault: str,
) -> None:
    first = sse(chunk("partial"))
    replies = {
        "stall": Reply(body=(*first, *sse(chunk("late"), DONE)), stall_between=2,
                       content_type="text/event-stream"),
        "cut": Reply(body=(*first, *sse(chunk("more"), DONE)), close_after=1,
                     content_type="text/event-stream"),
        "malformed": Reply(body=(*first, b"data: {oops\n\n", DONE.encode()),
                           content_type="text/event-stream"),
        "error": Reply(body=(*first, *sse({"error": {"message": "GPU fell over"}}), ),
                       content_type="text/event-stream"),
    }
    upstream.script(replies[fault])
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    seen = []
    with pytest.raises(openai.APIError):
        for c in stream:
            seen.append(c.choices[0].delta.content)
    assert seen == ["partial"]
    v = sample(default_collector)
    assert v("tinyllm_inference_requests_total", model="m", status="success") == 0
    assert v("tinyllm_active_requests", model="m", graph="gateway") == 0


def test_a_client_that_goes_away_mid_stream_cancels_the_upstream_and_is_cancelled(
    gateway_url: str, upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    many = sse(*(chunk(f"t{i} ") for i in range(200)), chunk(finish="stop"), USAGE, DONE)
    upstream.script(Reply(body=many, content_type="text/event-stream", stall_between=0.02))
    with httpx.stream("POST", f"{gateway_url}{CHAT}", timeout=5,
                      json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
        next(r.iter_raw())
    assert upstream.hung_up.wait(5), "the upstream was not told the client went away"
    v = sample(default_collector)
    deadline = time.monotonic() + 5
    while not v("tinyllm_inference_requests_total", model="m", status="cancelled") and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    assert v("tinyllm_inference_requests_total", model="m", status="cancelled") == 1
    assert v("tinyllm_errors_total", error_type="cancelled", model="m", graph="gateway") == 0
    assert v("tinyllm_active_requests", model="m", graph="gateway") == 0


def test_a_client_that_sends_its_body_too_slowly_is_dropped(gateway_url: str) -> None:
    host, port = gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 12


def test_usage_chunks_on_the_last_choice_are_stripped_when_not_asked(
    client: openai.OpenAI, upstream: FaultServer,
) -> None:
    # Some servers put usage on the last chunk with choices instead of a chunk of its own.
    last = chunk(finish="stop", usage={"prompt_tokens": 1, "completion_tokens": 1,
                                       "total_tokens": 2})
    upstream.script(Reply(body=sse(chunk("x"), last, DONE), content_type="text/event-stream"))
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert [c.usage for c in chunks] == [None, None]
    assert json.loads(json.dumps([c.model for c in chunks])) == ["m", "m"]





def test_a_failed_call_is_one_store_row_with_its_error_type(
    client: openai.OpenAI, upstream: FaultServer, default_collector: MetricsCollector,
    tmp_path: object,
) -> None:
    from tinyllm.store import close_store, configure_store

    db = configure_store(f"{tmp_path}/store.db")
    assert db is not None
    try:
        upstream.script(Reply(status=500, body=b"{}"), Reply(status=500, body=b"{}"),
                        Reply(body=completion()))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=MESSAGES)
        client.chat.completions.create(model="m", messages=MESSAGES)
        db.flush()
        summary = db.get_summary()
        assert summary["endpoints"]["chat"] == {"requests": 2, "errors": 1,
                                                "error_rate": 50.0}
        failed = [e["metadata"] for e in summary["recent_events"]
                  if e["metadata"].get("success") is False]
        assert failed[0]["error_type"] == "server_error"
        assert failed[0]["graph"] == "gateway" and failed[0]["request_id"]
    finally:
        close_store()
