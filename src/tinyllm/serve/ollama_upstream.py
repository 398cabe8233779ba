"""An Ollama server over its own API, as an upstream of either of the gateway's APIs.

``provider: ollama`` speaks Ollama's native API: ``/api/chat`` and ``/api/generate``
(NDJSON streams), ``/api/embed``. Each line becomes the OpenAI-shaped chunk the rest of
the gateway relays (so the OpenAI API and the Ollama API both front it), the final
line's counts become the request's usage, and Ollama's own timings (``load_duration``,
``prompt_eval_duration``, ``eval_duration``, ``total_duration``, in nanoseconds) are
passed through: to the Ollama API's final object, and onto the request's span.

Example:
    >>> ollama_body({"model": "m", "messages": [], "max_tokens": 5, "top_k": 3}, "chat",
    ...             "llama3")["options"]
    {'num_predict': 5, 'top_k': 3}
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from tinyllm.errors import ModelError
from tinyllm.models._http import count_field
from tinyllm.resilience import RetryPolicy, get_circuit_breaker
from tinyllm.serve.proxy import first_piece, open_upstream, tell_breaker
from tinyllm.serve.requests import Call
from tinyllm.serve.upstream import OpenAIUpstream, ndjson_batches

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request
    from tinyllm.serve.proxy import Responder

__all__ = ["TIMINGS", "OllamaUpstream", "answer_ollama", "ollama_body"]

#: Ollama's own timings, passed through (nanoseconds).
TIMINGS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
_PATHS = {"chat": "/api/chat", "completion": "/api/generate", "embedding": "/api/embed"}
# OpenAI-style names -> Ollama's options.
_OPTIONS = {"max_tokens": "num_predict", "max_completion_tokens": "num_predict",
            "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "stop": "stop",
            "seed": "seed", "min_p": "min_p", "repeat_penalty": "repeat_penalty",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}


class OllamaUpstream(OpenAIUpstream):
    """An Ollama server at ``route.base_url`` (e.g. ``http://127.0.0.1:11434``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider = "ollama"


def ollama_body(body: dict[str, Any], kind: str, model: str) -> dict[str, Any]:
    """The Ollama request for an OpenAI-shaped ``body`` of ``kind``."""
    out: dict[str, Any] = {"model": model}
    if kind == "embedding":
        out["input"] = body["input"]
        return out
    options = {target: body[name] for name, target in _OPTIONS.items()
               if body.get(name) is not None}
    if options:
        out["options"] = options
    if kind == "chat":
        out["messages"] = body["messages"]
    else:
        prompt = body["prompt"]
        out["prompt"] = prompt if isinstance(prompt, str) else "".join(prompt)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out["format"] = "json"
    out["stream"] = True  # always: tokens timed as they come
    return out


def _chunk(ident: str, created: int, model: str, chat: bool, piece: str | None,
           finish: str | None) -> dict[str, Any]:
    if chat:
        delta = {} if piece is None else {"content": piece}
        return {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]}
    return {"id": ident, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": piece or "", "finish_reason": finish}]}


async def answer_ollama(
    call: Call, upstream: OllamaUpstream, req: Request, out: Responder, retry: RetryPolicy,
    headers: dict[str, str] | None = None,
) -> None:
    """Forward ``call`` to an Ollama server and answer through ``out`` (the OpenAI
    API's or the Ollama API's exchange: both take OpenAI-shaped chunks)."""
    route = upstream.route
    breaker = get_circuit_breaker(route.name)
    data = orjson.dumps(ollama_body(call.body, call.kind, route.upstream_model))
    response = await open_upstream(upstream, _PATHS[call.kind], data, headers, breaker,
                                   retry, out)
    try:
        if call.kind == "embedding":
            _raw, value = await upstream.read_json(response)
            req.usage(count_field(value.get("prompt_eval_count")), 0)
            vectors = value.get("embeddings") or []
            await out.whole(200, orjson.dumps({
                "object": "list", "model": route.name, "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": req.input_tokens,
                          "total_tokens": req.input_tokens}}))
        else:
            await _relay(call, upstream, response, req, out)
    except BaseException as exc:
        tell_breaker(breaker, exc)
        raise
    breaker.record_success()


async def _relay(call: Call, upstream: OllamaUpstream, response: Any, req: Request,
                 out: Responder) -> None:

    chat = call.kind == "chat"
    name = upstream.route.name
    ident, created = f"ollama-{time.time_ns():x}", int(time.time())
    batches = ndjson_batches(response, upstream.timeouts.token_gap)
    if call.stream:
        await out.start_stream()
    texts: list[str] = []
    finish = "stop"
    began = perf_counter()
    try:  # keep-alive comments only where the client gets a stream
        batch = await (first_piece(batches, out) if call.stream else anext(batches))
    except StopAsyncIteration:  # pragma: no cover - ndjson_batches raises on a cut body
        batch = []
    while True:
        out.upstream_wait += perf_counter() - began
        frames = []
        for payload in batch:
            line = orjson.loads(payload)
            if not isinstance(line, dict):
                raise ModelError("the Ollama upstream sent a line that is not a JSON object",
                                 error_type="server_error")
            if "error" in line:
                raise ModelError(f"the Ollama upstream failed mid-stream: "
                                 f"{str(line['error'])[:300]}", error_type="server_error")
            piece = (line.get("message") or {}).get("content") if chat else line.get("response")
            if line.get("done"):
                finish = str(line.get("done_reason") or "stop")
                req.usage(count_field(line.get("prompt_eval_count")),
                          count_field(line.get("eval_count")))
                _pass_timings(line, req, out)
                frames.append(orjson.dumps(_chunk(ident, created, name, chat, None, finish)))
                continue
            if piece:
                req.token()
                texts.append(piece)
                frames.append(orjson.dumps(_chunk(ident, created, name, chat, piece, None)))
        if frames and call.stream:
            await out.events(frames)
        began = perf_counter()
        try:
            batch = await anext(batches)
        except StopAsyncIteration:
            break
    out.upstream_wait += perf_counter() - began
    req.set_finish_reasons(finish)
    usage = {"prompt_tokens": req.input_tokens,
             "completion_tokens": req.usage_output_tokens or req.output_tokens,
             "total_tokens": req.input_tokens + (req.usage_output_tokens or
                                                 req.output_tokens)}
    if call.stream:
        if call.wants_usage:
            await out.events([orjson.dumps({**_chunk(ident, created, name, chat, None, None),
                                            "choices": [], "usage": usage})])
        await out.end_stream()
        return
    text = "".join(texts)
    if chat:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    await out.whole(200, orjson.dumps({
        "id": ident, "object": "chat.completion" if chat else "text_completion",
        "created": created, "model": name, "choices": [choice], "usage": usage}))


def _pass_timings(line: dict[str, Any], req: Request, out: Any) -> None:
    timings = {k: line[k] for k in TIMINGS if isinstance(line.get(k), int)}
    if not timings:
        return
    if hasattr(out, "upstream_timings"):
        out.upstream_timings = timings  # the Ollama API's final object reports them
    span = req.span
    if span is not None and span.is_recording():
        span.set_attributes({f"tinyllm.upstream.{k}_ns": v for k, v in timings.items()})
