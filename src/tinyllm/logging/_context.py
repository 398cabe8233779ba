"""Context bound for every log line of the current thread or asyncio task."""

from __future__ import annotations

from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from structlog.typing import EventDict, WrappedLogger

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})

# One variable holding an immutable mapping, replaced on every bind: merging it into an
# event is one .get() (structlog's own contextvars keep one variable per key and scan the
# whole context on every log call). A new thread starts empty; an asyncio task starts
# with a copy of its creator's context, and what it binds stays in the task.
_CONTEXT: ContextVar[MappingProxyType[str, Any]] = ContextVar("tinyllm_log_context", default=_EMPTY)


def bind_context(**values: Any) -> None:
    """Add ``values`` to every log line of this thread / asyncio task from now on.

    Example:
        >>> bind_context(request_id="req-123", user_id="user-456")
        >>> clear_context()
    """
    _CONTEXT.set(MappingProxyType({**_CONTEXT.get(), **values}))


def unbind_context(*keys: str) -> None:
    """Stop adding ``keys`` to log lines; keys that are not bound are ignored.

    Example:
        >>> bind_context(request_id="req-123")
        >>> unbind_context("request_id")
    """
    current = _CONTEXT.get()
    if any(k in current for k in keys):
        _CONTEXT.set(MappingProxyType({k: v for k, v in current.items() if k not in keys}))


def clear_context() -> None:
    """Unbind everything bound with :func:`bind_context` in this thread / task.

    Example:
        >>> clear_context()
    """
    _CONTEXT.set(_EMPTY)


def current_context() -> MappingProxyType[str, Any]:
    """The bound context (read-only), for processors that need it before merging."""
    return _CONTEXT.get()


def merge_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: the bound context, under the event's own keys (the call site wins)."""
    ctx = _CONTEXT.get()
    if ctx:
        return {**ctx, **event_dict}
    return event_dict
