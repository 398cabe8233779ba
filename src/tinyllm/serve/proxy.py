"""Answering one chat or completion call from its upstream, observed by the lifecycle.

The status goes out once the upstream has accepted the request, so everything that
fails before (a refused connection, an upstream 4xx/5xx, an open breaker, a full queue)
is a real HTTP status and may be retried; after it, a failure ends the stream with an
error event the OpenAI SDK raises on. While the first token is awaited the stream
carries SSE comments, so proxies and clients with idle timeouts keep it open.

Token accounting: every chunk with text is a token as the client sees it (TTFT and
inter-token latency); the upstream's usage, always asked for, gives the totals. The
usage chunk reaches the client only if it asked (``stream_options.include_usage``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tinyllm.errors import ModelError, classify_error
from tinyllm.models._http import count_field
from tinyllm.resilience import RetryPolicy, aretry_call, counts_as_failure, get_circuit_breaker
from tinyllm.serve.requests import Call
from tinyllm.serve.upstream import sse_batches

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request
    from tinyllm.serve.local import LocalUpstream
    from tinyllm.serve.upstream import OpenAIUpstream

__all__ = [
    "Responder",
    "answer_local",
    "answer_openai",
    "first_piece",
    "open_upstream",
    "tell_breaker",
]

#: Seconds between SSE keep-alive comments while the first token is awaited.
KEEPALIVE_SECONDS = 10.0
_PATHS = {"chat": "/chat/completions", "completion": "/completions",
          "embedding": "/embeddings"}


class Responder(Protocol):
    """Where an answer goes (the ASGI exchange); tracks the time spent on the upstream."""

    upstream_wait: float

    async def whole(self, status: int, body: bytes) -> None: ...

    async def start_stream(self) -> None: ...

    async def event(self, payload: bytes) -> None: ...

    async def events(self, payloads: list[bytes]) -> None: ...

    async def comment(self) -> None: ...

    async def end_stream(self) -> None: ...


async def first_piece(pieces: AsyncIterator[Any], out: Responder,
                      before_comment: Callable[[], Awaitable[None]] | None = None) -> Any:
    """The first piece, with keep-alive comments every ``KEEPALIVE_SECONDS`` meanwhile
    (``before_comment`` is awaited before each: it may start the stream); raises
    ``StopAsyncIteration`` when there is none."""
    import asyncio

    task = asyncio.ensure_future(anext(pieces))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
            if done:
                return task.result()
            if before_comment is not None:
                await before_comment()
            await out.comment()
    finally:
        if not task.done():
            task.cancel()


def _usage(req: Request, usage: Any) -> None:
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
        cached = count_field(details.get("cached_tokens")) if isinstance(details, dict) else None
        req.usage(count_field(usage.get("prompt_tokens")),
                  count_field(usage.get("completion_tokens")), cached)


def _upstream_timings(req: Request, timings: Any) -> None:
    """llama.cpp's server reports its own timings (``prompt_ms``, ``predicted_ms``,
    ``predicted_per_second``, ...): passed through onto the request's span."""
    span = req.span
    if isinstance(timings, dict) and span is not None and span.is_recording():
        span.set_attributes({f"tinyllm.upstream.{k}": v for k, v in timings.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})


def _finish_reasons(choices: list[Any]) -> list[str]:
    return [c["finish_reason"] for c in choices
            if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]


# -- an OpenAI-compatible upstream --------------------------------------------------------


