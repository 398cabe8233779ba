"""start_metrics_server, the standard-library transport: ports, binding, and what a new
user met under load (a first scrape without the catalog, tracebacks for clients that
went away, connections turned away by a backlog of 5)."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tinyllm import MetricsServerError, start_metrics_server
from tinyllm.http.threaded import BACKLOG
from tinyllm.metrics import MetricsCollector


def test_busy_port_raises_one_clear_error(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as first:
        expected = f"port {first.port} is already in use"
        with pytest.raises(MetricsServerError, match=expected):
            start_metrics_server(port=first.port, registry=registry)


def test_stop_frees_the_port(registry: CollectorRegistry) -> None:
    server = start_metrics_server(port=0, registry=registry)
    port = server.port
    server.stop()
    again = start_metrics_server(port=port, registry=registry)
    again.stop()


@pytest.mark.parametrize("bad", [-1, 70000, "9090", True])
def test_bad_port_values(bad: object) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 0 to 65535"):
        start_metrics_server(port=bad)  # type: ignore[arg-type]


def test_binds_loopback_by_default(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as s:
        assert s.host == "127.0.0.1"


FIRST_SCRAPE = textwrap.dedent("""
    import sys, urllib.request
    from tinyllm.http import asgi_app, start_metrics_server
    if sys.argv[1] == "threaded":
        server = start_metrics_server(port=0)
        print(urllib.request.urlopen(server.url + "/metrics").read().decode())
    else:
        import uvicorn, threading, time, socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        srv = uvicorn.Server(uvicorn.Config(asgi_app(), port=port, log_config=None))
        threading.Thread(target=srv.run, daemon=True).start()
        while not srv.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}/metrics"
        print(urllib.request.urlopen(url).read().decode())
""")


@pytest.mark.parametrize("transport", ["threaded", "asgi"])
def test_the_first_scrape_shows_the_catalog(transport: str) -> None:
    # In a fresh interpreter, nothing has touched the collector before the server starts:
    # the very first scrape must still carry every family's HELP/TYPE and system_info.
    out = subprocess.run([sys.executable, "-c", FIRST_SCRAPE, transport], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "# HELP tinyllm_requests_total Total LLM requests started." in out
    assert "# TYPE tinyllm_inference_ttft_seconds histogram" in out
    assert 'tinyllm_system_info{platform="' in out


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends a RST, as a scraper that times out and gives up does.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_go_away_are_counted_with_no_traceback(
    default_collector: MetricsCollector, capfd: pytest.CaptureFixture[str],
) -> None:
    with start_metrics_server(port=0) as server:
        # Some give up before asking, some before reading the (large) answer.
        for i in range(40):
            sock = socket.create_connection((server.host, server.port))
            if i % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.005)
            else:
                sock.sendall(b"GET /metr")
            _reset(sock)
        deadline = time.monotonic() + 10
        while server.disconnects < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{server.url}/health").status_code == 200
        disconnects, errors = server.disconnects, server.errors
    assert disconnects >= 10 and errors == 0
    counted = default_collector.registry.get_sample_value(
        "tinyllm_http_disconnects_total", {"transport": "threaded"})
    assert counted == disconnects
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Error" not in err


def test_two_hundred_concurrent_requests_all_get_200(registry: CollectorRegistry) -> None:
    assert BACKLOG >= 128
    with start_metrics_server(port=0, registry=registry) as server:
        # Every client connects first, then all ask at once: the kernel's accept queue
        # must hold them while the server accepts (a backlog of 5 timed some out).
        barrier = threading.Barrier(200)
        statuses: list[int | str] = []

        def client() -> None:
            try:
                # A connection is made by the kernel while the accept queue has room, so
                # a short connect timeout fails only when the backlog is too small.
                with httpx.Client(timeout=httpx.Timeout(30, connect=2.0)) as c:
                    barrier.wait(30)
                    statuses.append(c.get(f"{server.url}/health").status_code)
            except Exception as exc:
                statuses.append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert statuses == [200] * 200
