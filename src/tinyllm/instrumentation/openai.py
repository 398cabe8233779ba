"""Instrumentation of the ``openai`` SDK: its resource methods, not its HTTP layer.

Wrapped, sync and async: ``chat.completions.create``/``parse``, ``completions.create``,
``embeddings.create`` and ``responses.create``/``parse`` (streamed or not, and through
``with_raw_response`` / ``with_streaming_response`` and the ``stream()`` helpers, which
call the same methods).
A streamed result stays the SDK's own ``Stream``/``AsyncStream`` (its class is swapped
for a subclass that observes each chunk), so ``isinstance`` checks, ``close()``,
``with`` blocks and ``.response`` behave as before.

Example:
    >>> import tinyllm
    >>> tinyllm.instrument(ollama=False)          # doctest: +SKIP
    >>> client = openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="x")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

from tinyllm._observed import observed_endpoint, observing_endpoints
from tinyllm.instrumentation._call import (
    Call,
    OnItem,
    fault,
    observe_items,
    observe_items_async,
)
from tinyllm.instrumentation._patch import Patches
from tinyllm.lifecycle import get_lifecycle

__all__ = ["DISTRIBUTION", "SUPPORTED", "TESTED", "patch"]

DISTRIBUTION = "openai"
#: The releases instrumented: ``low <= version < below``.
SUPPORTED = ((1, 40), (4,))
#: The release the tests run against.
TESTED = "3.57.0"

_RAW_HEADER = "X-Stainless-Raw-Response"
OnChunk = OnItem


# -- what the SDK's objects say ---------------------------------------------------------
_FIELDS: dict[Any, frozenset[str]] = {}


def _fields(cls: Any) -> frozenset[str]:
    """The fields of one of the SDK's model classes. Reading a field a model lacks goes
    through pydantic's ``__getattr__`` and an exception: several microseconds, so the
    readers below ask first."""
    found = _FIELDS.get(cls)
    if found is None:
        names = getattr(cls, "model_fields", None) or getattr(cls, "__fields__", None) or {}
        found = _FIELDS[cls] = frozenset(names)
    return found


def _usage(call: Call, usage: Any) -> None:
    if usage is None:
        return
    if "prompt_tokens" in _fields(type(usage)):  # chat, completions, embeddings
        output = usage.completion_tokens if "completion_tokens" in _fields(type(usage)) else None
        details = getattr(usage, "prompt_tokens_details", None)
        call.request.usage(usage.prompt_tokens, output, _cached(details))
    else:  # the Responses API
        call.request.usage(getattr(usage, "input_tokens", None),
                           getattr(usage, "output_tokens", None),
                           _cached(getattr(usage, "input_tokens_details", None)))


def _cached(details: Any) -> int | None:
    """The prompt-cache hits of a usage's input details (priced apart), if reported."""
    cached = getattr(details, "cached_tokens", None)
    return cached if type(cached) is int and cached >= 0 else None


def _model(call: Call, model: Any) -> None:
    if isinstance(model, str) and model and call.request.response_model is None:
        call.request.response_model = model


def _whole(call: Call, result: Any) -> None:
    """A whole answer: chat or text completion, embeddings, a Responses API response."""
    fields = _fields(type(result))
    if "model" in fields:
        _model(call, result.model)
    if "usage" in fields:
        _usage(call, result.usage)
    if "choices" in fields and result.choices:
        call.reasons.extend(c.finish_reason for c in result.choices if c.finish_reason)
    status = result.status if "status" in fields else None  # the Responses API
    if isinstance(status, str):
        incomplete = getattr(result, "incomplete_details", None)
        reason = getattr(incomplete, "reason", None) if incomplete is not None else None
        call.reasons.append(reason if isinstance(reason, str) else status)


