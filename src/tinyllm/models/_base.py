"""``ModelClient``: the one instrumented call flow every backend goes through.

A backend implements a single hook, ``_deltas(request, streamed, deadline)``, that
yields ``Delta`` pieces (text, token counts, finish reason, usage). Everything else
lives here, once, for every client:

    cache lookup (deterministic, non-streamed calls only)
      -> lifecycle request opened (metrics, span, log line, error event, store row)
      -> rate limiter (per model; the wait is recorded)
      -> retries with backoff around "open the call and get its first piece"
           (circuit breaker checked before each attempt; a failure is reported to it)
      -> pieces: tokens timed (TTFT, inter-token), text streamed, the total deadline
         checked between pieces
      -> usage and finish reason, request ended, breaker told, answer cached

Retries stop once the first piece has reached the caller: a half-streamed answer
cannot be taken back, so a failure after that ends the request with the error.

The async methods run this same flow on a worker thread (``asyncio.to_thread``), so
there is one flow and generation never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar, Self

from tinyllm.errors import classify_error
from tinyllm.lifecycle import RequestLifecycle, get_lifecycle
from tinyllm.models._types import Completion, Delta, GenerationRequest, Message
from tinyllm.resilience import (
    CircuitBreaker,
    Deadline,
    RateLimiter,
    RetryPolicy,
    Timeouts,
    counts_as_failure,
    get_circuit_breaker,
    get_rate_limiter,
    retry_call,
)

if TYPE_CHECKING:
    from tinyllm.cache import ResponseCache
    from tinyllm.metrics.collector import MetricsCollector

__all__ = ["AsyncTextStream", "ModelClient", "TextStream"]


class TextStream:
    """The pieces of a streamed answer; ``completion`` is set once it is exhausted.

    Example:
        >>> stream = client.stream("Question: 2+2?\\nAnswer:")   # doctest: +SKIP
        >>> for piece in stream:                                  # doctest: +SKIP
        ...     print(piece, end="")
        >>> stream.completion.output_tokens                       # doctest: +SKIP
    """

    def __init__(self, pieces: Iterator[str], holder: list[Completion]) -> None:
        self._pieces = pieces
        self._holder = holder

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early: the request ends as ``cancelled`` and the connection is released."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    @property
    def completion(self) -> Completion | None:
        """The finished answer, or None while pieces are still coming (or after a failure)."""
        return self._holder[0] if self._holder else None


class AsyncTextStream:
    """``TextStream`` for ``async for``: the flow runs on a worker thread and hands
    pieces to the event loop; ``aclose()`` (or leaving the loop early) cancels it."""

    _DONE = object()

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def completion(self) -> Completion | None:
        """The finished answer once the stream is exhausted."""
        return self._stream.completion

    def __aiter__(self) -> AsyncTextStream:
        return self

    def _start(self) -> asyncio.Queue[Any]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def pump() -> None:
            item: Any = self._DONE
            try:
                for piece in self._stream:
                    if self._stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as exc:  # handed to the consumer, raised there
                item = exc
            finally:
                if self._stop.is_set():
                    self._stream.close()
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(queue.put_nowait, item)

        self._thread = threading.Thread(target=pump, name="tinyllm-astream", daemon=True)
        self._thread.start()
        self._queue = queue
        return queue

    async def __anext__(self) -> str:
        queue = self._queue or self._start()
        item = await queue.get()
        if item is self._DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        piece: str = item
        return piece

    async def aclose(self) -> None:
        """Stop early; the request ends as ``cancelled``."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, 30.0)


