"""The ASGI transport: the same routes for uvicorn, Starlette, FastAPI or any ASGI server.

``asgi_app(routes)`` serves a route table (default: ``/metrics`` and ``/health``) with
the answers of ``start_metrics_server``, byte for byte: the dispatch is the same
``Router``. Routes run in a worker thread (they read databases and run health checks),
so the event loop never waits on them. A streamed answer goes out a piece at a time,
each piece read in a worker thread; a client that goes away stops the stream (counted
in ``tinyllm_http_disconnects_total{transport="asgi"}``), and a stream that fails part
way is left unfinished, so the client sees a broken answer, not a short one that looks
whole. No web framework is needed to use it.

Example:
    >>> from starlette.applications import Starlette            # doctest: +SKIP
    >>> app = Starlette()                                         # doctest: +SKIP
    >>> app.mount("/observability", asgi_app())                   # doctest: +SKIP
    >>> # GET /observability/metrics, GET /observability/health
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from tinyllm.http.routes import default_routes
from tinyllm.http.routing import Headers, Response, Route, Router
from tinyllm.metrics.collector import get_metrics_collector

__all__ = ["ASGIApp", "RoutesApp", "asgi_app"]

log = logging.getLogger("tinyllm.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_END = object()


def _close(rest: Iterable[bytes]) -> None:
    close = getattr(rest, "close", None)
    if close is not None:
        close()


class RoutesApp:
    """An ASGI app over a ``Router``; ``asgi_app()`` makes one.

    ``router`` is shared with whoever built it: add routes to ``router.routes`` to serve
    more. ``disconnects`` counts clients gone mid-answer.
    """

    def __init__(self, router: Router) -> None:
        self.router = router
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        # Starlette's mount strips its prefix from ``path`` in some versions and not in
        # others; a route matches either way (the path below the mount first, then the
        # whole path: the store's routes are keyed by their whole path).
        below = path[len(root):] if root and path.startswith(root) else path
        candidates = (below, root + below)
        method: str = scope.get("method", "GET")
        query = scope.get("query_string", b"").decode("latin-1")
        headers = Headers((k.decode("latin-1"), v.decode("latin-1"))
                          for k, v in scope.get("headers", []))
        response = await asyncio.to_thread(self.router.dispatch, method, candidates, query,
                                           headers)
        send_body = method != "HEAD"
        try:
            if response.rest is not None:
                await self._stream(response, send_body, receive, send)
                return
            await send(self._start(response, [(b"content-length",
                                               str(len(response.body)).encode())]))
            await send({"type": "http.response.body",
                        "body": response.body if send_body else b""})
        except OSError as exc:  # uvicorn raises once the client is gone
            self._gone(exc)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _start(response: Response, extra: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(b"content-type", response.content_type.encode()),
                        *((k.lower().encode(), v.encode())
                          for k, v in response.headers.items()),
                        *extra],
        }

    def _gone(self, exc: BaseException | None = None) -> None:
        self.disconnects += 1
        log.debug("ASGI client went away mid-answer: %r", exc)
        with contextlib.suppress(Exception):  # counting must never fail the server
            get_metrics_collector().increment_http_disconnects("asgi")

    async def _stream(
        self, response: Response, send_body: bool, receive: Receive, send: Send,
    ) -> None:
        # No content-length: the server sends the body chunked as it comes.
        rest = response.rest
        assert rest is not None
        gone = asyncio.Event()

        async def watch() -> None:  # the request is read: what comes next is a disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        pieces = iter(rest)
        try:
            await send(self._start(response, []))
            if not send_body:
                await send({"type": "http.response.body", "body": b""})
                return
            piece: Any = response.body
            while piece is not _END:
                if piece:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                try:
                    piece = await asyncio.to_thread(next, pieces, _END)
                except Exception as exc:  # leave the answer unfinished: the server cuts it
                    self.router.errors += 1
                    log.debug("streamed answer cut short: %r", exc)
                    return
                if gone.is_set():
                    self._gone()
                    return
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            # A client gone mid-stream: release what the stream holds (a database
            # connection) now, not when the generator is collected.
            await asyncio.to_thread(_close, rest)


def asgi_app(routes: Mapping[str, Route] | Router | None = None) -> RoutesApp:
    """An ASGI app serving ``routes`` (default: ``/metrics`` and ``/health``).

    Mount it in an application (``app.mount("/observability", asgi_app())``) or run it
    on its own (``uvicorn.run(asgi_app(), port=9090)``). Combine route tables to serve
    more: ``asgi_app({**default_routes(), **store_routes(db)})``.

    Example:
        >>> app = asgi_app()
        >>> "/metrics" in app.router.routes and "/dashboard" in app.router.routes
        True
    """
    if isinstance(routes, Router):
        return RoutesApp(routes)
    return RoutesApp(Router(default_routes() if routes is None else routes))