def _chat_chunk(call: Call, chunk: Any) -> bool:
    """Observe one ``ChatCompletionChunk``; False: hide it from the caller."""
    choices = chunk.choices
    if choices:
        produced = False
        for choice in choices:
            delta = choice.delta
            if delta.content or delta.tool_calls or delta.refusal:
                produced = True
            if choice.finish_reason:
                call.reasons.append(choice.finish_reason)
        if produced:
            call.request.token()
    return _chunk_end(call, chunk, choices)


def _text_chunk(call: Call, chunk: Any) -> bool:
    """Observe one streamed text ``Completion``."""
    choices = chunk.choices
    if choices:
        produced = False
        for choice in choices:
            if choice.text:
                produced = True
            if choice.finish_reason:
                call.reasons.append(choice.finish_reason)
        if produced:
            call.request.token()
    return _chunk_end(call, chunk, choices)


def _chunk_end(call: Call, chunk: Any, choices: Any) -> bool:
    if call.request.response_model is None:
        _model(call, chunk.model)
    usage = chunk.usage
    if usage is not None:
        _usage(call, usage)
        if call.hide_usage:
            if not choices:
                return False  # the usage-only chunk we asked for
            chunk.usage = None
    return True


_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _response_event(call: Call, event: Any) -> bool:
    """Observe one Responses API stream event."""
    kind = getattr(event, "type", None)
    if kind == "response.output_text.delta":
        call.request.token()
    elif kind in _RESPONSE_ENDS:
        _whole(call, event.response)
    return True


def _safe(on_chunk: OnChunk, call: Call, chunk: Any) -> bool:
    try:
        return on_chunk(call, chunk)
    except Exception as exc:  # a chunk shaped unlike any we know: show it, count ours
        fault("reading a chunk", exc)
        return True


# -- streams ----------------------------------------------------------------------------
def _stream_classes(stream_type: type, async_stream_type: type) -> tuple[type, type]:
    """Subclasses of the SDK's stream classes that observe each chunk. ``for chunk in
    stream`` (the common way) runs one generator loop (``observe_items``); ``next(stream)``
    goes through ``__next__``; both read from the SDK's own iterator, so mixing them
    observes each chunk once."""

    class ObservedStream(stream_type):  # type: ignore[misc]
        _tinyllm_call: Call
        _tinyllm_chunk: OnChunk

        def __next__(self) -> Any:
            call = self._tinyllm_call
            try:
                while True:
                    chunk = self._iterator.__next__()
                    if _safe(self._tinyllm_chunk, call, chunk):
                        return chunk
            except StopIteration:
                call.finish()
                raise
            except BaseException as exc:
                call.fail(exc)
                raise

        def __iter__(self) -> Any:
            return observe_items(self._tinyllm_call, self._iterator, self._tinyllm_chunk)

        def close(self) -> None:
            self._tinyllm_call.cancel()
            super().close()

    class ObservedAsyncStream(async_stream_type):  # type: ignore[misc]
        _tinyllm_call: Call
        _tinyllm_chunk: OnChunk

        async def __anext__(self) -> Any:
            call = self._tinyllm_call
            try:
                while True:
                    chunk = await self._iterator.__anext__()
                    if _safe(self._tinyllm_chunk, call, chunk):
                        return chunk
            except StopAsyncIteration:
                call.finish()
                raise
            except BaseException as exc:  # CancelledError ends it as cancelled
                call.fail(exc)
                raise

        def __aiter__(self) -> Any:
            return observe_items_async(self._tinyllm_call, self._iterator,
                                       self._tinyllm_chunk)

        async def close(self) -> None:
            self._tinyllm_call.cancel()
            await super().close()

    ObservedStream.__name__ = ObservedStream.__qualname__ = stream_type.__name__
    ObservedAsyncStream.__name__ = ObservedAsyncStream.__qualname__ = async_stream_type.__name__
    return ObservedStream, ObservedAsyncStream