class ModelClient(ABC):
    """The client interface: ``generate``/``stream``, sync and async, one flow.

    Subclasses set ``provider`` and implement ``_deltas``. Constructor options shared
    by every backend:

    * ``timeouts`` (connect, read, whole request, gap between streamed tokens),
    * ``retry`` (a ``RetryPolicy``; ``RetryPolicy(max_attempts=1)`` turns retries off),
    * ``breaker`` (default: the process-wide breaker for this model; ``False``: none),
    * ``rate_limit`` (requests per second for this model, shared by every client of
      the model; or a ``RateLimiter``; None: unlimited),
    * ``cache`` (a ``ResponseCache`` for deterministic, non-streamed calls),
    * ``lifecycle`` (default: the process-wide one, which feeds every sink).
    """

    provider: ClassVar[str] = "unknown"

    def __init__(
        self,
        model: str,
        *,
        graph: str = "default",
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | bool = True,
        rate_limit: float | RateLimiter | None = None,
        cache: ResponseCache | None = None,
        collector: MetricsCollector | None = None,
        lifecycle: RequestLifecycle | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must be a non-empty str")
        if not isinstance(graph, str) or not graph:
            raise ValueError("graph must be a non-empty str")
        self.model = model
        self._graph = graph
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._lifecycle = lifecycle or get_lifecycle(collector)
        self._collector = self._lifecycle.collector
        if breaker is True:
            breaker = _shared_breaker(model, self._collector)
        self.breaker: CircuitBreaker | None = breaker or None
        if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
            rate_limit = _shared_limiter(model, float(rate_limit), self._collector)
        if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            raise TypeError("rate_limit must be requests per second (a number) or a RateLimiter")
        self.rate_limiter: RateLimiter | None = rate_limit
        self.cache = cache

    # -- the backend hook --------------------------------------------------------------
    @abstractmethod
    def _deltas(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> Iterator[Delta]:
        """Call the backend and yield its answer in pieces; raise ``ModelError``."""

    @property
    def backend(self) -> str:
        """Where the calls go (a URL, or a file for the embedded model), for messages."""
        return self.provider

    def set_graph_context(self, graph: str) -> None:
        """Label this client's requests with ``graph`` (seed 001); per-call ``graph=`` wins."""
        if not isinstance(graph, str) or not graph:
            raise ValueError("graph must be a non-empty str")
        self._graph = graph

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing
        """Release connections (HTTP clients) or the model (embedded); idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public calls ------------------------------------------------------------------
    def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        graph: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        **extra: Any,
    ) -> Completion:
        """Generate a whole answer.

        Example:
            >>> client.generate("Question: 2+2?\\nAnswer:", max_tokens=8).text  # doctest: +SKIP
        """
        request = _request(prompt, messages, system, max_tokens, temperature, top_p, stop,
                           seed, extra)
        return self._complete(request, graph or self._graph)

    def stream(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Message] | None = None,
        graph: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        **extra: Any,
    ) -> TextStream:
        """Stream the answer as text pieces; ``.completion`` holds the totals afterwards."""
        request = _request(prompt, messages, system, max_tokens, temperature, top_p, stop,
                           seed, extra)
        holder: list[Completion] = []
        return TextStream(self._observed(request, graph or self._graph, True, holder), holder)

    async def agenerate(self, prompt: str | None = None, **kwargs: Any) -> Completion:
        """``generate`` without blocking the event loop."""
        return await asyncio.to_thread(self.generate, prompt, **kwargs)

    def astream(self, prompt: str | None = None, **kwargs: Any) -> AsyncTextStream:
        """``stream`` for ``async for``; validation errors raise here, at the call."""
        return AsyncTextStream(self.stream(prompt, **kwargs))

    # -- the flow ----------------------------------------------------------------------
    def _complete(self, request: GenerationRequest, graph: str) -> Completion:
        cache = self.cache
        key = None
        if cache is not None:
            from tinyllm.cache import cache_key, is_cacheable

            # One rule for what may be cached: the cache's own (temperature exactly 0).
            if is_cacheable({**request.extra, "temperature": request.temperature}):
                key = cache_key(f"{self.provider}:{self.backend}", self.model,
                                request.cache_params())
                hit = cache.get(key)
                if hit is not None:
                    return Completion(
                        text=hit.text, model=self.model, provider=self.provider,
                        input_tokens=hit.input_tokens, output_tokens=hit.output_tokens,
                        finish_reason=hit.finish_reason, cached=True,
                    )
        holder: list[Completion] = []
        for _ in self._observed(request, graph, False, holder):
            pass
        completion = holder[0]
        if cache is not None and key is not None:
            from tinyllm.cache import CachedResponse

            cache.set(key, CachedResponse(
                text=completion.text, model=completion.model,
                input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                finish_reason=completion.finish_reason,
            ))
        return completion

    def _observed(
        self, request: GenerationRequest, graph: str, streamed: bool, holder: list[Completion]
    ) -> Iterator[str]:
        observed = self._lifecycle.start(
            self.model, graph, "stream" if streamed else "generate", provider=self.provider
        )
        deadline = Deadline(self.timeouts.total)
        texts: list[str] = []
        finish: str | None = None
        input_tokens: int | None = None
        output_tokens: int | None = None
        cached_tokens: int | None = None
        opened = answered = False
        rest: Iterator[Delta] = iter(())
        try:
            if self.rate_limiter is not None:
                self.rate_limiter.acquire(timeout=deadline.remaining())
            first, rest = retry_call(
                lambda: self._open(request, streamed, deadline), self.retry,
                model=self.model, collector=self._collector, deadline=deadline,
            )
            opened = True  # failures before this point were told to the breaker by _open
            for delta in chain((first,), rest):
                if delta.tokens:
                    observed.token(delta.tokens)
                if delta.input_tokens is not None:
                    input_tokens = delta.input_tokens
                if delta.output_tokens is not None:
                    output_tokens = delta.output_tokens
                if delta.cached_input_tokens is not None:
                    cached_tokens = delta.cached_input_tokens
                if delta.finish_reason is not None:
                    finish = delta.finish_reason
                if delta.text:
                    texts.append(delta.text)
                    if streamed:
                        yield delta.text
                deadline.check("the whole request (timeouts.total)")
            answered = True
        except BaseException as exc:
            if opened and not answered:
                self._tell_breaker(exc)
            observed.end(exc)
            raise
        finally:
            # Release the connection now, not when the garbage collector gets to it: a
            # stream closed early raises GeneratorExit here, and observed.error keeps
            # it, its traceback and so this frame (and ``rest``) alive in a cycle.
            close = getattr(rest, "close", None)
            if close is not None:
                close()
        if self.breaker is not None:
            self.breaker.record_success()
        observed.usage(input_tokens, output_tokens, cached_tokens)
        if finish is not None:
            observed.set_finish_reasons(finish)
        observed.end()
        holder.append(Completion(
            text="".join(texts), model=self.model, provider=self.provider,
            input_tokens=observed.input_tokens or input_tokens,
            output_tokens=observed.output_tokens, finish_reason=finish,
            ttft=observed.ttft, duration=observed.duration or 0.0,
        ))

    def _open(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> tuple[Delta, Iterator[Delta]]:
        """One attempt: pass the breaker, call the backend, wait for its first piece."""
        if self.breaker is not None:
            self.breaker.before_call()
        deltas = self._deltas(request, streamed, deadline)
        try:
            first = next(deltas)
        except StopIteration:
            return Delta(), iter(())
        except BaseException as exc:
            self._tell_breaker(exc)
            close = getattr(deltas, "close", None)
            if close is not None:
                close()
            raise
        return first, deltas

    def _tell_breaker(self, exc: BaseException) -> None:
        """Report a failed attempt: backend trouble counts; an answer it refused
        (bad_request) shows the backend is up."""
        breaker = self.breaker
        if breaker is None:
            return
        if counts_as_failure(exc):
            breaker.record_failure(exc)
        elif classify_error(exc) == "bad_request":
            breaker.record_success()


def _shared_breaker(model: str, collector: MetricsCollector) -> CircuitBreaker:
    """The one breaker per model name: process-wide for the default collector, else
    one per (collector, model), so tests and embedders with registries of their own
    never share state."""
    from tinyllm.metrics.collector import get_metrics_collector

    if collector is get_metrics_collector():
        return get_circuit_breaker(model)
    breakers: dict[str, CircuitBreaker] = collector.__dict__.setdefault("_breakers", {})
    found = breakers.get(model)
    if found is None:
        found = breakers.setdefault(model, CircuitBreaker(model, collector=collector))
    return found


def _shared_limiter(model: str, rate: float, collector: MetricsCollector) -> RateLimiter:
    """The one token bucket per model (process-wide for the default collector), so two
    clients of one model share its rate instead of each getting the whole of it."""
    from tinyllm.metrics.collector import get_metrics_collector

    if collector is get_metrics_collector():
        return get_rate_limiter(model, rate)
    limiters: dict[str, RateLimiter] = collector.__dict__.setdefault("_limiters", {})
    found = limiters.get(model)
    if found is None:
        found = limiters.setdefault(model, RateLimiter(rate, model=model, collector=collector))
    elif found.rate != rate:
        raise ValueError(f"model {model!r} already has a rate limit of {found.rate:g}/s; "
                         f"got {rate:g}/s")
    return found


def _request(
    prompt: str | None,
    messages: Sequence[Message] | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: str | Sequence[str] | None,
    seed: int | None,
    extra: dict[str, Any],
) -> GenerationRequest:
    if messages is not None and (isinstance(messages, str | bytes) or not isinstance(
            messages, Sequence)):
        raise TypeError("messages must be a list of {'role', 'content'} mappings")
    stops: tuple[str, ...] = (
        () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop))
    return GenerationRequest(
        prompt=prompt, messages=None if messages is None else tuple(messages), system=system,
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stops, seed=seed,
        extra=extra,
    )
