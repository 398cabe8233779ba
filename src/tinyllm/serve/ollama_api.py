"""The Ollama API in front of any of the gateway's models: what Ollama clients (the
``ollama`` SDKs, Open WebUI) call and probe.

``POST /api/chat`` and ``POST /api/generate`` are translated into the gateway's one
call (the same upstreams, lifecycle, limits and errors as the OpenAI API) and answered
the way Ollama answers: NDJSON lines while streaming (Ollama streams unless
``"stream": false``), then a final object with ``done_reason`` and the timings in
nanoseconds (``total_duration``, ``load_duration``, ``prompt_eval_count``,
``prompt_eval_duration``, ``eval_count``, ``eval_duration``), measured here as the
client experiences them. Errors are Ollama's ``{"error": "..."}`` with the same
statuses. ``POST /api/embed`` and the older ``/api/embeddings`` are the OpenAI
embeddings call, answered as Ollama answers them. ``GET /``, ``/api/version``,
``/api/tags``, ``/api/ps`` and ``POST /api/show`` describe the configured models.

Example:
    >>> call, stream = parse_ollama(b'{"model": "m", "prompt": "hi"}', "generate")
    >>> call.kind, call.body["prompt"], stream
    ('completion', 'hi', True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from tinyllm.serve.errors import GatewayError
from tinyllm.serve.requests import MAX_TOKENS_LIMIT, Call, parse_call

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request
    from tinyllm.serve.config import ModelRoute

__all__ = ["OLLAMA_VERSION", "OllamaExchange", "model_list", "parse_ollama", "show"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The Ollama API version reported by ``/api/version`` (clients compare it with the
#: version they need; this is the API the gateway speaks, not a tinyllm version).
OLLAMA_VERSION = "0.12.0"
_NDJSON = [(b"content-type", b"application/x-ndjson")]
_JSON = [(b"content-type", b"application/json; charset=utf-8")]
# Ollama's options -> the OpenAI-style names the upstreams take (num_predict, which has
# values of its own, is read by _token_limit).
_OPTIONS = {"temperature": "temperature", "top_p": "top_p",
            "top_k": "top_k", "stop": "stop", "seed": "seed", "min_p": "min_p",
            "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty"}
#: Ollama's num_predict values that set no limit: -1 generates until a stop (Ollama's
#: default), -2 until the context is full. Both leave max_tokens to the upstream.
_NO_TOKEN_LIMIT = (-1, -2)


def _bad(message: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request")


def parse_ollama(raw: bytes, endpoint: str) -> tuple[Call, bool]:
    """The gateway call for an Ollama ``chat`` or ``generate`` body, and whether the
    client wants a stream. The upstream is always asked for a stream (tokens are timed
    as they come); a whole answer is put together here."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON (UTF-8): {str(exc).split(':')[0][:100]}") \
            from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    if endpoint in ("embed", "embeddings"):
        return _embedding(body, endpoint), False
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false")
    openai: dict[str, Any] = {"model": body.get("model"), "stream": True}
    options = body.get("options")
    if options is None:
        options = {}
    elif not isinstance(options, dict):
        raise _bad("options must be an object")
    for name, target in _OPTIONS.items():
        if options.get(name) is not None:
            openai[target] = options[name]
    limit = options.get("num_predict")
    if limit is not None and (tokens := _token_limit(limit)) is not None:
        openai["max_tokens"] = tokens
    if body.get("format") == "json":
        openai["response_format"] = {"type": "json_object"}
    if endpoint == "chat":
        openai["messages"] = body.get("messages")
        kind = "chat"
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise _bad("prompt must be a string")
        system = body.get("system")
        if system is not None and not isinstance(system, str):
            raise _bad("system must be a string")
        if system:
            openai["messages"] = [{"role": "system", "content": system},
                                  {"role": "user", "content": prompt}]
            kind = "chat"
        else:
            openai["prompt"] = prompt
            kind = "completion"
    call = parse_call(orjson.dumps(openai), kind)
    call.client_stream = stream
    return call, stream


