"""The standard-library transport: ``start_metrics_server``, a thread per connection.

It needs nothing beyond Python itself, so every library user can serve ``/metrics``,
``/health`` and any routes given (the store's, say). Keep-alive connections are reused
(HTTP/1.1); a streamed answer goes out with chunked transfer encoding, or, to an
HTTP/1.0 client, as it comes with the connection closed at its end. It binds to
127.0.0.1 unless told otherwise.

Example:
    >>> server = start_metrics_server(port=0)          # 0: any free port
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import socket
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from tinyllm._version import __version__
from tinyllm.errors import MetricsServerError
from tinyllm.http.routes import default_routes
from tinyllm.http.routing import METHODS, Headers, Response, Route, Router
from tinyllm.metrics.collector import get_metrics_collector
from tinyllm.settings import DEFAULT_METRICS_ADDR, DEFAULT_METRICS_PORT

__all__ = ["BACKLOG", "IDLE_TIMEOUT", "MetricsServer", "start_metrics_server"]

log = logging.getLogger("tinyllm.http")

#: Connections the kernel queues while the server is busy accepting (the standard
#: library's default of 5 turned away scrapers under 100 concurrent connections).
BACKLOG = 1024
#: Seconds an idle or silent connection is kept; then its thread is freed.
IDLE_TIMEOUT = 60.0
_DISCONNECTS = (ConnectionError, TimeoutError)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for scrapers that reuse connections
    disable_nagle_algorithm = True  # header and body go out at once, no delayed-ACK stall
    timeout = IDLE_TIMEOUT
    server: _Server
    server_version = f"tinyllm/{__version__}"

    def do_GET(self) -> None:
        self._answer()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, CONNECT, a made-up one) is the router's 405 with
        # Allow, not http.server's 501 page: a client's choice is never a 5xx.
        if name.startswith("do_"):
            return self.do_GET
        raise AttributeError(name)

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        response = self.server.router.dispatch(
            self.command, parts.path, parts.query, Headers(self.headers.items()))
        send_body = self.command != "HEAD"
        extra = {"Content-Length": str(len(response.body))}
        if self.command not in METHODS:
            # Its body (if any) was not read: the connection cannot carry another
            # request, and the client is told so (or it would try to reuse it).
            extra["Connection"] = "close"
        if response.rest is not None:
            self._stream(response, send_body)
            return
        self._head(response, extra)
        if send_body:
            self.wfile.write(response.body)

    def _head(self, response: Response, extra: Mapping[str, str]) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for key, value in itertools.chain(response.headers.items(), extra.items()):
            self.send_header(key, value)
        self.end_headers()

    def _stream(self, response: Response, send_body: bool) -> None:
        rest = response.rest
        assert rest is not None
        chunked = self.request_version != "HTTP/1.0"
        if not chunked:  # HTTP/1.0 has no chunks: the end of the body is the end of the connection
            self.close_connection = True
        try:
            self._head(response, {"Transfer-Encoding": "chunked"} if chunked
                       else {"Connection": "close"})
            if not send_body:
                return
            write = self.wfile.write
            for data in itertools.chain((response.body,), rest):
                if data:
                    write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if chunked:
                write(b"0\r\n\r\n")
        except _DISCONNECTS:
            raise  # the client went away: handle_error counts it
        except Exception:  # the status is already sent: cut the body short instead
            self.server.router.errors += 1
            self.close_connection = True
        finally:
            close = getattr(rest, "close", None)
            if close is not None:
                close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: scrapes every few seconds would flood stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG
    router: Router
    disconnects = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The standard library prints a traceback to stderr for anything a connection
        # raises. A client that went away mid-answer (a scraper timing out) is normal:
        # counted and logged at debug. Anything else is a bug: logged once per
        # occurrence with its traceback, through logging, not onto stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECTS):
            self.disconnects += 1
            log.debug("client %s went away mid-answer: %r", client_address, exc)
            with contextlib.suppress(Exception):  # counting must never fail the server
                get_metrics_collector().increment_http_disconnects("threaded")
            return
        self.router.errors += 1
        log.error("metrics server: unexpected error serving %s", client_address,
                  exc_info=exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running metrics server; ``stop()`` shuts it down (also on leaving a ``with``)."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        address = server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9090``."""
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    @property
    def routes(self) -> dict[str, Route]:
        """Path -> route; add to it to serve more (the store's endpoints do)."""
        return self._server.router.routes

    @property
    def disconnects(self) -> int:
        """Clients that went away before their answer was sent whole."""
        return self._server.disconnects

    @property
    def errors(self) -> int:
        """Routes that failed unexpectedly (answered 500, or cut short mid-stream)."""
        return self._server.router.errors

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_metrics_server(
    port: int = DEFAULT_METRICS_PORT,
    addr: str = DEFAULT_METRICS_ADDR,
    *,
    registry: CollectorRegistry | None = None,
    routes: Mapping[str, Route] | None = None,
) -> MetricsServer:
    """Serve ``/metrics``, ``/health`` and ``routes`` from a background thread.

    Raises MetricsServerError naming the address and port when it cannot bind (most
    often: the port is in use), and ValueError for a port outside 0-65535.

    Example:
        >>> with start_metrics_server(port=0) as server:
        ...     "/metrics" in server.routes and "/dashboard" in server.routes
        True
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
    server_class = _Server6 if ":" in addr else _Server
    try:
        server = server_class((addr, port), _Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise MetricsServerError(
                f"cannot serve metrics on {addr}:{port}: port {port} is already in use "
                "(choose another with --port, or stop what holds it)"
            ) from None
        raise MetricsServerError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from None
    server.router = Router({**default_routes(registry), **(routes or {})})
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="tinyllm-metrics",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)
