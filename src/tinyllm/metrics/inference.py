"""The inference-server API: ``InferenceContext`` and the two decorators.

All three open one request on the request lifecycle, so the same request shows up in
``tinyllm_requests_total`` and ``tinyllm_inference_requests_total`` alike.

Example:
    >>> from tinyllm.metrics import InferenceContext
    >>> with InferenceContext(model="gpt4") as ctx:
    ...     ctx.set_token_count(0)
    ...     for token in ["Hel", "lo"]:
    ...         ctx.set_token_count(ctx.token_count + 1)
    ...         ctx.record_inter_token_latency(0.02)
    >>> ctx.token_count
    2
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

from tinyllm._validation import check_amount
from tinyllm.lifecycle import Request, get_lifecycle

__all__ = ["InferenceContext", "track_inference_request", "track_token_generation"]

_INF = float("inf")
P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")


def _not_entered(seconds: float) -> None:
    raise RuntimeError("InferenceContext is not entered; use it in a with block")


class InferenceContext:
    """Observe one inference request as a block (``with`` or ``async with``).

    ``set_token_count`` sets how many tokens have been generated so far; the moment it
    first goes above zero is the time to first token. ``record_inter_token_latency``
    observes a gap the caller measured. On exit the request's duration, status
    (success, error, timeout), token totals and rate are recorded; an exception is
    counted by its classified type and re-raised.
    """

    __slots__ = ("_count", "_observe_itl", "_request", "graph", "model", "request_type")

    def __init__(self, model: str, graph: str = "default", request_type: str = "generate"):
        self.model, self.graph, self.request_type = model, graph, request_type
        self._request: Request | None = None
        self._count = 0
        self._observe_itl: Callable[[float], None] = _not_entered

    @property
    def token_count(self) -> int:
        """Tokens generated so far (as last set)."""
        return self._count

    @property
    def request(self) -> Request:
        """The lifecycle request behind this context (for its timings)."""
        if self._request is None:
            raise RuntimeError("InferenceContext is not entered; use it in a with block")
        return self._request

    def set_token_count(self, count: int) -> None:
        """Set the tokens generated so far; the first non-zero count marks TTFT."""
        if self._count and type(count) is int and count >= 0:  # per-token fast path
            self._count = count
            return
        check_amount("count", count, integral=True)
        req = self.request
        if count and not self._count:
            req.first_token()
        self._count = int(count)

    def record_inter_token_latency(self, seconds: float) -> None:
        """Observe one inter-token gap, in seconds."""
        if type(seconds) is float and 0.0 <= seconds < _INF:
            self._observe_itl(seconds)  # per-token fast path (raises until entered)
            return
        self.request.inter_token_latency(seconds)

    def record_input_tokens(self, count: int) -> None:
        """Record the prompt's token count."""
        self.request.usage(input_tokens=count)

    def __enter__(self) -> InferenceContext:
        # Entered as a block, so with tracing on the request's span is current inside it.
        self._request = get_lifecycle().start(self.model, self.graph, self.request_type)
        self._request.__enter__()
        self._observe_itl = self._request.inter_token_observer
        self._count = 0
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        req = self.request
        req.usage(output_tokens=self._count)
        req.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> InferenceContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def track_inference_request(
    model: str, graph: str = "default", request_type: str = "generate"
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function: each call is one observed request.

    Example:
        >>> @track_inference_request(model="gpt4")
        ... def complete(prompt: str) -> str:
        ...     return prompt.upper()
        >>> complete("hi")
        'HI'
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with get_lifecycle().start(model, graph, request_type):
                    return await async_fn(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with get_lifecycle().start(model, graph, request_type):
                return fn(*args, **kwargs)

        return run

    return decorate


def _end(req: Request, count: int, exc: BaseException | None) -> None:
    """End a generator's request with ``count`` tokens; a consumer that stopped early
    (``GeneratorExit``) makes it ``cancelled``, not a failure."""
    req.output_tokens = count
    req.end(exc)


# The per-token loop is written out in both wrappers, sync and async, with the clock,
# the count and the last time in local variables, as a hand-tuned prometheus_client loop
# would: a shared per-token call (req.token()) costs ~0.3 µs a token more, a tenth of the
# whole per-token cost (docs/performance.md).
@overload
def _wrap_generator(
    fn: Callable[P, AsyncIterator[Y]], model: str, graph: str, request_type: str
) -> Callable[P, AsyncIterator[Y]]: ...
@overload
def _wrap_generator(
    fn: Callable[P, Iterator[Y]], model: str, graph: str, request_type: str
) -> Callable[P, Iterator[Y]]: ...
def _wrap_generator(fn: Any, model: str, graph: str, request_type: str) -> Any:
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            req = get_lifecycle().start(model, graph, request_type)
            observe, count, last = req.inter_token_observer, 0, 0.0
            observe_chunk = req.chunk_observer  # each item is one token and one chunk
            try:
                async for item in fn(*args, **kwargs):
                    now = perf_counter()
                    if count:
                        observe(now - last)
                        observe_chunk(now - last)
                    else:
                        req.first_token()
                    last, count = now, count + 1
                    yield item
            except BaseException as exc:
                _end(req, count, exc)
                raise
            _end(req, count, None)

        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Iterator[Any]:
        req = get_lifecycle().start(model, graph, request_type)
        observe, count, last = req.inter_token_observer, 0, 0.0
        observe_chunk = req.chunk_observer  # each item is one token and one chunk
        try:
            for item in fn(*args, **kwargs):
                now = perf_counter()
                if count:
                    observe(now - last)
                    observe_chunk(now - last)
                else:
                    req.first_token()
                last, count = now, count + 1
                yield item
        except BaseException as exc:
            _end(req, count, exc)
            raise
        _end(req, count, None)

    return run


def track_token_generation(
    model: str, graph: str = "default", request_type: str = "stream"
) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Decorate a sync or async generator: each yielded item is one token.

    Records time to first token, the n-1 inter-token gaps, tokens per request and the
    rate. A consumer that stops early ends the request as ``cancelled`` with the tokens
    seen so far (not an error); an exception in the generator ends it as an error.

    Example:
        >>> @track_token_generation(model="gpt4")
        ... def stream(prompt: str):
        ...     yield from prompt.split()
        >>> list(stream("one two"))
        ['one', 'two']
    """
    if not isinstance(model, str):
        raise TypeError(f"model must be a str, got {type(model).__name__}")

    def decorate(fn: Callable[P, Any]) -> Callable[P, Any]:
        if not (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)):
            raise TypeError(
                f"track_token_generation decorates generator functions; {fn.__name__} is not "
                "one (use track_inference_request for plain functions)"
            )
        return cast(Callable[P, Any], _wrap_generator(fn, model, graph, request_type))

    return decorate
