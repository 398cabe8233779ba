"""The span API used on hot paths: ``trace_span``, ``traced`` and friends.

Whether tracing is on is decided when telemetry is configured: ``_tracer`` is either an
SDK tracer or ``None``, and every function here reads that one module global. With
tracing off ``trace_span`` returns one shared no-op context manager (no allocation, no
OpenTelemetry call), and a ``traced`` function calls straight through.
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from opentelemetry.context import Context
from opentelemetry.context import attach as _attach
from opentelemetry.context import detach as _detach
from opentelemetry.trace import (
    INVALID_SPAN,
    Span,
    Status,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)

from tinyllm.redaction import redact, redact_text

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from tinyllm.lifecycle import Request

__all__ = [
    "get_current_span_id",
    "get_current_trace_id",
    "record_span_event",
    "set_span_attribute",
    "set_span_error",
    "trace_span",
    "traced",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The SDK tracer while tracing is on; None while it is off. Set only by _install().
_tracer: Tracer | None = None


def _install(tracer: Tracer | None) -> None:
    global _tracer
    _tracer = tracer


# -- attributes -------------------------------------------------------------------------
_PRIMITIVES = (str, bool, int, float)


def _check_attributes(attributes: Any, argument: str = "attributes") -> None:
    if attributes is not None and not isinstance(attributes, Mapping):
        raise TypeError(
            f"{argument} must be a mapping of str to values (or None), "
            f"got {type(attributes).__name__}"
        )


def _clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """``attributes`` through the redaction policy, as values OpenTelemetry accepts.

    Redaction sees the whole mapping, so key-based rules (``api_key``, ``prompt``) apply.
    None values are left out; values OpenTelemetry cannot store (dicts, objects) become
    redacted text rather than being dropped with a warning.
    """
    out: dict[str, AttributeValue] = {}
    for key, value in redact(attributes).items():  # the same keys, values redacted
        if key.__class__ is not str or not key:
            raise TypeError(f"attribute names must be non-empty str, got {key!r}")
        cls = value.__class__
        if cls is str or cls is int or cls is float or cls is bool:
            out[key] = value
        elif value is None:
            continue
        elif isinstance(value, _PRIMITIVES):  # subclasses (enums, ...)
            out[key] = value
        elif (
            isinstance(value, list | tuple)
            and value
            and all(type(v) is type(value[0]) for v in value)
            and isinstance(value[0], _PRIMITIVES)
        ):
            out[key] = tuple(value)
        else:
            out[key] = redact_text(str(value))
    return out


def _record_error(span: Span, exc: BaseException) -> None:
    """Status ERROR, ``error.type`` and an ``exception`` event, message redacted."""
    kind = type(exc).__qualname__
    message = redact_text(str(exc))
    stack = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    span.set_attribute("error.type", kind)
    span.record_exception(
        exc, attributes={"exception.message": message, "exception.stacktrace": stack}
    )
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))


def _end(span: Span, exc: BaseException | None) -> None:
    """End ``span``, marked ERROR by ``exc`` unless that is None or ``GeneratorExit`` (a
    generator being closed early: not a failure)."""
    if exc is not None and not isinstance(exc, GeneratorExit) and span.is_recording():
        _record_error(span, exc)
    span.end()


# -- trace_span -------------------------------------------------------------------------
class _NoopSpan:
    """What ``trace_span`` returns with tracing off: shared, stateless, free."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NOOP = _NoopSpan()


class _LiveSpan:
    """A span made current for a ``with`` block (lighter than OTel's generator-based
    ``start_as_current_span``); an exception leaving the block marks the span ERROR."""

    __slots__ = ("_attributes", "_name", "_span", "_token")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None) -> None:
        self._name = name
        self._attributes = attributes
        self._token: object = None

    def __enter__(self) -> Span:
        tracer = _tracer
        if tracer is None:  # telemetry was shut down between trace_span() and `with`
            self._span: Span = INVALID_SPAN
            return INVALID_SPAN
        attrs = self._attributes
        span = tracer.start_span(self._name, attributes=_clean(attrs) if attrs else None)
        self._span = span
        self._token = _attach(set_span_in_context(span))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is None:
            return
        self._token = None
        try:
            _end(self._span, exc)
        finally:
            _detach(token)  # type: ignore[arg-type]


