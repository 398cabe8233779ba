"""Upstreams over HTTP: any OpenAI-compatible server, through aiohttp.

aiohttp, not httpx: as the upstream client of a gateway on this 2-core machine it cost
~0.35-0.75 ms a request against httpx's ~2-3.5 ms (docs/gateway.md has the figures).
One session per event loop, kept alive; failures become ``ModelError`` with the house
``error_type`` (the same table as the model clients' ``tinyllm.models._http``), so the
breaker, the retries and the client-facing status all read one classification.

Example:
    >>> from tinyllm.serve.config import ModelRoute
    >>> up = OpenAIUpstream(ModelRoute("big", "openai", "http://127.0.0.1:8000/v1"))
    >>> up.url("/chat/completions")
    'http://127.0.0.1:8000/v1/chat/completions'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from tinyllm.errors import ModelError
from tinyllm.models._http import parse_retry_after
from tinyllm.resilience import Timeouts
from tinyllm.serve.config import ModelRoute

__all__ = ["OpenAIUpstream", "ndjson_batches", "sse_batches"]

_MAX_ERROR_BODY = 4096
_MAX_BODY = 64 * 2**20  # a whole answer larger than this is not an answer
_MAX_LINE = 16 * 2**20  # nor is one streamed event of this size


class OpenAIUpstream:
    """An OpenAI-compatible server (``route.base_url``, e.g. ``http://host:8000/v1``)."""

    def __init__(self, route: ModelRoute, timeouts: Timeouts | None = None) -> None:
        #: The lifecycle's provider label (``ollama`` for an Ollama server's /v1).
        self.provider = "openai"
        if route.base_url is None:
            raise ValueError(f"model {route.name!r}: base_url is required")
        self.route = route
        self.base_url = route.base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if route.api_key:
            self._headers["Authorization"] = f"Bearer {route.api_key}"
        self._urls: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        # sock_read bounds every read: the status line, a whole answer's body, and (for
        # a stream) the wait for the first event; later events wait token_gap each.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect,
                                              sock_read=self.timeouts.read)

    def url(self, path: str) -> str:
        found = self._urls.get(path)
        if found is None:
            found = self._urls[path] = self.base_url + path
        return found

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30,
                                             enable_cleanup_closed=True)
            session = self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, read_bufsize=2**20,
                timeout=self._timeout,
            )
        return session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self, path: str, payload: bytes, headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST ``payload`` and wait for the status and headers (``timeouts.connect`` to
        connect, then ``timeouts.read`` for each read); an error status is raised as
        ``ModelError`` with the server's own message."""
        url = self.url(path)
        merged = self._headers if not headers else {**self._headers, **headers}
        try:
            # aiohttp's own timers, not asyncio.timeout(): those cost ~10 % of a
            # gateway request's CPU here (current_task, rescheduling, per call).
            response = await self._session_now().post(url, data=payload, headers=merged,
                                                      timeout=self._timeout)
        except TimeoutError:  # aiohttp's ServerTimeoutError is one too
            raise ModelError(f"timed out waiting for the answer from {url}",
                             error_type="timeout") from None
        except aiohttp.ClientConnectorError as exc:
            raise ModelError(f"cannot reach {url}: {exc.os_error.strerror or exc}",
                             error_type="connection") from None
        except aiohttp.ClientError as exc:
            raise ModelError(f"request to {url} failed: {exc}", error_type="connection") from None
        if response.status >= 400:
            try:
                raise await _status_error(response, url)
            finally:
                response.release()
        return response

    async def read_json(self, response: aiohttp.ClientResponse) -> tuple[bytes, dict[str, Any]]:
        """The whole (non-streamed) answer: its bytes and the JSON object they hold."""
        url = str(response.url)
        try:
            body = await _read_all(response.content, _MAX_BODY)
        except TimeoutError:
            response.close()
            raise ModelError(f"timed out reading the answer from {url}",
                             error_type="timeout") from None
        except aiohttp.ClientError as exc:
            response.close()
            raise ModelError(f"connection to {url} broke: {exc}", error_type="connection") \
                from None
        except BaseException:  # cancelled: the client went away
            response.close()
            raise
        response.release()
        if len(body) > _MAX_BODY:
            raise ModelError(f"{url} answered more than {_MAX_BODY} bytes",
                             error_type="server_error")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ModelError(f"{url} answered something that is not a JSON object: "
                             f"{body[:80]!r}", error_type="server_error")
        return body, value