class _Types:
    """The SDK's classes the wrappers dispatch on, read once at patch time."""

    def __init__(self, sdk: ModuleType) -> None:
        from openai import _legacy_response, _response, _streaming, _types

        # What an argument the caller left out holds (``omit``, ``NOT_GIVEN``).
        self.unset = tuple(getattr(_types, name) for name in ("Omit", "NotGiven")
                           if hasattr(_types, name))
        self.stream = _streaming.Stream
        self.async_stream = _streaming.AsyncStream
        self.observed_stream, self.observed_async_stream = _stream_classes(
            self.stream, self.async_stream)
        self.legacy = _legacy_response.LegacyAPIResponse
        self.api_response = _response.APIResponse
        self.async_api_response = _response.AsyncAPIResponse


def _attach(types: _Types, call: Call, result: Any, on_chunk: OnChunk) -> bool:
    """Observe ``result`` (a stream, a whole answer); True when it is a stream."""
    # Only the SDK's own classes are swapped: a subclass of its own would lose its
    # overrides, so it is observed as a whole answer instead.
    if type(result) is types.stream:
        result.__class__ = types.observed_stream
    elif type(result) is types.async_stream:
        result.__class__ = types.observed_async_stream
    else:
        _whole(call, result)
        call.finish()
        return False
    result._tinyllm_call = call
    result._tinyllm_chunk = on_chunk
    call.cancel_when_released(result)
    return True


def _observe(types: _Types, call: Call, result: Any, on_chunk: OnChunk) -> None:
    """Observe what the SDK returned, whatever wrapper the caller used."""
    if isinstance(result, types.legacy):  # with_raw_response: the body is read already
        _attach(types, call, result.parse(), on_chunk)  # cached: the caller's parse() agrees
    elif isinstance(result, types.api_response):  # with_streaming_response
        _hook_response(types, call, result, on_chunk)
    elif isinstance(result, types.async_api_response):
        _hook_async_response(types, call, result, on_chunk)
    else:
        _attach(types, call, result, on_chunk)


class _Unread:
    """A response whose body the SDK left unread (``with_streaming_response``): the
    request ends at ``parse()`` (a whole answer), with the stream ``parse()`` returns,
    or at ``close()`` (the caller read the body themselves: ``success``, no counts)."""

    __slots__ = ("call", "on_chunk", "stream", "types")

    def __init__(self, types: _Types, call: Call, on_chunk: OnChunk) -> None:
        self.types, self.call, self.on_chunk = types, call, on_chunk
        self.stream: bool | None = None  # None: not parsed yet

    def parsed(self, result: Any) -> None:
        if self.stream is None:
            try:
                self.stream = _attach(self.types, self.call, result, self.on_chunk)
            except Exception as exc:
                fault("reading the parsed response", exc)

    def closed(self) -> None:
        self.call.cancel() if self.stream else self.call.finish()


def _hook_response(types: _Types, call: Call, response: Any, on_chunk: OnChunk) -> None:
    unread, parse, close = _Unread(types, call, on_chunk), response.parse, response.close

    @functools.wraps(parse)
    def observed_parse(*args: Any, **kwargs: Any) -> Any:
        parsed = parse(*args, **kwargs)
        unread.parsed(parsed)
        return parsed

    @functools.wraps(close)
    def observed_close() -> None:
        try:
            close()
        finally:
            unread.closed()

    response.parse, response.close = observed_parse, observed_close
    call.cancel_when_released(response)


def _hook_async_response(types: _Types, call: Call, response: Any, on_chunk: OnChunk) -> None:
    unread, parse, close = _Unread(types, call, on_chunk), response.parse, response.close

    @functools.wraps(parse)
    async def observed_parse(*args: Any, **kwargs: Any) -> Any:
        parsed = await parse(*args, **kwargs)
        unread.parsed(parsed)
        return parsed

    @functools.wraps(close)
    async def observed_close() -> None:
        try:
            await close()
        finally:
            unread.closed()

    response.parse, response.close = observed_parse, observed_close
    call.cancel_when_released(response)


