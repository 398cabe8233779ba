"""uvicorn's httptools protocol with the two guards a gateway needs and uvicorn lacks.

uvicorn keeps a connection whose client sends its request head one byte a second open
indefinitely (seen here: 23 s and more), and answers a request with a 100 KB header. So:

* **a head deadline**: a request's line and headers must arrive within
  ``HEAD_TIMEOUT`` seconds of its first byte (of the connection, for the first request),
  else ``408`` and the connection is closed;
* **a head cap**: more than ``MAX_HEAD_BYTES`` before the headers end is ``431`` and the
  connection is closed, before uvicorn has built anything from it;
* **shedding at the limit**: at ``limit_concurrency`` connections, a new one closes the
  oldest that serve nothing (idle, or a head still trickling in), so a flood of idle
  connections cannot shut real requests out (uvicorn alone answers them all 503).

Each refusal is counted in ``tinyllm_gateway_requests_total{route="(connection)"}``.
The body has its own limits in the app (size while reading, a receive deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tinyllm.metrics.collector import get_metrics_collector

__all__ = ["HEAD_TIMEOUT", "MAX_HEAD_BYTES", "GuardedHttpToolsProtocol"]

#: Seconds a request's line and headers may take to arrive.
HEAD_TIMEOUT = 10.0
#: The most bytes a request's line and headers may take (16 KiB, like the app's cap).
MAX_HEAD_BYTES = 16 * 2**10
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a deadline and a size cap on each request's head."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._opened = self.loop.time()
        self._start_head()
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self._shed(len(self.connections) - limit + 1)

    def _idle(self) -> bool:
        """No request is being served here, and no byte of the next one has come."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and (
            self._head_timer is None or self._head_bytes == 0)

    def _shed(self, count: int) -> None:
        """Close ``count`` connections that serve nothing, to let this one in.

        uvicorn answers every request 503 while ``limit_concurrency`` connections are
        open, idle or not: a flood of connections that never send a request would shut
        real clients out until the head deadline closed them. At the limit, a new
        connection closes the oldest that serve nothing (idle first, then heads still
        trickling in); requests being served are never touched.
        """
        idle, heads = [], []
        for other in self.connections:
            if other is self or not isinstance(other, GuardedHttpToolsProtocol):
                continue
            if other._idle():
                idle.append(other)
            elif other.cycle is None or other.cycle.response_complete:
                heads.append(other)
        for group in (idle, heads):
            if count <= 0:
                return
            for other in heapq.nsmallest(count, group, key=lambda p: p._opened):
                transport = other.transport
                if transport is not None and not transport.is_closing():
                    other._stop_head()
                    transport.close()
                    # uvicorn forgets it in connection_lost, a loop turn later: the
                    # connections that arrive meanwhile must not count it
                    self.connections.discard(other)
                    count -= 1

    def _start_head(self) -> None:
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._refuse, 408,
                                                    "the request's headers did not arrive "
                                                    f"within {HEAD_TIMEOUT:g} s")

    def _stop_head(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None:
            timer.cancel()

    def data_received(self, data: bytes) -> None:
        reading = self._head_timer is not None
        super().data_received(data)
        if reading or self._head_timer is not None:  # a head was read in this piece
            self._head_bytes += len(data)
            if self._head_timer is not None and self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, f"the request's line and headers are over "
                                  f"{MAX_HEAD_BYTES:,} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head()  # a keep-alive connection's next request

    def on_headers_complete(self) -> None:
        self._stop_head()
        # A head that arrived in one piece is parsed whole inside one data_received, so
        # the byte count above never sees it: its headers are measured here, and a head
        # over the cap is answered by a refusing app instead of the gateway (uvicorn
        # reads the app from the attribute when it starts the request's cycle).
        size = sum(len(k) + len(v) for k, v in self.headers) + len(self.url)
        if size <= MAX_HEAD_BYTES:
            super().on_headers_complete()
            return
        app, self.app = self.app, _refusal(431, f"the request's line and headers are "
                                                f"{size:,} bytes; at most "
                                                f"{MAX_HEAD_BYTES:,}")
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def _refuse(self, status: int, message: str) -> None:
        self._stop_head()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = _body(message)
        transport.write(b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\ncontent-length: %d\r\n\r\n%b"
                        % (status, _REASONS[status], len(body), body))
        transport.close()
        with contextlib.suppress(Exception):  # counting must never fail the server
            get_metrics_collector().record_gateway_answer("(connection)", status)


def _body(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": "request_head_refused"}})


def _refusal(status: int, message: str) -> Any:
    """An ASGI app answering ``status`` with ``message`` and closing the connection."""
    body = _body(message)

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"connection", b"close"),
            (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        with contextlib.suppress(Exception):  # counting must never fail the server
            get_metrics_collector().record_gateway_answer("(connection)", status)

    return refuse
