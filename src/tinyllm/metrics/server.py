"""The metrics HTTP server: ``/metrics``, ``/health`` and routes later pillars add.

``/metrics`` speaks the Prometheus text format, or OpenMetrics when the ``Accept``
header asks for it (prometheus_client's ``choose_encoder`` decides), gzipped when
``Accept-Encoding`` allows, and honours ``?name[]=...`` filters like prometheus_client's
own server. With ``PROMETHEUS_MULTIPROC_DIR`` set it serves the aggregate of every
worker process. It binds to 127.0.0.1 unless told otherwise.

Example:
    >>> server = start_metrics_server(port=0)          # 0: any free port
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.stop()
"""

from __future__ import annotations

import errno
import gzip
import itertools
import json
import socket
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from tinyllm._version import __version__
from tinyllm.errors import MetricsServerError
from tinyllm.settings import DEFAULT_METRICS_ADDR, DEFAULT_METRICS_PORT, multiprocess_dir

__all__ = ["MetricsServer", "Response", "Route", "exposition_registry", "start_metrics_server"]


@dataclass(frozen=True)
class Response:
    """What a route answers. With ``rest``, the answer is streamed: ``body`` first, then
    each piece of ``rest`` as it comes (chunked transfer encoding; an HTTP/1.0 client
    gets the pieces and the connection closed), so a large answer (the store's export
    of a million events) is never held in memory whole.

    Example:
        >>> Response(200, b"[", "application/json", rest=iter([b"1", b"]"])).status
        200
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    rest: Iterable[bytes] | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(payload, default=str).encode(), "application/json")


#: A route gets the parsed query string and the request headers.
Route = Callable[[dict[str, list[str]], Mapping[str, str]], Response]


def exposition_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: ``registry``; else, in multiprocess mode, a registry that
    aggregates every worker's files; else prometheus_client's ``REGISTRY``."""
    if registry is not None:
        return registry
    if multiprocess_dir():
        from prometheus_client import multiprocess

        aggregate = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return aggregate
    return REGISTRY


def _metrics_route(registry: CollectorRegistry) -> Route:
    def serve(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        encoder, content_type = choose_encoder(headers.get("Accept", ""))
        names = query.get("name[]")
        source = registry.restricted_registry(names) if names else registry
        return Response(200, encoder(source), content_type)

    return serve


def _health_route(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
    # The same checks as `tinyllm health`; degraded still answers 200 so that a probe
    # restarts a process only when it is really unhealthy.
    from tinyllm.health import UNHEALTHY, run_health_checks

    report = run_health_checks(timeout=2.0)
    report["version"] = __version__
    return Response.json(report, 503 if report["status"] == UNHEALTHY else 200)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for scrapers that reuse connections
    disable_nagle_algorithm = True  # header and body go out at once, no delayed-ACK stall
    server: _Server
    server_version = f"tinyllm/{__version__}"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        route = self.server.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.server.routes))
            response = Response.json({"error": f"no route {path!r}; try {known}"}, 404)
        else:
            try:
                query = parse_qs(parts.query, keep_blank_values=True, max_num_fields=100)
                response = route(query, dict(self.headers.items()))
            except ValueError as exc:  # a malformed query string is the client's error
                response = Response.json({"error": str(exc)}, 400)
            except Exception:  # never let a bug kill the server thread
                self.server.errors += 1
                response = Response.json({"error": "internal error"}, 500)
        if response.rest is not None:
            self._stream(response, send_body)
            return
        body = response.body
        headers = dict(response.headers)
        if "gzip" in self.headers.get("Accept-Encoding", "") and len(body) > 512:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _stream(self, response: Response, send_body: bool) -> None:
        rest = response.rest
        assert rest is not None
        chunked = self.request_version != "HTTP/1.0"
        compressor = None
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            compressor = zlib.compressobj(5, zlib.DEFLATED, 31)  # 31: the gzip format
            self.send_header("Content-Encoding", "gzip")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:  # HTTP/1.0 has no chunks: the end of the body is the end of the connection
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        write = self.wfile.write
        try:
            if not send_body:
                return
            for piece in itertools.chain((response.body,), rest):
                # A sync flush per piece: each reaches the client as it is made, not when
                # the compressor's buffer fills (pieces are large; the cost is bytes).
                data = piece if compressor is None else \
                    compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)
                if data:
                    write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if compressor is not None:
                data = compressor.flush()
                write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            if chunked:
                write(b"0\r\n\r\n")
        except (ConnectionError, TimeoutError):  # the client went away: nothing to tell
            self.close_connection = True
        except Exception:  # the status is already sent: cut the body short instead
            self.server.errors += 1
            self.close_connection = True
        finally:
            close = getattr(rest, "close", None)
            if close is not None:
                close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: scrapes every few seconds would flood stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Route]
    errors = 0


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
        return self._server.routes

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
    """Serve metrics from a background thread and return its handle.

    Raises MetricsServerError naming the address and port when it cannot bind (most
    often: the port is in use), and ValueError for a port outside 0-65535.
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
    server.routes = {
        "/metrics": _metrics_route(exposition_registry(registry)),
        "/health": _health_route,
        **(routes or {}),
    }
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.25}, name="tinyllm-metrics",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)