def trace_span(
    name: str, attributes: Mapping[str, Any] | None = None
) -> AbstractContextManager[Span, None]:
    """Context manager: a span named ``name``, current inside the block; yields the span.

    ``attributes`` pass through the redaction policy first. An exception leaving the
    block sets the span's status to ERROR with an ``exception`` event, and propagates.
    With tracing off this costs a function call and yields OpenTelemetry's
    ``INVALID_SPAN`` (``get_span_context().trace_id == 0``).

    Example:
        >>> with trace_span("node_execution", attributes={"node_id": "entry"}) as span:
        ...     trace_id = span.get_span_context().trace_id
    """
    if name.__class__ is not str:
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if _tracer is None:
        if attributes is not None and not isinstance(attributes, Mapping):
            _check_attributes(attributes)
        return _NOOP
    _check_attributes(attributes)
    return _LiveSpan(name, attributes)


# -- helpers on the current span ----------------------------------------------------------
def get_current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, or None outside any span.

    It reads the OpenTelemetry context, so a span opened by the application's own
    OpenTelemetry instrumentation counts too.

    Example:
        >>> get_current_trace_id() is None  # no span here
        True
    """
    ctx = get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def get_current_span_id() -> str | None:
    """The current span's id as 16 hex digits, or None outside any span.

    Example:
        >>> get_current_span_id() is None
        True
    """
    ctx = get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else None


def record_span_event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Add an event (redacted ``attributes``) to the current span; no-op outside a span.

    Example:
        >>> with trace_span("processing"):
        ...     record_span_event("cache_miss", attributes={"cache_key": "abc"})
    """
    if name.__class__ is not str:
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _check_attributes(attributes)
    if _tracer is None:
        return
    span = get_current_span()
    if span.is_recording():
        span.add_event(name, _clean(attributes) if attributes else None)


def set_span_attribute(key: str, value: Any) -> None:
    """Set one (redacted) attribute on the current span; no-op outside a span.

    Example:
        >>> with trace_span("processing"):
        ...     set_span_attribute("user_id", "user-123")
    """
    if key.__class__ is not str or not key:
        raise TypeError(f"key must be a non-empty str, got {key!r}")
    if _tracer is None:
        return
    span = get_current_span()
    if span.is_recording():
        cleaned = _clean({key: value})
        if key in cleaned:
            span.set_attribute(key, cleaned[key])


def set_span_error(exc: BaseException) -> None:
    """Mark the current span failed: status ERROR, ``error.type`` and an ``exception``
    event (message redacted). No-op outside a span.

    Example:
        >>> with trace_span("risky_operation"):
        ...     try:
        ...         raise ValueError("bad input")
        ...     except ValueError as e:
        ...         set_span_error(e)
    """
    if not isinstance(exc, BaseException):
        raise TypeError(f"exc must be an exception, got {type(exc).__name__}")
    if _tracer is None:
        return
    span = get_current_span()
    if span.is_recording():
        _record_error(span, exc)


# -- the lifecycle hook -------------------------------------------------------------------
def _activate_request_span(request: Request) -> Callable[[], None]:
    """Make ``request.span`` current (inside ``with request:``); returns the undo."""
    token = _attach(set_span_in_context(request.span))
    return functools.partial(_detach, token)


