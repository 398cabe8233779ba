"""The gateway's server guards what uvicorn alone does not: a request head trickled in
byte by byte, and a head far too large."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fault_server import FaultServer, Reply
from tinyllm.metrics import MetricsCollector
from tinyllm.serve import protocol
from tinyllm.serve.server import make_server

from .conftest import config_for, sample
from .test_openai_api import MESSAGES, completion


@pytest.fixture
def served(upstream: FaultServer, default_collector: MetricsCollector,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    monkeypatch.setattr(protocol, "HEAD_TIMEOUT", 1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = make_server(config_for(upstream.url), port=port, grace=1)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


def test_a_head_sent_a_byte_at_a_time_is_dropped_within_the_deadline(
    served: tuple[str, int], default_collector: MetricsCollector,
) -> None:
    with socket.create_connection(served, timeout=10) as sock:
        started = time.monotonic()
        answer = b""
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                answer += sock.recv(4096)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3
    assert sample(default_collector)("tinyllm_gateway_requests_total",
                                     route="(connection)", status="408") == 1


def test_a_head_over_16_kib_is_431(served: tuple[str, int]) -> None:
    with socket.create_connection(served, timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):  # 40 x 1 KB of headers, sent as they would be
            try:
                sock.sendall(b"X-Junk: " + b"y" * 1000 + b"\r\n")
            except OSError:
                break
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_normal_requests_and_keep_alive_are_untouched(
    served: tuple[str, int], upstream: FaultServer,
) -> None:
    upstream.script(*(Reply(body=completion()) for _ in range(3)))
    host, port = served
    with httpx.Client(base_url=f"http://{host}:{port}") as client:
        for _ in range(3):
            r = client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
            assert r.status_code == 200
            time.sleep(0.6)  # idle between requests longer than half the head deadline
        assert client.get("/health").status_code == 200
