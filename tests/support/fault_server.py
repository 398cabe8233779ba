"""A scripted, misbehaving HTTP server on a real socket, for fault tests of HTTP clients.

Each request that arrives takes the next ``Reply`` from the script (or the fallback once
the script is used up). A reply says what to answer and how badly: the status, headers and
body; a stall before the first byte or between streamed pieces; a connection dropped
after N pieces; and the body's framing (chunked, Content-Length, or ended by closing the
connection). Every request is recorded (``exchanges``), with whether its whole answer was
written and whether the client hung up first, so a test can count what reached the server
and see who gave up.

Example:
    >>> with FaultServer() as server:                                   # doctest: +SKIP
    ...     server.script(Reply(status=500, body=b'{"error":"boom"}'),
    ...                   Reply(body=sse({"choices": []}, DONE)))
    ...     client = OpenAIClient(server.url + "/v1", "m")
    ...     len(server.exchanges)

Stalls wait on an event that ``close()`` sets, so a test never waits for a stall to run
out after it is over.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

import pytest

__all__ = [
    "DONE",
    "Exchange",
    "FaultServer",
    "Framing",
    "Reply",
    "fault_server",
    "ndjson",
    "sse",
]

Framing = Literal["chunked", "length", "close"]

#: The SSE event that ends an OpenAI stream.
DONE = "data: [DONE]\n\n"


def sse(*events: Mapping[str, Any] | str) -> tuple[bytes, ...]:
    """SSE pieces, one per event: a mapping becomes ``data: <json>\\n\\n``; a str is sent
    as given (``DONE``, a ``": keep-alive\\n\\n"`` comment, an ``event:`` line, ...).

    Example:
        >>> sse({"a": 1}, DONE)
        (b'data: {"a": 1}\\n\\n', b'data: [DONE]\\n\\n')
    """
    return tuple(
        (e if isinstance(e, str) else f"data: {json.dumps(e)}\n\n").encode() for e in events
    )


def ndjson(*objects: Mapping[str, Any] | str) -> tuple[bytes, ...]:
    """NDJSON pieces, one line per object (a str is sent as the line, for malformed ones).

    Example:
        >>> ndjson({"done": True}, "not json")
        (b'{"done": true}\\n', b'not json\\n')
    """
    return tuple(
        ((o if isinstance(o, str) else json.dumps(o)) + "\n").encode() for o in objects
    )


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        status: the HTTP status.
        body: the whole body (bytes), or the pieces of a streamed one (a tuple of bytes,
            each written and flushed on its own).
        content_type: the Content-Type header.
        headers: more headers, e.g. ``{"Retry-After": "1"}``.
        stall_before: seconds to wait before sending anything (not even the status line).
        stall_between: seconds to wait before each piece after the first.
        close_after: drop the connection (a FIN, mid-body) after this many pieces.
        framing: ``"chunked"`` (default for pieces), ``"length"`` (default for a whole
            body: Content-Length) or ``"close"`` (no length; the body ends when the
            connection closes, as HTTP/1.0 servers and some proxies do).
    """

    status: int = 200
    body: bytes | tuple[bytes, ...] = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    stall_before: float = 0.0
    stall_between: float = 0.0
    close_after: int | None = None
    framing: Framing | None = None

    @property
    def pieces(self) -> tuple[bytes, ...]:
        return self.body if isinstance(self.body, tuple) else (self.body,)


@dataclass
class Exchange:
    """A request the server received, and what became of its answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    completed: bool = False  # the whole answer was written
    client_gone: bool = False  # a write failed: the client had hung up

    @property
    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body)


Responder = Callable[[Exchange], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout, a closed stream) is what these tests are
        # about, not a server failure worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked, as real model servers speak
    server: _Server

    def setup(self) -> None:
        super().setup()
        # As Go's net/http and uvicorn do: each flushed piece leaves at once, instead of
        # waiting on the client's delayed ACK (a 40 ms stall per request on loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read ``exchanges``, not stderr

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        exchange = Exchange(
            method=self.command, path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        owner._record(exchange)
        reply = owner._responder(exchange)
        try:
            self._send(reply, exchange)
        except OSError:  # BrokenPipeError, ConnectionResetError: the client gave up
            exchange.client_gone = True
            self.close_connection = True
            owner.hung_up.set()

    def _send(self, reply: Reply, exchange: Exchange) -> None:
        stopping = self.server.owner._stopping
        if reply.stall_before and stopping.wait(reply.stall_before):
            self.close_connection = True
            return
        pieces = reply.pieces
        framing = reply.framing or ("chunked" if isinstance(reply.body, tuple) else "length")
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if framing == "length":
            self.send_header("Content-Length", str(sum(len(p) for p in pieces)))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        for i, piece in enumerate(pieces):
            if reply.close_after is not None and i >= reply.close_after:
                self._drop()
                return
            if i and reply.stall_between and stopping.wait(reply.stall_between):
                self._drop()
                return
            if framing == "chunked":
                if piece:  # an empty chunk would end the body
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
            self.wfile.flush()
        if reply.close_after is not None and reply.close_after <= len(pieces):
            self._drop()
            return
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        exchange.completed = True

    def _drop(self) -> None:
        """End the connection mid-body: the client reads EOF where more was promised."""
        self.close_connection = True
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


class FaultServer:
    """A real HTTP server on a free 127.0.0.1 port that answers from a script.

    ``script(*replies)`` queues answers for the next requests, in order; once they are
    used up every request gets ``fallback`` (default: a 500 saying nothing was scripted).
    ``exchanges`` lists what arrived. ``hung_up`` is set the first time a client hangs up
    while the server is still writing.
    """

    def __init__(self, *, fallback: Reply | None = None) -> None:
        self.fallback = fallback or Reply(status=500, body=b'{"error":"no reply scripted"}')
        self.exchanges: list[Exchange] = []
        self.hung_up = threading.Event()
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- the script -------------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self._queue.extend(replies)

    def respond(self, exchange: Exchange) -> Reply:
        """The answer to ``exchange``: the next scripted reply, else ``fallback``.
        Subclasses override this to choose by request."""
        with self._lock:
            return self._queue.popleft() if self._queue else self.fallback

    def _responder(self, exchange: Exchange) -> Reply:
        return self.respond(exchange)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    @property
    def requests(self) -> int:
        """How many requests reached the server."""
        with self._lock:
            return len(self.exchanges)

    # -- life ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fault-server", daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; stalls in progress end at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started ``FaultServer``, closed after the test."""
    with FaultServer() as server:
        yield server