async def answer_openai(
    call: Call, upstream: OpenAIUpstream, req: Request, out: Responder,
    retry: RetryPolicy, headers: dict[str, str] | None = None,
) -> None:
    """Forward ``call`` to ``upstream`` and answer through ``out``; raises what failed
    (before the stream started: the caller answers with its status)."""
    route = upstream.route
    payload = dict(call.body)
    payload["model"] = route.upstream_model
    if call.stream:  # always asked: token metrics right even when the client did not
        payload["stream_options"] = {**(payload.get("stream_options") or {}),
                                     "include_usage": True}
    breaker = get_circuit_breaker(route.name)
    response = await open_upstream(upstream, _PATHS[call.kind], orjson.dumps(payload),
                                   headers, breaker, retry, out)
    rename = route.upstream_model != route.name
    try:
        if not call.stream:
            began = perf_counter()
            raw, value = await upstream.read_json(response)
            out.upstream_wait += perf_counter() - began
            _usage(req, value.get("usage"))
            _upstream_timings(req, value.get("timings"))
            choices = value.get("choices")
            if isinstance(choices, list):
                req.set_finish_reasons(*_finish_reasons(choices))
            if rename:
                value["model"] = route.name
                raw = orjson.dumps(value)
            breaker.record_success()
            await out.whole(200, raw)
            return
        await _relay_stream(call, upstream, response, req, out, rename)
    except BaseException as exc:
        tell_breaker(breaker, exc)
        raise
    breaker.record_success()


async def open_upstream(
    upstream: OpenAIUpstream, path: str, data: bytes, headers: dict[str, str] | None,
    breaker: Any, retry: RetryPolicy, out: Responder,
) -> Any:
    """POST to the upstream through its breaker, retried before anything reached the
    client; the wait counts as the upstream's, not the gateway's."""
    async def attempt() -> Any:
        breaker.before_call()
        try:
            return await upstream.open(path, data, headers)
        except Exception as exc:
            tell_breaker(breaker, exc)
            raise

    began = perf_counter()
    response = await aretry_call(attempt, retry, model=upstream.route.name)
    out.upstream_wait += perf_counter() - began
    return response


def tell_breaker(breaker: Any, exc: BaseException) -> None:
    if counts_as_failure(exc):
        breaker.record_failure(exc)
    elif classify_error(exc) == "bad_request":
        breaker.record_success()


async def _relay_stream(
    call: Call, upstream: OpenAIUpstream, response: Any, req: Request, out: Responder,
    rename: bool,
) -> None:
    route = upstream.route
    batches = sse_batches(response, upstream.timeouts.token_gap)
    total = upstream.timeouts.total
    deadline = perf_counter() + total if total is not None else None
    # The status waits for the upstream's first event (or the first keep-alive comment,
    # 10 s on): an upstream that answers garbage (not SSE, a malformed first chunk, a
    # stream that ends at once without [DONE]) is then a 502 the client can act on, not
    # a 200 whose stream carries the error.
    started = False

    async def start() -> None:
        nonlocal started
        if not started:
            started = True
            await out.start_stream()

    began = perf_counter()
    try:
        batch = await first_piece(batches, out, start)
    except StopAsyncIteration:
        await start()
        await out.end_stream()
        return
    finish: list[str] = []
    while True:
        out.upstream_wait += perf_counter() - began
        frames: list[bytes] = []
        try:
            _relay_batch(batch, call, route.name, rename, req, frames, finish)
        finally:  # what came before a bad chunk still reaches the client, in order
            if frames:
                await start()
                await out.events(frames)
        await start()
        began = perf_counter()
        if deadline is not None and began > deadline:
            raise ModelError(f"the stream from {upstream.url(_PATHS[call.kind])} ran past "
                             f"the whole-request limit ({total:g} s)", error_type="timeout")
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            break
    out.upstream_wait += perf_counter() - began
    if finish:
        req.set_finish_reasons(*finish)
    await out.end_stream()