# -- traced -------------------------------------------------------------------------------
@overload
def traced(name: F) -> F: ...
@overload
def traced(
    name: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Callable[[F], F]: ...
def traced(name: Any = None, attributes: Mapping[str, Any] | None = None) -> Any:
    """Decorator: each call of the function runs in a span (default name: its qualified
    name). Works on plain and ``async`` functions and on sync and async generators —
    for a generator the span covers the whole iteration, and is current only while the
    generator's own code runs (never in the consumer's code between items).

    Usable bare (``@traced``) or called (``@traced("name", attributes={...})``). An
    exception marks the span ERROR and propagates. With tracing off the call goes
    straight to the function.

    Example:
        >>> @traced(attributes={"component": "executor"})
        ... async def execute_graph(graph_id: str) -> str:
        ...     return graph_id
        >>> import asyncio; asyncio.run(execute_graph("g1"))
        'g1'
    """
    if callable(name) and attributes is None:
        return traced()(name)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    _check_attributes(attributes)
    static = dict(attributes or {})

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"traced decorates functions, got {type(fn).__name__}")
        qualname = getattr(fn, "__qualname__", None) or repr(fn)
        span_name = name or qualname
        attrs = {"code.function.name": f"{getattr(fn, '__module__', '?')}.{qualname}", **static}
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(fn, span_name, attrs)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(fn, span_name, attrs)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                if _tracer is None:
                    return await fn(*args, **kwargs)
                with _LiveSpan(span_name, attrs):
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return fn(*args, **kwargs)
            with _LiveSpan(span_name, attrs):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return decorate


class _IterationSpan:
    """The span of one traced generator's whole iteration, ended (ERROR on an exception;
    closing early is not one) when the ``with`` block leaves. ``with`` gives the
    OpenTelemetry context to make current around each step of the generator (None
    while tracing is off), so the span is current only while the generator's own code
    runs, never in the consumer's code between items."""

    __slots__ = ("_attrs", "_name", "_span")

    def __init__(self, name: str, attrs: Mapping[str, Any]) -> None:
        self._name = name
        self._attrs = attrs
        self._span: Span = INVALID_SPAN

    def __enter__(self) -> Context | None:
        tracer = _tracer
        if tracer is None:
            return None
        span = self._span = tracer.start_span(self._name, attributes=_clean(self._attrs))
        return set_span_in_context(span)

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        _end(self._span, exc)


_NOTHING = nullcontext()  # what a traced async generator opens with tracing off


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]], span_name: str, attrs: dict[str, Any]
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        if _tracer is None:
            return (yield from fn(*args, **kwargs))
        gen = fn(*args, **kwargs)
        with _IterationSpan(span_name, attrs) as ctx:
            if ctx is None:  # telemetry was shut down just now
                return (yield from gen)
            # `yield from` with the context attached around each step, by hand: a
            # forwarding object's method call per item would cost more than the rest.
            send = gen.send
            step, arg = send, None
            while True:
                token = _attach(ctx)
                try:
                    item = step(arg)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _detach(token)
                try:
                    arg, step = (yield item), send
                except GeneratorExit:
                    token = _attach(ctx)
                    try:
                        gen.close()
                    finally:
                        _detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    arg, step = exc, gen.throw

    return run


def _wrap_async_generator(
    fn: Callable[..., AsyncIterator[Any]], span_name: str, attrs: dict[str, Any]
) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        agen: Any = fn(*args, **kwargs)
        # No `yield from` in an async generator: its steps are forwarded by hand.
        with _IterationSpan(span_name, attrs) if _tracer is not None else _NOTHING as ctx:
            asend = agen.asend
            step, arg = asend, None
            while True:
                token = _attach(ctx) if ctx is not None else None
                try:
                    item = await step(arg)
                except StopAsyncIteration:
                    return
                finally:
                    if token is not None:
                        _detach(token)
                try:
                    arg, step = (yield item), asend
                except GeneratorExit:
                    token = _attach(ctx) if ctx is not None else None
                    try:
                        await agen.aclose()
                    finally:
                        if token is not None:
                            _detach(token)
                    raise
                except BaseException as exc:  # thrown in by the consumer: pass it on
                    arg, step = exc, agen.athrow

    return run
