"""OTLP receivers that misbehave on cue: real OTLP bytes on the wire, scripted answers.

- ``FaultyHttpReceiver``: ``POST /v1/traces`` and ``/v1/metrics`` (binary protobuf, as the
  OTLP/HTTP exporters send them); each request takes the next answer from ``script``
  (then ``default``): ``Ok()``, ``Status(503, retry_after="1")``, ``Hang()``.
- ``FaultyGrpcReceiver``: the OTLP ``TraceService``; answers ``Ok()``, ``Abort(code)``
  (optionally with a ``google.rpc.RetryInfo`` delay) or ``Hang()``.

Both record every attempt (when it arrived, what was answered, how many spans it held),
so a test can count retries and measure the gaps between them.

Example::

    with FaultyHttpReceiver(script=[Status(503, retry_after="1")]) as rx:
        ...  # export once: the first attempt gets 503, the retry 200
    assert [a.answer for a in rx.attempts] == ["503", "200"]
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["Abort", "Answer", "Attempt", "FaultyGrpcReceiver", "FaultyHttpReceiver", "Hang", "Ok",
           "ReceiverProcess", "Status",
           "http_receiver_process"]


@dataclass(frozen=True)
class Ok:
    """Accept the batch (200 / gRPC OK)."""


@dataclass(frozen=True)
class Status:
    """Answer an HTTP status (with ``Retry-After`` when given), body discarded."""

    code: int
    retry_after: str | None = None


@dataclass(frozen=True)
class Abort:
    """End the gRPC call with ``code``; ``retry_delay`` adds a RetryInfo trailer."""

    code: grpc.StatusCode
    retry_delay: float | None = None


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing for ``seconds`` (then close)."""

    seconds: float = 30.0


Answer = Ok | Status | Abort | Hang


@dataclass
class Attempt:
    """One export request as it arrived."""

    at: float  # time.monotonic()
    path: str
    spans: int
    answer: str


@dataclass
class _Script:
    script: list[Answer]
    default: Answer
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)

    def next(self) -> Answer:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def record(self, path: str, spans: int, answer: str) -> None:
        with self.lock:
            self.attempts.append(Attempt(time.monotonic(), path, spans, answer))

    def set_default(self, answer: Answer) -> None:
        with self.lock:
            self.default = answer


def _span_count(body: bytes) -> int:
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


class FaultyHttpReceiver(_Script):
    """An OTLP/HTTP receiver on a free loopback port that answers from a script."""

    def __init__(self, script: list[Answer] | None = None, default: Answer = Ok()) -> None:
        super().__init__(list(script or []), default)
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    spans = _span_count(body)
                    ok_body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    spans = 0
                    ok_body = (metrics_service_pb2.ExportMetricsServiceResponse()
                               .SerializeToString())
                answer = rx.next()
                if isinstance(answer, Hang):
                    rx.record(self.path, spans, "hang")
                    rx.released.wait(answer.seconds)
                    self.close_connection = True
                    return
                code = answer.code if isinstance(answer, Status) else 200
                rx.record(self.path, spans, str(code))
                data = ok_body if code == 200 else b""
                self.send_response(code)
                # One request per connection: a receiver that goes down (ReceiverProcess
                # "down") then refuses the next export, as a dead collector does.
                self.close_connection = True
                self.send_header("Connection", "close")
                self.send_header("Content-Type", "application/x-protobuf")
                if isinstance(answer, Status) and answer.retry_after is not None:
                    self.send_header("Retry-After", answer.retry_after)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> FaultyHttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, rx: FaultyGrpcReceiver) -> None:
        self.rx = rx

    def Export(self, request: Any, context: Any) -> Any:
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        answer = self.rx.next()
        if isinstance(answer, Hang):
            self.rx.record("Export", spans, "hang")
            self.rx.released.wait(answer.seconds)
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver hung")
        if isinstance(answer, Abort):
            self.rx.record("Export", spans, answer.code.name)
            if answer.retry_delay is not None:
                whole = int(answer.retry_delay)
                info = RetryInfo(retry_delay=Duration(
                    seconds=whole, nanos=int((answer.retry_delay - whole) * 1e9)))
                context.set_trailing_metadata(
                    (("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(answer.code, f"scripted {answer.code.name}")
        self.rx.record("Export", spans, "OK")
        return trace_service_pb2.ExportTraceServiceResponse()


class FaultyGrpcReceiver(_Script):
    """An OTLP/gRPC trace receiver on a free loopback port that answers from a script."""

    def __init__(self, script: list[Answer] | None = None, default: Answer = Ok()) -> None:
        super().__init__(list(script or []), default)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self),
                                                                  self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyGrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._server.stop(grace=None)


def _parse(spec: str) -> Answer:
    """``ok``, ``hang``, ``503`` or ``503:1`` (a status and its Retry-After)."""
    if spec == "ok":
        return Ok()
    if spec == "hang":
        return Hang(3600.0)
    code, _, retry_after = spec.partition(":")
    return Status(int(code), retry_after or None)


class ReceiverProcess:
    """A ``FaultyHttpReceiver`` in a process of its own (so its work does not share the
    measuring process's GIL), whose answer can be switched between requests:
    ``set("ok" | "hang" | "503" | "503:1" | "down" | "up")``; ``down`` closes the
    listening socket (connections are refused), ``up`` listens again on the same port."""

    def __init__(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ,
               "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.otlp_faults"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, env=env)
        self.base_url = self._read()
        if not self.base_url.startswith("http://"):
            raise RuntimeError(f"the receiver process did not start: {self.base_url!r}")

    def _read(self) -> str:
        assert self._proc.stdout is not None
        return self._proc.stdout.readline().decode().strip()

    def set(self, spec: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(spec.encode() + b"\n")
        self._proc.stdin.flush()
        if self._read() != "done":
            raise RuntimeError(f"the receiver process did not take {spec!r}")

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


@contextmanager
def http_receiver_process() -> Iterator[ReceiverProcess]:
    """A ``ReceiverProcess``, answering 200 until told otherwise; stopped afterwards."""
    proc = ReceiverProcess()
    try:
        yield proc
    finally:
        proc.close()


def _serve_commands() -> None:
    port = 0
    rx: FaultyHttpReceiver | None = None

    def listen() -> FaultyHttpReceiver:
        nonlocal port
        new = FaultyHttpReceiver(default=answer)
        if port:
            # The same port again (the OS lets a listening socket rebind at once).
            new._httpd.server_close()
            ThreadingHTTPServer.allow_reuse_address = True
            new._httpd = ThreadingHTTPServer(("127.0.0.1", port), new._httpd.RequestHandlerClass)
            new._httpd.daemon_threads = True
            new._thread = threading.Thread(target=new._httpd.serve_forever,
                                           kwargs={"poll_interval": 0.02}, daemon=True)
            new.port, new.base_url = port, f"http://127.0.0.1:{port}"
        port = new.port
        return new.__enter__()

    answer: Answer = Ok()
    rx = listen()
    print(rx.base_url, flush=True)
    for line in sys.stdin:
        spec = line.strip()
        if spec == "down":
            if rx is not None:
                rx.__exit__()
                rx = None
        elif spec == "up":
            if rx is None:
                rx = listen()
        else:
            answer = _parse(spec)
            if rx is not None:
                rx.released.set()  # let go of hung requests
                rx.released = threading.Event()
                rx.set_default(answer)
        print("done", flush=True)
    if rx is not None:
        rx.__exit__()


if __name__ == "__main__":
    _serve_commands()
