"""`tinyllm serve` as a real process, against hostile clients and broken upstreams.

Each test drives the documented limits (docs/gateway.md: a request head has 10 s and
16 KiB, a body 10 s and 1 MiB, 2,048 connections, the upstream's read timeout) from the
outside, over real sockets, and records what it measured. Nothing a client sends may be
answered 5xx; an upstream's failure is a 502/503/504 in OpenAI's error shape.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, ModelUpstream, process_figures

HEAD_TIMEOUT = 10.0  # tinyllm.serve.protocol.HEAD_TIMEOUT, as documented
BODY_TIMEOUT = 10.0  # tinyllm.serve.exchange.RECEIVE_TIMEOUT
SLACK = 1.5  # seconds of scheduling on two shared cores
CHAT = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}
Figure = Callable[..., None]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                         ModelUpstream]]:
    with ModelUpstream() as upstream, GatewayProcess(
            upstream.url, tmp_path_factory.mktemp("gw")) as gw:
        yield gw, upstream


def _read_all(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``limit`` s), and when it closed."""
    sock.settimeout(limit)
    began, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - began


def _status(raw: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(match.group(1)) if match else 0


def _trickle(port: int, head: bytes, trickled: bytes, result: dict[str, object]) -> None:
    """Send ``head`` at once, then ``trickled`` a byte a second until the server answers
    or closes; ``result`` gets the status and the seconds from the first byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        began = time.monotonic()
        sock.sendall(head)
        answer = b""
        for byte in trickled:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                answer = sock.recv(65536)
                break  # an answer, or b"" (closed)
            except TimeoutError:
                continue
        if not trickled:  # nothing more to send: wait on the server alone
            sock.settimeout(30.0)
            answer = sock.recv(65536)
        result["seconds"] = time.monotonic() - began
        # cut: the answer, then the connection closed (a slow client's remaining bytes
        # must not keep it open)
        rest, waited = _read_all(sock, 3.0) if answer else (b"", 0.0)
        result["closed"] = waited < 3.0
        result["status"] = _status(answer + rest)
        result["answer"] = answer + rest


def test_slowloris_heads_and_bodies_are_cut_within_the_documented_timeouts(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure,
) -> None:
    gw, _ = gateway
    body = b'{"model": "ok", "messages": [{"role": "user", "content": "hi"}]}' * 4
    request_head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    cases = {
        # the request line and headers, a byte a second
        "head": (b"", request_head + body),
        # a whole head, then the body a byte a second
        "body": (request_head, body),
        # a Content-Length larger than what is sent: the body never ends
        "short body": (request_head + body[:20], b""),
        # the same, while the client keeps the connection busy with bytes that never
        # complete it
        "long body": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 100000\r\nContent-Type: application/json\r\n\r\n",
                      b"x" * 40),
    }
    results: dict[str, dict[str, object]] = {k: {} for k in cases}
    threads = [threading.Thread(target=_trickle, args=(gw.port, *cases[k], results[k]))
               for k in cases]
    for t in threads:
        t.start()
    # "short body" sends nothing more: it waits on the server alone.
    for t in threads:
        t.join(40)
    for name, limit in (("head", HEAD_TIMEOUT), ("body", BODY_TIMEOUT),
                        ("short body", BODY_TIMEOUT), ("long body", BODY_TIMEOUT)):
        seconds = float(results[name]["seconds"])  # type: ignore[arg-type]
        status = results[name]["status"]
        figure(f"slowloris ({name}): cut after", f"{seconds:.1f} s",
               f"<= {limit:g} s + {SLACK:g}", seconds <= limit + SLACK and status == 408)
        assert status == 408, (name, results[name])
        assert seconds <= limit + SLACK, (name, seconds)


def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # refused and closed before reading it all
            sock.sendall(data)
        answer, _ = _read_all(sock, wait)
        return answer


def test_oversized_and_lying_bodies_and_headers_are_refused_never_5xx(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure,
) -> None:
    gw, _ = gateway
    url = gw.url
    big = b'{"model": "ok", "messages": [{"role": "user", "content": "' + b"x" * 2**20 + b'"}]}'
    # declared over the limit
    r = httpx.post(f"{url}/v1/chat/completions", content=big,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    # chunked, no length: enforced while reading
    r = httpx.post(f"{url}/v1/chat/completions", content=iter([big[:2**19], big[2**19:]]),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    # a Content-Length smaller than the body: the rest is a malformed next request
    body = b'{"model": "ok", "messages": [{"role": "user", "content": "hi"}]}'
    answer = _raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 10\r\n\r\n" + body)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3})", answer)]
    assert statuses and all(400 <= s < 500 for s in statuses), answer[:300]
    # a Content-Length that is not a number
    answer = _raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 12abc\r\n\r\n" + body)
    assert 400 <= _status(answer) < 500, answer[:300]
    # a 100 KB header, on every kind of path (the model APIs, tinyllm's routes, Ollama's)
    refused = []
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                         ("GET", "/health"), ("GET", "/metrics"), ("GET", "/api/tags"),
                         ("GET", "/")):
        r = httpx.request(method, f"{url}{path}", json=CHAT if method == "POST" else None,
                          headers={"x-padding": "a" * 100_000})
        refused.append(r.status_code)
        assert r.status_code == 431, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["type"] == "invalid_request_error"
    # 16 KiB of headers in many small ones: refused too; just under the cap: served
    many = {f"x-h{i}": "v" * 100 for i in range(200)}
    assert httpx.get(f"{url}/health", headers=many).status_code == 431
    assert httpx.get(f"{url}/health", headers={"x-pad": "a" * 12_000}).status_code == 200
    figure("100 KB header: refused", f"{refused.count(431)}/{len(refused)} paths 431",
           "all 431", refused.count(431) == len(refused))
    figure("body over 1 MiB / lying Content-Length", "413 / 4xx", "4xx, never 5xx", True)
    # and the gateway still answers
    assert httpx.post(f"{url}/v1/chat/completions", json=CHAT).status_code == 200


def test_a_flood_of_idle_connections_costs_little_and_real_requests_still_go_through(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure,
) -> None:
    # More than the 2,048 connections the gateway serves at once: past the limit it
    # sheds the oldest idle ones instead of answering real requests 503.
    gw, _ = gateway
    n = 2300
    httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)  # warm
    before = process_figures(gw.pid)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        # until the gateway has taken every connection in (its fd count settles)
        during, deadline = process_figures(gw.pid), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = process_figures(gw.pid)
            if now["fds"] == during["fds"]:
                break
            during = now
        held = during["fds"] - before["fds"]  # the connections open now (at most 2,048)
        latencies = []
        with httpx.Client() as client:
            for _ in range(20):
                began = time.monotonic()
                r = client.post(f"{gw.url}/v1/chat/completions", json=CHAT)
                latencies.append(time.monotonic() - began)
                assert r.status_code == 200
        # idle connections have no request head: cut at the head deadline
        time.sleep(HEAD_TIMEOUT + SLACK)
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                s.recv(4096)  # the 408, or b"": either way the server has closed it
                closed += 1
            except TimeoutError:
                pass
            except OSError:
                closed += 1
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    after = process_figures(gw.pid)
    per_conn = (during["rss"] - before["rss"]) / max(held, 1)
    worst = max(latencies)
    figure("idle connection: memory each", f"{per_conn / 1024:.1f} KiB", "<= 64 KiB",
           per_conn <= 64 * 1024)
    figure(f"{n} idle connections: fds held", f"+{held}", "<= 2,048 (the limit)",
           held <= 2048 + 2)
    figure("real requests past the connection limit", f"20/20 answered, worst "
           f"{worst * 1000:.0f} ms", "all 200, <= 1 s", worst <= 1.0)
    figure("idle connections closed (shed or at the head deadline)", f"{closed}/{n}",
           f"all, <= "
           f"{HEAD_TIMEOUT:g} s", closed == n)
    figure("fds after the flood", f"{after['fds']} (before {before['fds']})", "back to before",
           after["fds"] <= before["fds"] + 2)
    assert per_conn <= 64 * 1024
    assert held <= 2048 + 2
    assert worst <= 1.0
    assert closed == n
    assert after["fds"] <= before["fds"] + 2


def _in_flight(url: str) -> float:
    """``tinyllm_active_requests`` summed: the lifecycle requests still open (each is
    one task of the gateway's; a leaked one would stay)."""
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(r'^tinyllm_active_requests\{[^}]*model="slow"[^}]*\} ([0-9.e+]+)$',
                       text, re.MULTILINE)
    assert found, "tinyllm_active_requests{model=\"slow\"} is not exposed"
    return sum(float(m) for m in found)


def _cancelled(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    match = re.search(r'tinyllm_inference_requests_total\{model="slow",status="cancelled"\} '
                      r'([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_clients_that_vanish_mid_stream_close_the_upstream_and_leak_nothing(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure,
) -> None:
    gw, upstream = gateway
    request = {"model": "slow", "stream": True,
               "messages": [{"role": "user", "content": "hi"}]}

    def vanish() -> None:
        with httpx.Client() as client, client.stream(
                "POST", f"{gw.url}/v1/chat/completions", json=request) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                break  # the first piece, then the client is gone

    vanish()  # warm: the upstream's connection pool, the first request's imports
    time.sleep(1.0)
    before = process_figures(gw.pid)
    cancelled_before = _cancelled(gw.url)
    gone_before = sum(e.client_gone for e in upstream.exchanges)
    n = 20
    for _ in range(n):
        vanish()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            _cancelled(gw.url) - cancelled_before < n
            or sum(e.client_gone for e in upstream.exchanges) - gone_before < n):
        time.sleep(0.2)
    cancelled = _cancelled(gw.url) - cancelled_before
    upstream_closed = sum(e.client_gone for e in upstream.exchanges) - gone_before
    time.sleep(0.5)
    after = process_figures(gw.pid)
    in_flight = _in_flight(gw.url)
    figure("vanished clients: requests still in flight after", f"{in_flight:.0f}", "0",
           in_flight == 0)
    figure("vanished clients: ended cancelled", f"{cancelled:.0f}/{n}", f"{n}/{n}",
           cancelled == n)
    figure("vanished clients: upstream stream closed", f"{upstream_closed}/{n}", f"{n}/{n}",
           upstream_closed == n)
    figure("vanished clients: fds / threads", f"{after['fds'] - before['fds']:+d} / "
           f"{after['threads'] - before['threads']:+d}", "+0 / +0",
           after["fds"] <= before["fds"] and after["threads"] <= before["threads"])
    assert cancelled == n
    assert upstream_closed == n
    assert in_flight == 0
    assert after["fds"] <= before["fds"]
    assert after["threads"] <= before["threads"]


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_an_upstream_that_answers_garbage_is_a_clean_502(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure, api: str,
) -> None:
    gw, _ = gateway
    statuses = []
    for model in ("badjson", "badsse", "badtype"):
        for stream in (False, True):
            messages = [{"role": "user", "content": "hi"}]
            path = "/v1/chat/completions" if api == "openai" else "/api/chat"
            r = httpx.post(f"{gw.url}{path}", json={"model": model, "stream": stream,
                                                     "messages": messages})
            statuses.append(r.status_code)
            assert r.status_code == 502, (model, stream, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/json")
            error = r.json()["error"]
            if api == "openai":
                assert set(error) == {"message", "type", "param", "code"}
                assert error["code"] == "upstream_error"
            else:
                assert isinstance(error, str)
            assert "Traceback" not in r.text
    figure(f"garbage upstream ({api}): 502 in the API's error shape",
           f"{statuses.count(502)}/{len(statuses)}", "all 502", statuses.count(502) == 6)


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_an_upstream_that_stalls_is_answered_504_at_the_documented_timeout(
    gateway: tuple[GatewayProcess, ModelUpstream], figure: Figure,
) -> None:
    # The read timeout is 120 s and a timeout is tried once more: ~240 s at most.
    gw, _ = gateway
    began = time.monotonic()
    r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=700,
                   json={"model": "stall", "messages": [{"role": "user", "content": "hi"}]})
    seconds = time.monotonic() - began
    figure("stalled upstream: answered after", f"{seconds:.0f} s", "<= 2 x 120 s + 5",
           r.status_code == 504 and seconds <= 245)
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert seconds <= 245

