"""Instrumentation of the ``ollama`` SDK: ``chat``, ``generate``, ``embed`` (and the
older ``embeddings``) on ``Client`` and ``AsyncClient``, and the module-level functions.

The module-level functions (``ollama.chat``...) are methods bound to a default client
when ``ollama`` is imported, so they are rebound here; a name imported before
instrumentation (``from ollama import chat``) keeps the unobserved method. A streamed
call returns a generator that the SDK only sends on its first iteration: the request's
clock (duration, TTFT) starts there.

Example:
    >>> import tinyllm
    >>> tinyllm.instrument(openai=False)                       # doctest: +SKIP
    >>> ollama.chat("llama3.2", messages=[...])                # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

from tinyllm._observed import observed_endpoint, observing_endpoints
from tinyllm.instrumentation._call import Call, fault, observe_items, observe_items_async
from tinyllm.instrumentation._patch import Patches
from tinyllm.lifecycle import get_lifecycle

__all__ = ["DISTRIBUTION", "SUPPORTED", "TESTED", "patch"]

DISTRIBUTION = "ollama"
#: The releases instrumented: ``low <= version < below`` (0.5 added ``thinking``).
SUPPORTED = ((0, 5), (0, 7))
#: The release the tests run against.
TESTED = "0.6.3"

_METHODS = {"chat": "chat", "generate": "completion", "embed": "embedding",
            "embeddings": "embedding"}


def _chat_part(call: Call, part: Any) -> bool:
    """Observe one streamed chat part (fields read directly: a missing attribute on the
    SDK's models takes pydantic's slow path, several times the cost of the rest)."""
    message = part.message
    if message.content or message.thinking or message.tool_calls:
        call.request.token()
    if part.done:
        _done(call, part)
    return True


def _generate_part(call: Call, part: Any) -> bool:
    """Observe one streamed generate part."""
    if part.response or part.thinking:
        call.request.token()
    if part.done:
        _done(call, part)
    return True


def _done(call: Call, part: Any) -> None:
    """The last part, or a whole answer: the model that answered, the counts, why it
    stopped (once a call: the older ``embeddings`` answer has none of them)."""
    request = call.request
    model = getattr(part, "model", None)
    if isinstance(model, str) and model:
        request.response_model = model
    request.usage(getattr(part, "prompt_eval_count", None), getattr(part, "eval_count", None))
    reason = getattr(part, "done_reason", None)
    if isinstance(reason, str) and reason:
        call.reasons.append(reason)


_PARTS = {"chat": _chat_part, "completion": _generate_part}


def _whole(call: Call, part: Any) -> None:
    """A whole (not streamed) answer: its usage, not a token stream."""
    try:
        _done(call, part)
    except Exception as exc:
        fault("reading the response", exc)
    call.finish()


def _begin(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
           kind: str) -> Call | None:
    try:
        host = getattr(getattr(client, "_client", None), "base_url", None) \
            if observing_endpoints() else None
        if host is not None and observed_endpoint(str(host)):
            return None  # a gateway in this process observes it
        model = args[0] if args else kwargs.get("model")
        stream = kwargs.get("stream") is True
        return Call.begin(get_lifecycle(), model, f"{kind}_stream" if stream else kind,
                          DISTRIBUTION)
    except Exception as exc:
        fault("opening the request", exc)
        return None


def _wrap(original: Callable[..., Any], kind: str) -> Any:
    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, args, kwargs, kind)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") is True and isinstance(result, Iterator):
            observed = observe_items(call, result, _PARTS.get(kind, _generate_part),
                                     sent_on_first=True)
            call.cancel_when_released(observed)
            return observed
        _whole(call, result)
        return result

    return method


def _wrap_async(original: Callable[..., Any], kind: str) -> Any:
    @functools.wraps(original)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _begin(self, args, kwargs, kind)
        if call is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") is True and isinstance(result, AsyncIterator):
            observed = observe_items_async(call, result, _PARTS.get(kind, _generate_part),
                                           sent_on_first=True)
            call.cancel_when_released(observed)
            return observed
        _whole(call, result)
        return result

    return method


def patch(sdk: ModuleType, patches: Patches) -> None:
    """Wrap the clients' methods and rebind the module-level functions."""
    for name, kind in _METHODS.items():
        patches.replace(sdk.Client, name, functools.partial(_wrap, kind=kind))
        patches.replace(sdk.AsyncClient, name, functools.partial(_wrap_async, kind=kind))
    default = getattr(sdk, "_client", None)
    if default is None:
        return
    for name in _METHODS:
        bound = getattr(sdk, name, None)
        if getattr(bound, "__self__", None) is default:  # ollama.chat = _client.chat
            patches.replace(sdk, name, functools.partial(_rebind, default, name))


def _rebind(client: Any, name: str, original: Any) -> Any:
    """The default client's method ``name``, looked up again (now the wrapped one)."""
    return getattr(client, name)