# -- the wrappers -----------------------------------------------------------------------
def _begin(resource: Any, kwargs: dict[str, Any], kind: str, types: _Types,
           stream_usage: bool) -> tuple[Call | None, dict[str, Any]]:
    """The call's request (None: not ours to observe) and the arguments to send."""
    try:
        client = getattr(resource, "_client", None)
        if observing_endpoints() and client is not None and observed_endpoint(
                str(client.base_url)):
            return None, kwargs  # a gateway in this process observes it
        stream = kwargs.get("stream") is True
        call = Call.begin(get_lifecycle(), kwargs.get("model"),
                          f"{kind}_stream" if stream else kind, DISTRIBUTION)
        if call is None or not stream or kind == "response" or not stream_usage:
            return call, kwargs
        headers = kwargs.get("extra_headers") or {}
        if _RAW_HEADER in headers:  # the caller may read the raw bytes: send as asked
            return call, kwargs
        options = kwargs.get("stream_options")
        if isinstance(options, dict):
            if "include_usage" in options:
                return call, kwargs  # the caller decided
            options = {**options, "include_usage": True}
        elif options is None or isinstance(options, types.unset):
            options = {"include_usage": True}
        else:
            return call, kwargs
        call.hide_usage = True
        return call, {**kwargs, "stream_options": options}
    except Exception as exc:
        fault("opening the request", exc)
        return None, kwargs


def _answered(types: _Types, call: Call, result: Any, on_chunk: OnChunk) -> Any:
    """Observe what the SDK returned and hand it back, whatever happens here."""
    try:
        _observe(types, call, result, on_chunk)
    except Exception as exc:
        fault("reading the response", exc)
        call.finish()
    return result


# The wrappers keep the SDK's method as ``__wrapped__`` (functools.wraps).
def _wrap(original: Any, kind: str, on_chunk: OnChunk, types: _Types,
          stream_usage: bool) -> Any:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call, sent = _begin(self, kwargs, kind, types, stream_usage)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **sent)
        except BaseException as exc:
            call.fail(exc)
            raise
        return _answered(types, call, result, on_chunk)

    return create


def _wrap_async(original: Any, kind: str, on_chunk: OnChunk, types: _Types,
                stream_usage: bool) -> Any:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call, sent = _begin(self, kwargs, kind, types, stream_usage)
        if call is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **sent)
        except BaseException as exc:
            call.fail(exc)
            raise
        return _answered(types, call, result, on_chunk)

    return create


def patch(sdk: ModuleType, patches: Patches, *, stream_usage: bool = True) -> None:
    """Wrap the SDK's resource methods (the originals go into ``patches``)."""
    from openai.resources import completions, embeddings
    from openai.resources.chat import completions as chat

    types = _Types(sdk)
    targets: list[tuple[type, type, str, OnChunk]] = [
        (chat.Completions, chat.AsyncCompletions, "chat", _chat_chunk),
        (completions.Completions, completions.AsyncCompletions, "completion", _text_chunk),
        (embeddings.Embeddings, embeddings.AsyncEmbeddings, "embedding", _chat_chunk),
    ]
    try:
        from openai.resources import responses
    except ImportError:  # an SDK before the Responses API
        pass
    else:
        targets.append((responses.Responses, responses.AsyncResponses, "response",
                        _response_event))
    for sync_cls, async_cls, kind, on_chunk in targets:
        # ``parse`` (structured outputs) posts on its own; the ``stream`` helpers call
        # ``create``, so they are observed through it.
        for method in ("create", "parse"):
            patches.replace(sync_cls, method, functools.partial(
                _wrap, kind=kind, on_chunk=on_chunk, types=types, stream_usage=stream_usage))
            patches.replace(async_cls, method, functools.partial(
                _wrap_async, kind=kind, on_chunk=on_chunk, types=types,
                stream_usage=stream_usage))