async def sse_batches(
    response: aiohttp.ClientResponse, token_gap: float | None,
) -> AsyncIterator[list[bytes]]:
    """The ``data:`` payloads of a Server-Sent Events body, ``[DONE]`` excluded, in the
    batches they arrived in (one network read: what came together goes on together);
    each read awaited at most ``token_gap`` seconds. A body that ends without ``[DONE]``
    is a cut stream (``ModelError`` connection)."""
    async for batch in _batches(response, token_gap, sse=True):
        yield batch


async def ndjson_batches(
    response: aiohttp.ClientResponse, token_gap: float | None,
) -> AsyncIterator[list[bytes]]:
    """The lines of a newline-delimited JSON body (Ollama's streams), batched as they
    arrived; a body that ends before a line with ``"done": true`` is a cut stream."""
    async for batch in _batches(response, token_gap, sse=False):
        yield batch


_DONE_MARKS = (b'"done":true', b'"done": true')


async def _batches(
    response: aiohttp.ClientResponse, token_gap: float | None, *, sse: bool,
) -> AsyncIterator[list[bytes]]:
    url = str(response.url)
    content = response.content
    complete = False
    pending = b""
    ending = "[DONE]" if sse else 'a line with "done": true'
    try:
        while not complete:
            try:
                async with asyncio.timeout(token_gap):
                    data = await content.readany()
            except TimeoutError:
                raise ModelError(f"timed out waiting for the next token from {url}",
                                 error_type="timeout") from None
            except aiohttp.ClientError as exc:
                raise ModelError(f"the stream from {url} broke: {exc}",
                                 error_type="connection") from None
            if not data:
                if not sse and pending.strip():
                    data = b"\n"  # a last line without its newline
                else:  # the end of the body, and no end mark: cut short
                    raise ModelError(f"the stream from {url} ended without {ending}",
                                     error_type="connection")
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            if len(pending) > _MAX_LINE:
                raise ModelError(f"{url} sent a line longer than {_MAX_LINE} bytes",
                                 error_type="server_error")
            batch = []
            for line in lines:
                if sse:
                    if not line.startswith(b"data:"):
                        continue  # blank lines, comments (":"), event names, ids
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        complete = True
                        break
                else:
                    payload = line.strip()
                    if any(mark in payload for mark in _DONE_MARKS):
                        complete = True
                if payload:
                    batch.append(payload)
                if complete:
                    break
            if batch:
                yield batch
    finally:
        # Cut short (the client went away, a failure): close the connection, so the
        # upstream sees it and stops generating; whole: back to the pool.
        if complete:
            response.release()
        else:
            response.close()


async def _read_all(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The rest of a body, stopping once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _status_error(response: aiohttp.ClientResponse, url: str) -> ModelError:
    code = response.status
    try:
        raw = await asyncio.wait_for(response.content.read(_MAX_ERROR_BODY), 5.0)
    except (TimeoutError, aiohttp.ClientError):
        raw = b""
    message = _server_message(raw)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    kind = "rate_limited" if code == 429 else "server_error" if code >= 500 else "bad_request"
    detail = f": {message}" if message else ""
    return ModelError(f"{url} answered HTTP {code}{detail}", error_type=kind, status_code=code,
                      retry_after=retry_after if code in (429, 503) else None)


def _server_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI: {"error": {"message": ...}}
        error = error.get("message")
    return str(error if error is not None else body)[:300]
