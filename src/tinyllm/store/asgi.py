"""The store's endpoints as an ASGI app, for Starlette / FastAPI in one line.

The same routes as ``tinyllm metrics --db`` (``store_routes``), with the same answers
and the same 400s; database work runs in a thread so the event loop never waits on it.
Exports are streamed: the body goes out a chunk (a page of events) at a time, so a large
JSON export never sits in memory. No web framework is needed to build it.

Example:
    >>> from starlette.applications import Starlette            # doctest: +SKIP
    >>> app = Starlette()                                         # doctest: +SKIP
    >>> app.mount("/api", store_asgi_app(db))                     # doctest: +SKIP
    >>> # GET /api/metrics, GET /api/metrics/export?format=prometheus
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tinyllm.metrics.server import Response
from tinyllm.store.routes import DEFAULT_API_PREFIX, _handlers, _Stream

if TYPE_CHECKING:
    from tinyllm.store.database import MetricsDatabase

__all__ = ["store_asgi_app"]

log = logging.getLogger("tinyllm.store")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode())


async def _send_stream(send: Send, stream: _Stream) -> None:
    # No content-length: the server sends the body chunked as it comes. A failure after
    # the status went out is logged, and the response is left unfinished: the server
    # then closes the connection without chunked encoding's last chunk, so the client
    # sees a broken answer, not a short one that looks whole.
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", stream.content_type.encode())]})
    chunk: str | None = stream.first
    try:
        while chunk is not None:
            if chunk:
                await send({"type": "http.response.body", "body": chunk.encode(),
                            "more_body": True})
            try:
                chunk = await asyncio.to_thread(next, stream.rest, None)
            except Exception as exc:
                log.warning("metrics store export stopped part way: %s", exc)
                return
        await send({"type": "http.response.body", "body": b""})
    finally:
        # A client gone mid-stream: release the export's database connection now.
        close = getattr(stream.rest, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def store_asgi_app(
    db: MetricsDatabase, api_prefix: str = DEFAULT_API_PREFIX,
    export_prefix: str | None = None,
) -> ASGIApp:
    """An ASGI app serving ``{api_prefix}/metrics`` and ``{api_prefix}/metrics/export``.

    Mount it where its prefix lives: ``app.mount("/api", store_asgi_app(db))``, or
    ``app.mount("/api/diffusion", store_asgi_app(db, "/api/diffusion", "diffusion_llm"))``
    for seed 004's endpoints. Paths are matched whole, with or without the mount's
    ``root_path`` stripped, so it works across Starlette versions and on its own.
    """
    routes, export_path, export_stream = _handlers(db, api_prefix, export_prefix)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        full = (root + path).rstrip("/") or "/"
        route = routes.get(full)
        if route is None:
            response = _error(404, f"no route {full!r}; try {', '.join(sorted(routes))}")
        elif scope.get("method") not in ("GET", "HEAD"):
            response = _error(405, "only GET and HEAD are served here")
        else:
            try:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                 keep_blank_values=True, max_num_fields=100)
            except ValueError as exc:
                response = _error(400, str(exc))
            else:
                if full == export_path and scope.get("method") == "GET":
                    result = await asyncio.to_thread(export_stream, query)
                    if isinstance(result, _Stream):
                        await _send_stream(send, result)
                        return
                    response = result
                else:
                    headers = {k.decode("latin-1"): v.decode("latin-1")
                               for k, v in scope.get("headers", [])}
                    response = await asyncio.to_thread(route, query, headers)
        body = b"" if scope.get("method") == "HEAD" else response.body
        await send({
            "type": "http.response.start",
            "status": response.status,
            "headers": [(b"content-type", response.content_type.encode()),
                        (b"content-length", str(len(response.body)).encode()),
                        *((k.encode(), v.encode()) for k, v in response.headers.items())],
        })
        await send({"type": "http.response.body", "body": body})

    return app