def _token_limit(value: Any) -> int | None:
    """``options.num_predict`` as the ``max_tokens`` to send: None for no limit."""
    whole = type(value) in (int, float) and float(value).is_integer()
    if whole and int(value) in _NO_TOKEN_LIMIT:
        return None
    if not whole or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise _bad(f"options.num_predict must be a whole number from 1 to "
                   f"{MAX_TOKENS_LIMIT:,}, or -1 (until a stop) or -2 (until the context "
                   f"is full), got {value!r:.40}")
    return int(value)


def _embedding(body: dict[str, Any], endpoint: str) -> Call:
    """``/api/embed`` (``input``: a string or a list of them) or the older
    ``/api/embeddings`` (``prompt``: one string) as the OpenAI embeddings call."""
    if endpoint == "embed":
        given = body.get("input")
        if not (isinstance(given, str) and given) and not (
                isinstance(given, list) and given and all(isinstance(i, str) for i in given)):
            raise _bad("input must be a non-empty string or a non-empty list of strings")
    else:
        given = body.get("prompt")
        if not isinstance(given, str) or not given:
            raise _bad("prompt must be a non-empty string")
    openai: dict[str, Any] = {"model": body.get("model"), "input": given}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is float and dimensions.is_integer() and dimensions < 2**31:
            dimensions = int(dimensions)  # 8.0 is the whole number JSON Schema calls 8
        if type(dimensions) is not int or not 1 <= dimensions < 2**31:
            # (an int past 64 bits would not even serialise: a 500, found by the soak)
            raise _bad("dimensions must be a whole number from 1 to 2,147,483,647")
        openai["dimensions"] = dimensions
    call = parse_call(orjson.dumps(openai), "embedding")
    call.client_stream = False
    return call


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class OllamaExchange:
    """An exchange answered the way Ollama answers (see the module docstring); it
    stands where the OpenAI API's ``Exchange`` does for the shared call code."""

    __slots__ = (
        "began",
        "chat",
        "done",
        "embed",
        "finish",
        "gone",
        "model",
        "req",
        "request_id",
        "send",
        "sent",
        "status",
        "stream",
        "streaming",
        "texts",
        "upstream_timings",
        "upstream_wait",
    )

    def __init__(self, send: Send, began: float, request_id: bytes, model: str,
                 chat: bool, stream: bool) -> None:
        self.send = send
        self.began = began
        self.request_id = request_id
        self.model = model
        self.chat = chat
        self.stream = stream
        self.req: Request | None = None
        self.upstream_wait = 0.0
        self.status = 0
        self.sent = self.streaming = self.gone = self.done = False
        self.texts: list[str] = []
        self.finish = "stop"
        # "embed" or "embeddings": a 200 is the upstream's OpenAI embeddings, translated
        self.embed: str | None = None
        # An Ollama upstream's own timings (ns), reported instead of the gateway's.
        self.upstream_timings: dict[str, int] | None = None

    def overhead(self) -> float:
        return max(0.0, perf_counter() - self.began - self.upstream_wait)

    def _headers(self, base: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [*base, (b"x-request-id", self.request_id)] if self.request_id else base

    def _line(self, piece: str) -> bytes:
        if self.chat:
            return orjson.dumps({"model": self.model, "created_at": _now(),
                                 "message": {"role": "assistant", "content": piece},
                                 "done": False}) + b"\n"
        return orjson.dumps({"model": self.model, "created_at": _now(), "response": piece,
                             "done": False}) + b"\n"

    async def whole(self, status: int, body: bytes,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status, self.sent = status, True
        if status == 200 and self.embed is not None:
            body = self._embeddings(body)
        out = self._headers(headers or _JSON)
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [*out, (b"content-length", b"%d" % len(body))]})
        await self.send({"type": "http.response.body", "body": body})

    def _embeddings(self, body: bytes) -> bytes:
        """The OpenAI embeddings answer as Ollama's ``/api/embed`` (or ``/api/embeddings``)."""
        value = orjson.loads(body)
        data = value.get("data") if isinstance(value, dict) else None
        vectors = [d.get("embedding") for d in sorted(
            (d for d in data if isinstance(d, dict)), key=lambda d: d.get("index") or 0)] \
            if isinstance(data, list) else []
        if self.embed == "embeddings":
            return orjson.dumps({"embedding": vectors[0] if vectors else []})
        usage = value.get("usage") if isinstance(value, dict) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return orjson.dumps({
            "model": self.model, "embeddings": vectors,
            "total_duration": int((perf_counter() - self.began) * 1e9), "load_duration": 0,
            "prompt_eval_count": prompt if isinstance(prompt, int) else 0})

    async def error(self, err: GatewayError) -> None:
        headers = list(_JSON)
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(err.retry_after))).encode()))
        headers.extend(err.extra_headers)
        await self.whole(err.status, orjson.dumps({"error": err.message}), headers)

    async def start_stream(self) -> None:
        if not self.stream:
            return  # the whole answer goes out at the end
        self.status, self.sent, self.streaming = 200, True, True
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": self._headers(_NDJSON)})

    async def event(self, payload: bytes) -> None:
        await self.events([payload])

    async def events(self, payloads: list[bytes]) -> None:
        lines = []
        for payload in payloads:
            chunk = orjson.loads(payload)
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") if "delta" in choice \
                    else choice.get("text")
                if choice.get("finish_reason"):
                    self.finish = str(choice["finish_reason"])
                if piece:
                    if self.stream:
                        lines.append(self._line(piece))
                    else:
                        self.texts.append(piece)
        if lines:
            await self.send({"type": "http.response.body", "body": b"".join(lines),
                             "more_body": True})

    async def comment(self) -> None:
        """NDJSON has no comments: nothing to keep the line alive with."""

    def _final(self) -> dict[str, Any]:
        req = self.req
        total = int((perf_counter() - self.began) * 1e9)
        ttft = req.ttft if req is not None and req.ttft is not None else None
        prompt_ns = int(ttft * 1e9) if ttft is not None else 0
        final: dict[str, Any] = {"model": self.model, "created_at": _now()}
        if self.chat:
            final["message"] = {"role": "assistant",
                                "content": "" if self.stream else "".join(self.texts)}
        else:
            final["response"] = "" if self.stream else "".join(self.texts)
        final.update({
            "done": True, "done_reason": self.finish, "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": req.input_tokens if req is not None else 0,
            "prompt_eval_duration": prompt_ns,
            "eval_count": (req.usage_output_tokens or req.output_tokens)
            if req is not None else 0,
            "eval_duration": max(0, total - prompt_ns),
        })
        if self.upstream_timings:  # an Ollama upstream's own figures, passed through
            final.update(self.upstream_timings)
        return final

    async def end_stream(self) -> None:
        final = orjson.dumps(self._final())
        if not self.stream:
            await self.whole(200, final)
            return
        await self.send({"type": "http.response.body", "body": final + b"\n"})

    async def stream_error(self, err: GatewayError) -> None:
        # The status is out: the error goes as a line, which Ollama's clients raise on.
        await self.send({"type": "http.response.body", "more_body": False,
                         "body": orjson.dumps({"error": err.message}) + b"\n"})


def _details(route: ModelRoute) -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf" if route.provider == "local" else "",
            "family": route.provider, "families": [route.provider],
            "parameter_size": "", "quantization_level": ""}


def _card(route: ModelRoute) -> dict[str, Any]:
    return {"name": route.name, "model": route.name, "modified_at": "1970-01-01T00:00:00Z",
            "size": 0, "digest": hashlib.sha256(route.name.encode()).hexdigest(),
            "details": _details(route)}


def model_list(routes: list[ModelRoute]) -> bytes:
    """``/api/tags``: the models, as Ollama lists what it has pulled."""
    return orjson.dumps({"models": [_card(r) for r in routes]})


def show(route: ModelRoute) -> bytes:
    """``/api/show`` of one model."""
    return orjson.dumps({"modelfile": "", "parameters": "", "template": "",
                         "details": _details(route), "model_info": {},
                         "capabilities": ["completion"],
                         "modified_at": "1970-01-01T00:00:00Z"})
