"""What the HTTP clients share: one httpx client per model client, one translation of
HTTP failures into ``ModelError``, and line reading that honours the deadlines.

Every failure a server or the network can produce becomes a ``ModelError`` whose
``error_type`` is one of ``tinyllm.errors.ERROR_TYPES`` and whose message names the URL:

======================================  ==============
connection refused / reset / DNS        connection
connect, read or token-gap timeout      timeout
whole-request deadline passed           timeout
HTTP 429 (``Retry-After`` kept)         rate_limited
HTTP 5xx (503 keeps ``Retry-After``)    server_error
HTTP 4xx                                bad_request
a line that is not the protocol's JSON  server_error
======================================  ==============
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import httpx

from tinyllm.errors import ModelError
from tinyllm.models._base import ModelClient
from tinyllm.resilience import Deadline, Timeouts

__all__ = ["HTTPBackend", "HTTPModelClient"]

_MAX_ERROR_BODY = 300


class HTTPBackend:
    """An httpx connection pool bound to one base URL, with the house error rules.

    URLs and the two timeout profiles are built once, here: per request only the
    payload is new (building them per call was a third of the client's overhead).
    """

    def __init__(
        self, base_url: str, timeouts: Timeouts, headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts
        self._client = httpx.Client(headers=dict(headers or {}), timeout=timeouts.httpx(),
                                    transport=transport)
        self._urls: dict[str, httpx.URL] = {}
        # A streamed call waits at most token_gap for each line; a whole answer, read.
        self._read_timeouts = {True: timeouts.token_gap, False: timeouts.read}
        self._profiles = {streamed: self._timeout(read)
                          for streamed, read in self._read_timeouts.items()}

    def close(self) -> None:
        self._client.close()

    def _timeout(self, read: float | None) -> httpx.Timeout:
        connect = self._timeouts.connect
        return httpx.Timeout(connect, read=read, write=connect, pool=connect)

    @contextmanager
    def _post(
        self, path: str, payload: Mapping[str, Any], deadline: Deadline, streamed: bool
    ) -> Iterator[tuple[httpx.Response, str]]:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        timeout = self._profiles[streamed]
        remaining = deadline.remaining()
        read = self._read_timeouts[streamed]
        if remaining is not None and (read is None or remaining < read):
            timeout = self._timeout(remaining)  # the whole-request limit is nearer
        text_url = self.base_url + path
        try:
            with self._client.stream("POST", url, json=payload, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise status_error(response, text_url)
                yield response, text_url
        except httpx.HTTPError as exc:
            raise transport_error(exc, text_url, streamed) from exc

    def post_json(
        self, path: str, payload: Mapping[str, Any], deadline: Deadline
    ) -> dict[str, Any]:
        """POST ``payload`` and return the JSON object answered.

        The body is read in chunks with the total deadline checked after each, so a
        server that trickles bytes cannot hold the caller past ``timeouts.total``.
        """
        with self._post(path, payload, deadline, False) as (response, url):
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                deadline.check(f"the whole request to {url} (timeouts.total)")
            return parse_json_line(b"".join(chunks), url)

    def post_lines(
        self, path: str, payload: Mapping[str, Any], deadline: Deadline, *, streamed: bool
    ) -> Iterator[str]:
        """POST ``payload`` and yield the response body's non-empty lines (NDJSON, SSE),
        split on ``"\\n"`` only, the total deadline checked per network chunk."""
        with self._post(path, payload, deadline, streamed) as (response, url):
            yield from _lines(response.iter_bytes(), deadline,
                              f"the whole request to {url} (timeouts.total)")


def _lines(chunks: Iterator[bytes], deadline: Deadline, what: str) -> Iterator[str]:
    """The non-empty lines of a body that arrives in ``chunks``, split on ``"\\n"`` only.

    Not httpx's ``iter_lines``: that splits like ``str.splitlines``, also on U+2028,
    U+2029 and U+0085, which JSON carries raw inside strings, so a token holding one
    would tear its line in two. The deadline is checked per network chunk as well as per
    line, so one endless line trickled byte by byte cannot outlast ``timeouts.total``.
    """
    pending = bytearray()
    for chunk in chunks:
        deadline.check(what)
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, rest = pending.split(b"\n")
        pending = rest
        for raw in complete:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if line.strip():
                yield line
            deadline.check(what)
    line = pending.rstrip(b"\r").decode("utf-8", "replace")
    if line.strip():
        yield line


class HTTPModelClient(ModelClient):
    """A ``ModelClient`` whose backend is a server: one ``HTTPBackend`` per client."""

    def __init__(
        self, base_url: str, model: str, *, headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None, **client_options: Any,
    ) -> None:
        super().__init__(model, **client_options)
        self._http = HTTPBackend(base_url, self.timeouts, headers=headers, transport=transport)
        self.base_url = self._http.base_url

    @property
    def backend(self) -> str:
        return self.base_url

    def close(self) -> None:
        self._http.close()


def transport_error(exc: httpx.HTTPError, url: str, streamed: bool = False) -> ModelError:
    """A network-level failure as ``ModelError`` naming the URL."""
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting",
            httpx.PoolTimeout: "waiting for a connection",
            httpx.WriteTimeout: "sending the request",
        }.get(type(exc), "waiting for the next token" if streamed else "waiting for the answer")
        return ModelError(f"timed out {what} from {url}", error_type="timeout")
    if isinstance(exc, httpx.ConnectError):
        return ModelError(f"cannot reach {url}: {_reason(exc)}", error_type="connection")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return ModelError(f"connection to {url} broke: {_reason(exc)}", error_type="connection")
    return ModelError(f"request to {url} failed: {_reason(exc)}", error_type="connection")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.removeprefix("[Errno 111] ")


def status_error(response: httpx.Response, url: str) -> ModelError:
    """An HTTP error status as ``ModelError`` with the server's own message."""
    code = response.status_code
    message = _server_message(response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if code == 429:
        kind = "rate_limited"
    elif code >= 500:
        kind = "server_error"
    else:
        kind = "bad_request"
    detail = f": {message}" if message else ""
    return ModelError(
        f"{url} answered HTTP {code}{detail}", error_type=kind, status_code=code,
        retry_after=retry_after if code in (429, 503) else None,
    )


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_ERROR_BODY]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI: {"error": {"message": ...}}
        error = error.get("message")
    text = str(error if error is not None else body)
    return text[:_MAX_ERROR_BODY]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Example:
        >>> parse_retry_after("2"), parse_retry_after(None), parse_retry_after("soon")
        (2.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if seconds == seconds else None


def parse_json_line(line: str | bytes, url: str) -> dict[str, Any]:
    """One protocol line (or body) as a JSON object, else a ``server_error`` naming
    the URL."""
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ModelError(
            f"{url} sent something that is not a JSON object: {line[:80]!r}",
            error_type="server_error",
        )
    return value


def count_field(value: Any) -> int | None:
    """A token count from a response field, or None when it is missing or not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
