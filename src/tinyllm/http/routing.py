"""Routes written once, for any transport: the request and answer types and the dispatcher.

A route is a plain function of the parsed query string and the request headers that
returns a ``Response``. ``Router.dispatch`` does everything around it that both
transports need alike: the path lookup (404 naming the paths there are), the method
(405 for anything but GET and HEAD), the query string (400 when malformed), a route's
``ValueError`` (400, its message as the error), any other exception (500, logged with
its traceback), gzip when the client accepts it, and the routes' OpenAPI description
at ``/openapi.json`` (``tinyllm.http.openapi``). The transports
(``tinyllm.http.threaded`` on the standard library, ``tinyllm.http.asgi`` for ASGI
servers) only move bytes.

Example:
    >>> router = Router({"/hello": lambda query, headers: Response.json({"hi": 1})})
    >>> router.dispatch("GET", "/hello", "", Headers({})).body
    b'{"hi": 1}'
    >>> router.dispatch("GET", "/nope", "", Headers({})).status
    404
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

__all__ = ["METHODS", "Headers", "Response", "Route", "Router"]

log = logging.getLogger("tinyllm.http")

#: The methods routes answer; anything else is a 405.
METHODS = ("GET", "HEAD")
_MAX_QUERY_FIELDS = 100
# Bodies smaller than this go out as they are: gzip would save little and cost a header.
_GZIP_MIN_BYTES = 512
_GZIP_LEVEL = 5


@dataclass(frozen=True)
class Response:
    """What a route answers. With ``rest``, the answer is streamed: ``body`` first, then
    each piece of ``rest`` as it comes, so a large answer (the store's export of a
    million events) is never held in memory whole. A ``rest`` that raises part way cuts
    the answer short: the client sees a broken body, never a short one that looks whole.

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
        """A JSON answer.

        Example:
            >>> Response.json({"error": "no"}, 400).body
            b'{"error": "no"}'
        """
        return cls(status, json.dumps(payload, default=str).encode(), "application/json")


#: A route gets the parsed query string (``parse_qs``) and the request headers.
Route = Callable[[dict[str, list[str]], Mapping[str, str]], Response]


class Headers(Mapping[str, str]):
    """Request headers, looked up in any case (``Accept`` or ``accept``).

    Example:
        >>> Headers([("Accept-Encoding", "gzip")])["accept-encoding"]
        'gzip'
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = {k.lower(): v for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), "application/json",
                    headers or {})


def _accepts_gzip(headers: Mapping[str, str]) -> bool:
    for part in headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _gzip_stream(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    # A sync flush per piece: each reaches the client as it is made, not when the
    # compressor's buffer fills (pieces are large; the cost is a few bytes each).
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip format
    try:
        for data in itertools.chain((first,), rest):
            out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            if out:
                yield out
        yield compressor.flush()
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def _encode(response: Response, headers: Mapping[str, str]) -> Response:
    """``response`` gzipped when the client accepts it and it is worth it."""
    if not _accepts_gzip(headers) or "Content-Encoding" in response.headers:
        return response
    extra = {**response.headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
    if response.rest is not None:
        # The first compressed piece goes out as the body: the status still waits for
        # the route's first piece, as without gzip.
        pieces = _gzip_stream(response.body, response.rest)
        return replace(response, body=next(pieces), rest=pieces, headers=extra)
    if len(response.body) < _GZIP_MIN_BYTES:
        return response
    return replace(response, body=gzip.compress(response.body, compresslevel=_GZIP_LEVEL),
                   headers=extra)


class Router:
    """Paths to routes, and the dispatch both transports share.

    ``routes`` is a plain dict: add to it to serve more. ``errors`` counts routes that
    raised something other than ``ValueError`` (a bug: answered 500, logged).

    Example:
        >>> def echo(query, headers):
        ...     if "x" not in query:
        ...         raise ValueError("x is missing; give ?x=...")
        ...     return Response.json(query["x"])
        >>> router = Router({"/echo": echo})
        >>> [router.dispatch("GET", "/echo", q, Headers({})).status for q in ("x=1", "")]
        [200, 400]
        >>> router.dispatch("POST", "/echo", "", Headers({})).headers["Allow"]
        'GET, HEAD'
    """

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.errors = 0
        #: Paths its owner serves beside ``routes`` (OpenAPI path items), for the
        #: description at ``/openapi.json`` (``tinyllm.http.openapi``).
        self.openapi_paths: dict[str, Any] = {}
        #: The description's title.
        self.openapi_title = "tinyllm"

    def find(self, *paths: str) -> tuple[str, Route] | None:
        """The first of ``paths`` (trailing slash ignored) that has a route."""
        for path in paths:
            path = path.rstrip("/") or "/"
            route = self.routes.get(path)
            if route is not None:
                return path, route
        return None

    def dispatch(
        self, method: str, path: str | tuple[str, ...], query_string: str,
        headers: Mapping[str, str],
    ) -> Response:
        """The answer to one request; never raises.

        ``path`` may be several candidates (an ASGI app mounted under a prefix is asked
        for the path with and without it); ``headers`` must look up in any case
        (``Headers``). The answer to HEAD is the answer to GET: the transport leaves
        the body out.
        """
        candidates = (path,) if isinstance(path, str) else path
        found = self.find(*candidates)
        if found is None and any(p.rstrip("/") == "/openapi.json" for p in candidates):
            found = ("/openapi.json", self._openapi)
        if found is None:
            shown = (candidates[0].rstrip("/") or "/")[:200]
            return _error(404, f"no route {shown!r}; try {', '.join(sorted(self.routes))}")
        name, route = found
        if method not in METHODS:
            return _error(405, f"{method[:20]} is not served here; use GET or HEAD",
                          {"Allow": ", ".join(METHODS)})
        try:
            query = parse_qs(query_string, keep_blank_values=True,
                             max_num_fields=_MAX_QUERY_FIELDS)
            response = route(query, headers)
        except ValueError as exc:  # a malformed query, or a route's argument check
            return _error(400, str(exc))
        except Exception:  # a bug: the client gets a 500, the log gets the traceback
            self.errors += 1
            log.exception("route %s raised", name)
            return _error(500, "internal error")
        return _encode(response, headers)

    def _openapi(self, query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        from tinyllm.http.openapi import describe

        return Response.json(describe(self, self.openapi_title))