def _relay_batch(
    batch: list[bytes], call: Call, name: str, rename: bool, req: Request,
    frames: list[bytes], finish: list[str],
) -> None:
    """Check, count and (maybe) rewrite the chunks of one batch into ``frames``."""
    chat = call.kind == "chat"
    strip_usage = not call.wants_usage
    for payload in batch:
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ModelError(f"the upstream sent a chunk that is not JSON: "
                             f"{payload[:80]!r}", error_type="server_error") from None
        if type(chunk) is not dict:
            raise ModelError("the upstream sent a chunk that is not a JSON object",
                             error_type="server_error")
        if "error" in chunk:
            raise ModelError(f"the upstream failed mid-stream: "
                             f"{str(chunk['error'])[:300]}", error_type="server_error")
        choices = chunk.get("choices") or ()
        usage = chunk.get("usage")
        changed = rename
        if "timings" in chunk:  # llama.cpp's server: its own timings, on the last chunk
            _upstream_timings(req, chunk["timings"])
        if usage is not None:
            _usage(req, usage)
            if strip_usage:
                if not choices:
                    continue  # the usage chunk the client did not ask for
                del chunk["usage"]
                changed = True
        for choice in choices:
            if type(choice) is dict:
                piece = (choice.get("delta") or {}).get("content") if chat else \
                    choice.get("text")
                if piece:
                    req.token()
                reason = choice.get("finish_reason")
                if type(reason) is str:
                    finish.append(reason)
        if changed:
            if rename:
                chunk["model"] = name
            payload = orjson.dumps(chunk)
        frames.append(payload)


# -- the embedded model -------------------------------------------------------------------


async def answer_local(call: Call, upstream: LocalUpstream, req: Request,
                       out: Responder) -> None:
    """Answer ``call`` from the embedded model through ``out``."""
    from tinyllm.serve.errors import GatewayError

    route = upstream.route
    if not upstream.ready:
        raise GatewayError(503, f"model {route.name!r} is not loaded"
                           + (f": {upstream.load_error}" if upstream.load_error else
                              " yet; retry shortly"), code="model_loading", retry_after=5)
    prompt = call.body.get("prompt")
    if call.kind == "completion" and isinstance(prompt, list) and len(prompt) != 1:
        raise GatewayError(400, f"model {route.name!r} takes one prompt per request, got "
                                f"{len(prompt)}", code="invalid_request", param="prompt")
    limit = call.body.get("max_tokens") or call.body.get("max_completion_tokens")
    if isinstance(limit, int) and limit >= upstream.n_ctx:
        raise GatewayError(400, f"max_tokens must be below model {route.name!r}'s context "
                                f"window of {upstream.n_ctx} tokens, got {limit:,}",
                           code="invalid_request", param="max_tokens")
    body = call.body
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    began = perf_counter()
    pieces = upstream.open(call.kind, body)  # QueueFullError: a 503 before any byte
    if call.stream:
        await out.start_stream()
        try:
            prompt_tokens = await first_piece(pieces, out)
        except StopAsyncIteration:  # pragma: no cover - the worker always sends a count
            prompt_tokens = 0
    else:
        prompt_tokens = await anext(pieces)
    req.usage(input_tokens=prompt_tokens)
    ident, created = None, int(time.time())
    texts: list[str] = []
    finish: str | None = None
    count = 0
    async for chunk in pieces:
        out.upstream_wait += perf_counter() - began
        choice = chunk["choices"][0]
        piece = (choice.get("delta") or {}).get("content") if call.kind == "chat" else \
            choice.get("text")
        if piece:
            req.token()
            count += 1
            texts.append(piece)
        finish = choice.get("finish_reason") or finish
        ident = ident or chunk.get("id")
        if call.stream:
            chunk["model"] = route.name
            await out.event(orjson.dumps(chunk))
        began = perf_counter()
    out.upstream_wait += perf_counter() - began
    req.usage(output_tokens=count)
    req.set_finish_reasons(finish or "stop")
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count,
             "total_tokens": prompt_tokens + count}
    ident = ident or f"{call.kind}-{created}"
    if call.stream:
        if call.wants_usage:
            kind = "chat.completion.chunk" if call.kind == "chat" else "text_completion"
            await out.event(orjson.dumps({"id": ident, "object": kind, "created": created,
                                          "model": route.name, "choices": [],
                                          "usage": usage}))
        await out.end_stream()
        return
    text = "".join(texts)
    if call.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "finish_reason": finish or "stop", "logprobs": None}
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish or "stop",
                  "logprobs": None}
        kind = "text_completion"
    await out.whole(200, orjson.dumps({"id": ident, "object": kind, "created": created,
                                       "model": route.name, "choices": [choice],
                                       "usage": usage}))
