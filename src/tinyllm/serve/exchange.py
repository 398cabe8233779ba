"""One HTTP exchange of the gateway's model APIs: reading the request (with its limits)
and writing the answer (whole or streamed, with the request id and the overhead).

Example:
    >>> scope = {"headers": [(b"x-request-id", b"abc-1")]}
    >>> request_id(scope)
    b'abc-1'
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from tinyllm.serve.errors import GatewayError

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_HEADER_BYTES",
    "RECEIVE_TIMEOUT",
    "ClientGone",
    "Exchange",
    "check_headers",
    "header",
    "read_body",
    "request_id",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The largest request body accepted (1 MiB), enforced while reading.
DEFAULT_MAX_BODY = 2**20
#: The most header bytes a request may carry (16 KiB): more is a 431.
MAX_HEADER_BYTES = 16 * 2**10
#: Seconds a client has to send its whole body.
RECEIVE_TIMEOUT = 10.0
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_JSON = (b"content-type", b"application/json")
# A body refused part way (too slow, too large) leaves the rest of it on the connection:
# closing it is the only way to be rid of a slow client and its bytes (uvicorn closes the
# connection after an answer that says so).
_CLOSE = ((b"connection", b"close"),)
# A client's X-Request-Id is kept when it is short and plain; else the gateway makes one.
_REQUEST_ID = re.compile(rb"[\w.:@/+=-]{1,128}")


class ClientGone(Exception):
    """The client went away before its request was read whole."""


class Exchange:
    """One HTTP exchange's answer, and the time spent waiting on the upstream."""

    __slots__ = (
        "began",
        "done",
        "gone",
        "request_id",
        "send",
        "sent",
        "status",
        "streaming",
        "upstream_wait",
    )

    def __init__(self, send: Send, began: float, request_id: bytes = b"") -> None:
        self.send = send
        self.began = began
        self.request_id = request_id
        self.upstream_wait = 0.0
        self.status = 0
        self.streaming = False
        self.sent = False
        self.gone = False
        self.done = False  # the answer is complete: a disconnect now changes nothing

    def overhead(self) -> float:
        return max(0.0, perf_counter() - self.began - self.upstream_wait)

    async def whole(self, status: int, body: bytes,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status, self.sent = status, True
        out = headers or [_JSON]
        out.append((b"x-tinyllm-overhead-ms", b"%.3f" % (self.overhead() * 1000)))
        out.append((b"content-length", b"%d" % len(body)))
        if self.request_id:
            out.append((b"x-request-id", self.request_id))
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        await self.send({"type": "http.response.body", "body": body})

    async def error(self, err: GatewayError) -> None:
        await self.whole(err.status, err.body(), err.headers())

    async def start_stream(self) -> None:
        self.status, self.sent, self.streaming = 200, True, True
        headers = _SSE_HEADERS
        if self.request_id:
            headers = [*headers, (b"x-request-id", self.request_id)]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def event(self, payload: bytes) -> None:
        await self.send({"type": "http.response.body", "body": b"data: %b\n\n" % payload,
                         "more_body": True})

    async def events(self, payloads: list[bytes]) -> None:
        # What arrived together goes out in one write (each still its own event).
        body = b"".join(b"data: %b\n\n" % p for p in payloads)
        await self.send({"type": "http.response.body", "body": body, "more_body": True})

    async def comment(self) -> None:
        await self.send({"type": "http.response.body", "body": b": keep-alive\n\n",
                         "more_body": True})

    async def end_stream(self) -> None:
        await self.send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def stream_error(self, err: GatewayError) -> None:
        # The status is out: the error goes as an event the OpenAI SDK raises on.
        await self.send({"type": "http.response.body", "more_body": False,
                         "body": b"data: %b\n\n" % err.body()})


def request_id(scope: Scope) -> bytes:
    """The client's ``X-Request-Id`` when it is a sane one, else a new one."""
    given = header(scope, b"x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex.encode()


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def check_headers(scope: Scope) -> None:
    size = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
    if size > MAX_HEADER_BYTES:
        raise GatewayError(431, f"the request's headers are {size:,} bytes; at most "
                                f"{MAX_HEADER_BYTES:,}", code="headers_too_large")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 as soon as it is passed, declared
    or not), within ``RECEIVE_TIMEOUT`` seconds (408)."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise GatewayError(400, "content-length is not a number",
                                   code="invalid_request") from None
            if declared > limit:
                raise _too_large(declared, limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                body = message.get("body", b"")
                size += len(body)
                if size > limit:
                    raise _too_large(size, limit)
                chunks.append(body)
                if not message.get("more_body"):
                    break
    except TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within "
                                f"{RECEIVE_TIMEOUT:g} s", code="request_timeout",
                           headers=_CLOSE) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than {limit:,} bytes "
                             f"({size:,} or more)", code="body_too_large", headers=_CLOSE)


