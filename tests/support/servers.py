"""Real servers for tests: a route table served by either of tinyllm's transports, on a
free loopback port, stopped afterwards."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from tinyllm.http import Route, asgi_app, default_routes, start_metrics_server

#: The transports every route test runs on.
TRANSPORTS = ("threaded", "asgi")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def uvicorn_server(app: Any, **config: Any) -> Iterator[str]:
    """``app`` under a real uvicorn on a free port; yields its base URL."""
    port = free_port()
    # log_config=None: uvicorn leaves the process's logging (and other tests') alone.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serving(transport: str, routes: Mapping[str, Route],
            registry: CollectorRegistry | None = None, *, http: str = "auto") -> Iterator[str]:
    """``/metrics``, ``/health`` and ``routes`` on ``transport``; yields the base URL.

    ``registry`` (default: a fresh one) is what ``/metrics`` shows; ``http`` is uvicorn's
    HTTP implementation for the ASGI transport (``auto``: httptools when installed).
    """
    registry = registry if registry is not None else CollectorRegistry()
    if transport == "threaded":
        with start_metrics_server(port=0, registry=registry, routes=routes) as server:
            yield server.url
    elif transport == "asgi":
        with uvicorn_server(asgi_app({**default_routes(registry), **routes}),
                            http=http) as url:
            yield url
    else:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")


def http_1_0_get(url: str, target: str) -> tuple[bytes, bytes]:
    """``GET target`` as an HTTP/1.0 client: ``(head, body)``, the body read until the
    server closes the connection (HTTP/1.0 has no chunks: the close is the body's end)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.0\r\n\r\n" % target.encode())
        received = b""
        while data := sock.recv(65536):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def wait_ready(url: str, proc: Any = None, timeout: float = 60.0) -> None:
    """Until ``url/ready`` answers 200 (a `tinyllm serve` that has loaded); fails when
    ``proc`` (its process) exits first or ``timeout`` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never got ready within {timeout:g} s")
        time.sleep(0.2)
