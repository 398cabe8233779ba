"""The gateway as an ASGI app: the OpenAI API in front of the configured models, and
tinyllm's own routes (``/metrics``, ``/health``, ``/ready``, the store's) on the same port.

Plain ASGI, no web framework: a gateway's cost per request is the product (Starlette's
routing and request objects would be most of it). Each model call is one lifecycle
request (both metric vocabularies, the GenAI span, the log line, the store row) under
the client-visible model name, graph ``gateway``; ``tinyllm_gateway_requests_total``
counts every answer by route and status, and ``tinyllm_gateway_overhead_seconds`` (and
the ``X-Tinyllm-Overhead-Ms`` header on whole answers) what the gateway added. With keys,
each call's tokens and cost (the request's ``cost_usd``) are charged to its key once it
has ended: ``tinyllm_gateway_key_tokens_total``, ``tinyllm_gateway_key_cost_usd_total``,
the ``tpm`` bucket and the budget's spend.

Example:
    >>> from tinyllm.serve.config import default_config
    >>> app = Gateway(default_config())                          # doctest: +SKIP
    >>> # uvicorn.run(app, port=8080)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from tinyllm.http.asgi import RoutesApp
from tinyllm.http.openapi import describe
from tinyllm.http.routes import default_routes
from tinyllm.http.routing import Response, Route, Router
from tinyllm.lifecycle import Request, RequestLifecycle, get_lifecycle
from tinyllm.queue import QueueFullError
from tinyllm.resilience import RetryPolicy, Timeouts, get_circuit_breaker
from tinyllm.serve.auth import Keys, Rejection
from tinyllm.serve.budgets import watch_periods
from tinyllm.serve.config import GatewayConfig, ModelRoute
from tinyllm.serve.errors import GatewayError, from_exception
from tinyllm.serve.exchange import (
    DEFAULT_MAX_BODY,
    ClientGone,
    Exchange,
    Receive,
    Scope,
    Send,
    check_headers,
    header,
    read_body,
    request_id,
)
from tinyllm.serve.limits import RedisLimits
from tinyllm.serve.local import LocalUpstream
from tinyllm.serve.ollama_api import (
    OLLAMA_VERSION,
    OllamaExchange,
    model_list,
    parse_ollama,
    show,
)
from tinyllm.serve.ollama_upstream import OllamaUpstream, answer_ollama
from tinyllm.serve.openapi import gateway_paths, with_keys
from tinyllm.serve.proxy import answer_local, answer_openai
from tinyllm.serve.requests import Call, parse_call
from tinyllm.serve.upstream import OpenAIUpstream
from tinyllm.telemetry import is_telemetry_enabled

__all__ = ["DEFAULT_MAX_BODY", "Gateway"]

_CALLS = {"/v1/chat/completions": "chat", "/v1/completions": "completion",
          "/v1/embeddings": "embedding"}
_OLLAMA_CALLS = ("chat", "generate", "embed", "embeddings")
_OLLAMA = frozenset({*(f"/api/{c}" for c in _OLLAMA_CALLS), "/api/tags", "/api/show",
                     "/api/version", "/api/ps"})
# The routes whose answers' overhead is observed: the model calls.
_TIMED = frozenset({*_CALLS, *(f"/api/{c}" for c in _OLLAMA_CALLS)})


class Gateway:
    """The ASGI app of ``tinyllm serve`` (see the module docstring).

    ``routes`` adds GET routes beside ``/metrics``, ``/health`` and ``/ready`` (the
    store's, with ``--db``); ``redis_url`` shares the keys' limits and budgets' spend
    with every instance using that Redis. The config's prices and SLO must be in force
    before it is built (``tinyllm.serve.server.configure_accounting``).
    """

    def __init__(
        self, config: GatewayConfig, *, routes: Mapping[str, Route] | None = None,
        timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
        max_body: int = DEFAULT_MAX_BODY, lifecycle: RequestLifecycle | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.config = config
        self.timeouts = timeouts or Timeouts(connect=5.0, read=120.0, total=600.0,
                                             token_gap=60.0)
        self.retry = retry or RetryPolicy(max_attempts=2, base_delay=0.1, max_delay=1.0)
        self.max_body = max_body
        self.lifecycle = lifecycle or get_lifecycle()
        self.upstreams: dict[str, OpenAIUpstream | LocalUpstream] = {}
        for route in config.models.values():
            self.upstreams[route.name] = self._upstream(route)
        # With redis_url the keys' limits are shared by every instance using that Redis.
        self.limits = RedisLimits(redis_url) if redis_url and config.keys else None
        self.keys = Keys(config.keys, self.limits, self.lifecycle.collector)
        self._periods: asyncio.Task[None] | None = None
        self.router = Router({**default_routes(), "/ready": self._ready_route,
                              **(routes or {})})
        self.router.openapi_paths = gateway_paths(config)
        self.router.openapi_title = "tinyllm serve"
        if config.keys:
            self.router.routes["/openapi.json"] = self._openapi_route
        self._routes_app = RoutesApp(self.router)
        self._models_list = orjson.dumps({"object": "list", "data": [
            self._model_card(r) for r in config.models.values()]})
        self._record = self.lifecycle.collector.record_gateway_answer

    def _upstream(self, route: ModelRoute) -> OpenAIUpstream | LocalUpstream:
        if route.provider == "local":
            return LocalUpstream(route)
        if route.provider == "ollama":
            return OllamaUpstream(route, self.timeouts)
        return OpenAIUpstream(route, self.timeouts)

    @staticmethod
    def _model_card(route: ModelRoute) -> dict[str, Any]:
        return {"id": route.name, "object": "model", "created": 0,
                "owned_by": route.provider}

    # -- lifespan ----------------------------------------------------------------------
    async def startup(self) -> None:
        """Start loading the local model (readiness waits for it); read the keys' spend
        for the period (the remaining-budget gauges) and refresh it as periods end."""
        for upstream in self.upstreams.values():
            if isinstance(upstream, LocalUpstream):
                self._loading = asyncio.create_task(upstream.start())
        budgets = self.keys.budgets
        for budget in budgets:
            await budget.refresh()
        if budgets:
            self._periods = asyncio.create_task(watch_periods(budgets))

    async def shutdown(self) -> None:
        """Release the upstream connections, the local model's queue and Redis."""
        if self._periods is not None:
            self._periods.cancel()
        for upstream in self.upstreams.values():
            await upstream.close()
        if self.limits is not None:
            await self.limits.close()

    def _openapi_route(self, query: dict[str, list[str]],
                       headers: Mapping[str, str]) -> Response:
        """The description, with the keys' bearer scheme (``with_keys``)."""
        return Response.json(with_keys(describe(self.router, self.router.openapi_title),
                                       self.router.openapi_paths))

    def _ready_route(self, query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        waiting = [u.route.name for u in self.upstreams.values()
                   if isinstance(u, LocalUpstream) and not u.ready]
        if waiting:
            failed = [u.load_error for u in self.upstreams.values()
                      if isinstance(u, LocalUpstream) and u.load_error]
            reason = f"failed to load: {failed[0]}" if failed else "loading"
            return Response.json({"status": "not ready", "models": waiting,
                                  "reason": reason}, 503)
        # Every upstream's breaker open: nothing can be answered (one that is half-open
        # is being tried again, so it counts as up).
        down = [name for name in self.upstreams
                if get_circuit_breaker(name).state == "open"]
        if down and len(down) == len(self.upstreams):
            return Response.json({"status": "not ready", "models": down,
                                  "reason": "every upstream is failing (circuit open)"}, 503)
        return Response.json({"status": "ready", "models": list(self.upstreams)})

    # -- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/v1/"):
                await self._v1(scope, receive, send, path)
                return
            if path in _OLLAMA:
                await self._ollama(scope, receive, send, path)
                return
            if path == "/":
                if scope["method"] not in ("GET", "HEAD"):
                    await Exchange(send, perf_counter()).error(_method("/", "GET"))
                    return
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": b"Ollama is running"})
                return
            if self.keys and path.startswith("/api/"):
                # The store's summary and exports hold every request's history: with keys
                # configured they need one (/metrics, /health and /ready stay open).
                try:
                    self.keys.identify(header(scope, b"authorization"))
                except GatewayError as err:
                    await Exchange(send, perf_counter()).error(err)
                    return
            await self._routes_app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _v1(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        exchange = Exchange(send, perf_counter(), request_id(scope))
        method = scope["method"]
        kind = _CALLS.get(path)
        if kind is not None:
            def parse(raw: bytes) -> Call:
                return parse_call(raw, kind)

            await self._serve(path, exchange, lambda: self._call(
                scope, receive, exchange, parse, method))
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            route = "/v1/models" if path == "/v1/models" else "/v1/models/{id}"
            await self._serve(route, exchange, lambda: self._models(
                path, exchange, header(scope, b"authorization"), method))
        else:
            await self._serve("other", exchange, _raiser(GatewayError(
                404, f"no route {path[:100]!r}; the OpenAI API is served under /v1: "
                     "chat/completions, completions, embeddings, models",
                code="unknown_url")))

    async def _ollama(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        endpoint = path[len("/api/"):]
        method = scope["method"]
        exchange = OllamaExchange(send, perf_counter(), request_id(scope), "",
                                  endpoint == "chat", True)
        if endpoint in _OLLAMA_CALLS:
            if endpoint.startswith("embed"):
                exchange.embed = endpoint

            def parse(raw: bytes) -> Call:
                call, exchange.stream = parse_ollama(raw, endpoint)
                # The answer's shape follows the endpoint (generate answers "response"
                # even when a system prompt made the upstream call a chat).
                exchange.model = call.model
                return call

            await self._serve(path, exchange, lambda: self._call(
                scope, receive, exchange, parse, method))
        else:
            await self._serve(path, exchange, lambda: self._ollama_info(
                endpoint, scope, receive, exchange, method))

    async def _ollama_info(self, endpoint: str, scope: Scope, receive: Receive,
                           exchange: OllamaExchange, method: str) -> None:
        authorization = header(scope, b"authorization")
        if self.keys:
            self.keys.identify(authorization)
        routes = [r for r in self.config.models.values()
                  if not self.keys or self.keys.may_use(authorization, r.name)]
        if endpoint == "show":
            if method != "POST":
                raise _method(f"/api/{endpoint}", "POST")
            try:
                body = orjson.loads(await read_body(scope, receive, self.max_body) or b"{}")
            except orjson.JSONDecodeError:
                raise GatewayError(400, "the body is not valid JSON (UTF-8)",
                                   code="invalid_request") from None
            name = body.get("model") or body.get("name") if isinstance(body, dict) else None
            found = [r for r in routes if r.name == name]
            if not found:
                raise _unknown_model(str(name), self.config)
            await exchange.whole(200, show(found[0]))
            return
        if method not in ("GET", "HEAD"):
            raise _method(f"/api/{endpoint}", "GET")
        if endpoint == "version":
            await exchange.whole(200, orjson.dumps({"version": OLLAMA_VERSION}))
        elif endpoint == "tags":
            await exchange.whole(200, model_list(routes))
        else:  # ps: the models loaded now
            local = {u.route.name for u in self.upstreams.values()
                     if isinstance(u, LocalUpstream) and u.ready}
            loaded = [r for r in routes if r.name in local]
            await exchange.whole(200, model_list(loaded))

    async def _serve(self, route: str, exchange: Exchange | OllamaExchange,
                     work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` for one exchange: a ``GatewayError`` becomes its answer, and every
        answer is counted (``gateway_requests_total``, the overhead)."""
        try:
            await work()
        except GatewayError as err:
            if isinstance(err, Rejection):
                self.lifecycle.collector.increment_gateway_key_rejections(
                    err.alias or "none", err.reason)
            if not exchange.sent:
                await exchange.error(err)
        except ClientGone:
            exchange.status = 499  # nginx's "client closed request": never sent
        status = exchange.status
        self._record(route, status,
                     exchange.overhead() if status < 400 and route in _TIMED else None)

    async def _models(self, path: str, exchange: Exchange, authorization: bytes | None,
                      method: str) -> None:
        if method not in ("GET", "HEAD"):
            raise _method(path, "GET")
        keys = self.keys
        if keys:  # a key sees the models it may use, and nothing without one
            keys.identify(authorization)
        if path == "/v1/models":
            if not keys:
                await exchange.whole(200, self._models_list)
                return
            cards = [self._model_card(r) for r in self.config.models.values()
                     if keys.may_use(authorization, r.name)]
            await exchange.whole(200, orjson.dumps({"object": "list", "data": cards}))
            return
        name = path[len("/v1/models/"):]
        route = self.config.models.get(name)
        if route is None or (keys and not keys.may_use(authorization, name)):
            raise _unknown_model(name, self.config)
        await exchange.whole(200, orjson.dumps(self._model_card(route)))

    async def _call(self, scope: Scope, receive: Receive, exchange: Exchange | OllamaExchange,
                    parse: Callable[[bytes], Call], method: str) -> None:
        if method != "POST":
            raise _method(scope["path"], "POST")
        check_headers(scope)
        keys = self.keys
        authorization = header(scope, b"authorization") if keys else None
        if keys:  # before the body is read: a caller without a key costs nothing more
            keys.identify(authorization)
        raw = await read_body(scope, receive, self.max_body)
        call = parse(raw)
        upstream = self.upstreams.get(call.model)
        if upstream is None:
            raise _unknown_model(call.model, self.config)
        key = await keys.check(authorization, call.model) if keys else None
        request_id = exchange.request_id.decode()
        forward = {"X-Request-Id": request_id}
        req = _start_traced(self.lifecycle, scope, call.model, call.request_type,
                            upstream.provider, request_id, forward)
        if isinstance(exchange, OllamaExchange):
            exchange.req = req  # its final object reports the request's counts and timings
        task = asyncio.current_task()
        watcher = asyncio.ensure_future(_watch(receive, exchange, task))
        try:
            if isinstance(upstream, LocalUpstream):
                if call.kind == "embedding":
                    raise GatewayError(501, f"model {call.model!r} (the embedded model) does "
                                            "not serve embeddings", code="not_supported")
                await answer_local(call, upstream, req, exchange)
            elif isinstance(upstream, OllamaUpstream):
                await answer_ollama(call, upstream, req, exchange, self.retry, forward)
            else:
                await answer_openai(call, upstream, req, exchange, self.retry, forward)
        except asyncio.CancelledError:
            if not exchange.gone or task is None:
                req.end(asyncio.CancelledError())
                raise
            task.uncancel()  # the client went away: not this server's shutdown
            req.cancel()
            exchange.status = exchange.status or 499
        except BaseException as exc:
            req.end(exc)
            err = _rejection(exc, call.model)
            if exchange.streaming:
                await exchange.stream_error(err)
            elif not exchange.sent:
                await exchange.error(err)
        else:
            req.end()
        finally:
            exchange.done = True
            watcher.cancel()
            if key is not None:  # the request has ended: its tokens and cost are known
                self.lifecycle.collector.record_gateway_key(key.alias, req.input_tokens,
                                                            req.output_tokens)
                await key.settle(req.input_tokens + req.output_tokens, req.cost_usd)


async def _watch(receive: Receive, exchange: Exchange | OllamaExchange,
                 task: asyncio.Task[Any] | None) -> None:
    """Cancel the exchange's task when its client goes away before the answer is done."""
    while (await receive())["type"] != "http.disconnect":
        pass
    if task is not None and not exchange.done:
        exchange.gone = True
        task.cancel()


def _start_traced(
    lifecycle: RequestLifecycle, scope: Scope, model: str, request_type: str,
    provider: str, request_id: str, forward: dict[str, str],
) -> Request:
    """The lifecycle request, its span a child of the client's ``traceparent`` (with
    tracing on); ``forward`` gets the headers the upstream should see: the trace
    continued from our span, or the client's ``traceparent`` as it came."""
    traceparent = header(scope, b"traceparent")
    if not is_telemetry_enabled():
        if traceparent is not None:
            forward["traceparent"] = traceparent.decode("latin-1")
            state = header(scope, b"tracestate")
            if state is not None:
                forward["tracestate"] = state.decode("latin-1")
        return lifecycle.start(model, "gateway", request_type, provider=provider,
                               request_id=request_id)
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
               if k in (b"traceparent", b"tracestate")}
    token = otel_context.attach(propagate.extract(carrier))
    try:
        req = lifecycle.start(model, "gateway", request_type, provider=provider,
                              request_id=request_id)
    finally:
        otel_context.detach(token)
    if req.span is not None:
        propagate.inject(forward, context=trace.set_span_in_context(req.span))
    return req


def _rejection(exc: BaseException, model: str) -> GatewayError:
    if isinstance(exc, QueueFullError):
        return GatewayError(503, f"model {model!r} is busy: {exc.size} requests are "
                                 "waiting already; retry shortly", code="overloaded",
                            retry_after=1.0)
    return from_exception(exc, f"model {model!r}")


def _raiser(err: GatewayError) -> Callable[[], Awaitable[None]]:
    async def fail() -> None:
        raise err

    return fail


def _method(path: str, allowed: str) -> GatewayError:
    methods = b"GET, HEAD" if allowed == "GET" else allowed.encode()
    return GatewayError(405, f"{path[:100]} takes {allowed}", code="method_not_allowed",
                        headers=((b"allow", methods),))


def _unknown_model(name: str, config: GatewayConfig) -> GatewayError:
    shown = name if len(name) <= 100 and name.isprintable() else name[:100] + "..."
    return GatewayError(404, f"model {shown!r} is not served here; available: "
                             f"{', '.join(sorted(config.models))}",
                        code="model_not_found", param="model")


