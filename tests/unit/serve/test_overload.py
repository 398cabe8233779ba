"""503s the gateway answers fast when it cannot take more: a full queue for the
embedded model, an open circuit (and readiness that says so), too many connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.fault_server import FaultServer, Reply
from tests.support.servers import uvicorn_server
from tinyllm.errors import ModelError
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import get_circuit_breaker, reset_circuit_breakers
from tinyllm.serve import server as server_module
from tinyllm.serve.app import Gateway
from tinyllm.serve.config import parse_config
from tinyllm.serve.local import LocalUpstream

from .conftest import config_for, gateway, sample
from .test_openai_api import MESSAGES, completion


class SlowLlama:
    """Stands in for llama.cpp's Llama: a chat answer of a few slow tokens."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def n_ctx(self) -> int:
        return 512

    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]:
        return [1] * max(1, len(text) // 4)

    def create_chat_completion(self, messages: Any, stream: bool, **params: Any) -> Any:
        assert self.release.wait(10)
        for piece in ("slow", " answer"):
            yield {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "f",
                   "choices": [{"index": 0, "delta": {"content": piece},
                                "finish_reason": None}]}


class SlowClient:
    def __init__(self, llama: SlowLlama) -> None:
        self.llama = llama

    def load(self) -> SlowLlama:
        return self.llama


@pytest.fixture
def local_gateway(default_collector: MetricsCollector) -> Iterator[tuple[str, threading.Event]]:
    release = threading.Event()
    config = parse_config("models:\n  - name: tiny\n    provider: local\n")
    app = Gateway(config)
    route = config.models["tiny"]
    app.upstreams["tiny"] = LocalUpstream(route, max_queue=1,
                                          client=SlowClient(SlowLlama(release)))  # type: ignore[arg-type]
    with uvicorn_server(app) as url:
        yield url, release
    release.set()


def test_a_full_queue_for_the_embedded_model_is_503_at_once(
    local_gateway: tuple[str, threading.Event], default_collector: MetricsCollector,
) -> None:
    url, release = local_gateway

    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k",
                                      max_retries=0) as client:
            async def ask() -> Any:
                try:
                    r = await client.chat.completions.create(model="tiny", messages=MESSAGES)
                    return r.choices[0].message.content
                except openai.APIStatusError as exc:
                    return exc

            first = asyncio.ensure_future(ask())  # runs (held until released)
            await asyncio.sleep(0.3)
            second = asyncio.ensure_future(ask())  # waits in the queue (size 1)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            third = await ask()  # nowhere to wait: refused at once
            refused_in = time.monotonic() - started
            release.set()
            return [await first, await second, third, refused_in]

    first, second, third, refused_in = asyncio.run(main())
    assert first == second == "slow answer"
    assert isinstance(third, openai.APIStatusError) and third.status_code == 503
    assert third.response.headers["retry-after"] and refused_in < 1.0
    v = sample(default_collector)
    assert v("tinyllm_queue_requests_rejected_total", priority="normal") == 1
    assert v("tinyllm_queue_requests_total", priority="normal") == 2


def test_an_open_circuit_is_503_with_retry_after_and_readiness_fails(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> None:
    with gateway(config_for(upstream.url)) as url, \
            openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        assert httpx.get(f"{url}/ready").status_code == 200
        breaker = get_circuit_breaker("m")
        for _ in range(breaker.failure_threshold):
            breaker.record_failure(ModelError("down", error_type="connection"))
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and "circuit open" in ready.json()["reason"]
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"]
    assert upstream.requests == 0
    reset_circuit_breakers()


def test_past_the_connection_cap_requests_get_503_fast(
    upstream: FaultServer, default_collector: MetricsCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvicorn counts the arriving connection too: a cap of 3 serves two at once.
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 3)
    upstream.script(*(Reply(body=completion(), stall_before=2) for _ in range(3)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    srv = server_module.make_server(config_for(upstream.url), port=port, grace=1)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    body = {"model": "m", "messages": MESSAGES}
    results: list[int] = []

    def call() -> None:
        results.append(httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                  json=body, timeout=10).status_code)

    try:
        slow = [threading.Thread(target=call) for _ in range(2)]
        for t in slow:
            t.start()
        time.sleep(0.5)  # both are waiting on the stalled upstream
        started = time.monotonic()
        refused = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
        assert refused.status_code == 503 and time.monotonic() - started < 1.0
        for t in slow:
            t.join(10)
        assert results == [200, 200]
    finally:
        srv.should_exit = True
        thread.join(10)

