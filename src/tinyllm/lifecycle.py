"""The one request lifecycle: every LLM request is observed once, here.

Decorators, ``InferenceContext`` and the model clients all open a ``Request`` from a
``RequestLifecycle``; the request feeds both metric vocabularies at once — the collector
API's ``tinyllm_requests_total``/``request_latency_seconds``/``tokens_*`` and the
inference-server API's ``inference_*``/``tokens_generated_total``/TTFT/inter-token
families — and tells the registered observers (tracing, logs, events, the store) when
it starts and ends. The lifecycle knows none of them: tinyllm's composition root attaches
the default ones through ``set_lifecycle_setup``.

The per-token path (``Request.token``) does one ``perf_counter()`` and one histogram
observation on a child resolved when the request started: no label lookups, no I/O,
no lock of ours.

Tracing attaches here too (``tinyllm.telemetry`` registers an observer): the observer
opens a span in ``on_start`` and keeps it on ``request.span``; when that span is sampled
it also sets ``request.exemplar`` so the latency, duration and TTFT observations carry
the trace id as an OpenMetrics exemplar. With tracing off both stay ``None`` and the
observations are exactly what they were (``observe(value, None)``).

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.metrics import MetricsCollector
    >>> lifecycle = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
    >>> with lifecycle.start("gemma3", request_type="stream") as req:
    ...     for _ in range(3):
    ...         req.token()
    >>> req.output_tokens, req.status
    (3, 'success')
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from tinyllm import accounting
from tinyllm._observed import open_request
from tinyllm._trailing import TrailingMinute
from tinyllm._validation import check_amount
from tinyllm.errors import classify_error

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector

__all__ = [
    "LifecycleSetup",
    "Request",
    "RequestLifecycle",
    "RequestObserver",
    "get_lifecycle",
    "set_lifecycle_setup",
]

class RequestObserver(Protocol):
    """A sink told when each request starts and ends (tracing, logs, events, store).

    Both methods run on the caller's thread: they must not block and must not raise
    (a raise is caught and counted in ``RequestLifecycle.observer_failures``).
    ``on_start`` may keep per-request state on ``request.span`` (tracing does) and set
    ``request.exemplar``.
    """

    def on_start(self, request: Request) -> None: ...

    def on_end(self, request: Request) -> None: ...


class _Instruments:
    """The children one (model, graph, request_type) writes to, resolved once."""

    __slots__ = (
        "acct",
        "active",
        "chunk",
        "duration",
        "generated",
        "itl",
        "latency",
        "per_request",
        "requests",
        "status",
        "tokens_in",
        "tokens_out",
        "tpm",
        "tpm_window",
        "tpot",
        "tps",
        "ttft",
    )

    def __init__(self, c: MetricsCollector, model: str, graph: str, request_type: str,
                 acct: accounting.ModelAccounting) -> None:
        mg, m = (model, graph), (model,)
        self.requests = c._child("requests_total", (model, graph, request_type))
        self.active = c._child("active_requests", mg)
        self.latency = c._child("request_latency_seconds", mg)
        self.tokens_in = c._child("tokens_input_total", mg)
        self.tokens_out = c._child("tokens_output_total", mg)
        self.duration = c._child("inference_request_duration_seconds", m)
        self.ttft = c._child("inference_ttft_seconds", m)
        self.itl = c._child("inference_inter_token_latency_seconds", m)
        self.chunk = c._child("inference_time_per_output_chunk_seconds", m)
        self.tpot = c._child("inference_time_per_output_token_seconds", m)
        self.acct = acct
        self.generated = c._child("tokens_generated_total", m)
        self.per_request = c._child("tokens_per_request", m)
        self.tps = c._child("tokens_per_second", m)
        self.tpm = c._child("average_tokens_per_minute", m)
        self.tpm_window = TrailingMinute()
        self.status = {
            s: c._child("inference_requests_total", (model, s))
            for s in ("success", "error", "timeout", "cancelled")
        }


class Request:
    """One observed request. Use as a context manager, or call ``end()`` once."""

    __slots__ = (
        "_deactivate",
        "_first",
        "_inst",
        "_last",
        "_lifecycle",
        "_observe_chunk",
        "_observe_itl",
        "_opened",
        "cached_input_tokens",
        "cost_usd",
        "duration",
        "end_time",
        "error",
        "error_type",
        "exemplar",
        "finish_reasons",
        "graph",
        "input_tokens",
        "model",
        "output_tokens",
        "provider",
        "request_id",
        "request_type",
        "response_model",
        "slo",
        "span",
        "start_time",
        "status",
        "tpot",
        "ttft",
        "usage_output_tokens",
    )

    def __init__(
        self, lifecycle: RequestLifecycle, inst: _Instruments, model: str, graph: str,
        request_type: str, provider: str | None = None, request_id: str | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._inst = inst
        self._observe_itl = inst.itl.observe
        self._observe_chunk = inst.chunk.observe
        self.model, self.graph, self.request_type = model, graph, request_type
        self.provider = provider
        # The caller's own id for the request (a gateway's X-Request-Id): the log line,
        # the span and the store row carry it.
        self.request_id = request_id
        self.finish_reasons: tuple[str, ...] = ()
        # The model that answered, when the backend names one other than the asked.
        self.response_model: str | None = None
        self._opened: Any = None
        self.input_tokens = 0
        # The part of the input the provider served from its prompt cache (priced apart).
        self.cached_input_tokens = 0
        self.output_tokens = 0
        # Set as the request ends (tinyllm.accounting): USD (None: the model has no
        # price), met/missed per objective (None: no objectives, or not judged), and the
        # mean time per output token after the first (None: fewer than two tokens).
        self.cost_usd: float | None = None
        self.slo: dict[str, bool] | None = None
        self.tpot: float | None = None
        self.usage_output_tokens: int | None = None
        self.ttft: float | None = None
        self.duration: float | None = None
        self.end_time: float | None = None
        self.status: str | None = None
        self.error: BaseException | None = None
        self.error_type: str | None = None
        self._first: float | None = None
        self._last = 0.0
        self.span: Any = None
        # Exemplar labels for the latency/TTFT observations; set by tracing, else None.
        self.exemplar: dict[str, str] | None = None
        self._deactivate: Callable[[], None] | None = None
        inst.requests.inc()
        inst.active.inc()
        self.start_time = perf_counter()
        for observer in lifecycle.observers:
            try:
                observer.on_start(self)
            except Exception:  # an observer must never break the host application
                lifecycle.observer_failures += 1

    # -- while it runs -----------------------------------------------------------------
    def token(self, count: int = 1) -> None:
        """Record ``count`` tokens that arrived now (first one: TTFT; then inter-token).

        ``n`` tokens give ``n - 1`` inter-token observations; a chunk of several tokens
        spreads its gap evenly over them (``gap / count``, ``count`` times) and counts
        the gap once as a chunk gap (``time_per_output_chunk``).
        """
        now = perf_counter()
        if count == 1 and self._first is not None:  # the per-token fast path
            gap = now - self._last
            self._observe_itl(gap)
            self._observe_chunk(gap)
            self._last = now
            self.output_tokens += 1
            return
        self._tokens(now, count)

    def _tokens(self, now: float, count: int) -> None:
        check_amount("count", count, integral=True)
        if not count:
            return
        count = int(count)
        self.output_tokens += count
        if self._first is None:
            self._first = now
            self.ttft = now - self.start_time
            self._inst.ttft.observe(self.ttft, self.exemplar)
            gaps, gap = count - 1, 0.0
        else:
            chunk_gap = now - self._last
            self._observe_chunk(chunk_gap)
            gaps, gap = count, chunk_gap / count
        self._last = now
        for _ in range(gaps):
            self._observe_itl(gap)

    def first_token(self) -> None:
        """Mark the first token without counting it (when tokens are counted elsewhere)."""
        if self._first is None:
            now = perf_counter()
            self._first = self._last = now
            self.ttft = now - self.start_time
            self._inst.ttft.observe(self.ttft, self.exemplar)

    @property
    def inter_token_observer(self) -> Callable[[float], None]:
        """The bound ``observe`` of this request's inter-token histogram child, for
        callers that validate gaps themselves and want the cheapest per-token path."""
        observe: Callable[[float], None] = self._observe_itl
        return observe

    @property
    def chunk_observer(self) -> Callable[[float], None]:
        """The bound ``observe`` of this request's chunk-gap histogram child (a caller
        whose every item is one token observes each gap in both)."""
        observe: Callable[[float], None] = self._observe_chunk
        return observe

    def inter_token_latency(self, seconds: float) -> None:
        """Observe an inter-token gap measured by the caller."""
        check_amount("seconds", seconds)
        self._observe_itl(seconds)

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None,
              cached_input_tokens: int | None = None) -> None:
        """Token counts reported by the backend; a reported output count wins over counting.

        ``cached_input_tokens`` is the part of ``input_tokens`` served from the
        provider's prompt cache (OpenAI's ``prompt_tokens_details.cached_tokens``).
        """
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                            ("cached_input_tokens", cached_input_tokens)):
            if value is not None:
                check_amount(name, value, integral=True)
        if input_tokens is not None:
            self.input_tokens = int(input_tokens)
        if output_tokens is not None:
            self.usage_output_tokens = int(output_tokens)
        if cached_input_tokens is not None:
            self.cached_input_tokens = int(cached_input_tokens)

    def set_finish_reasons(self, *reasons: str) -> None:
        """Why the model stopped (``"stop"``, ``"length"``, ...), one per choice.

        Tracing reports them as ``gen_ai.response.finish_reasons``.

        Example:
            >>> from prometheus_client import CollectorRegistry
            >>> from tinyllm.metrics import MetricsCollector
            >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
            >>> with lc.start("m") as req:
            ...     req.set_finish_reasons("stop")
            >>> req.finish_reasons
            ('stop',)
        """
        for reason in reasons:
            if not isinstance(reason, str):
                raise TypeError(f"reasons must be str, got {type(reason).__name__}")
        self.finish_reasons = tuple(reasons)

    @property
    def trace_id(self) -> str | None:
        """The 32-hex trace id of this request's span, or None (tracing off, or dropped
        by sampling) — for sinks that correlate without reading the current context."""
        ex = self.exemplar
        return None if ex is None else ex.get("trace_id")

    # -- the end -----------------------------------------------------------------------
    def end(self, error: BaseException | None = None) -> None:
        """Finish the request; later calls do nothing.

        The outcome: ``success`` without ``error``; ``cancelled`` when ``error`` is a
        cancellation (a consumer that closed the stream early: ``GeneratorExit``; a
        cancelled task: ``asyncio.CancelledError``; Ctrl-C); else ``timeout`` or
        ``error`` by ``classify_error``. A cancelled request is neither an error nor a
        success: it counts in ``inference_requests_total{status="cancelled"}`` and its
        tokens in the token counters, but not in ``errors_total``, nor in the latency
        and per-request histograms (it did not run to its end).
        """
        if self.status is not None:
            return
        if error is None:
            self._finish("success", None, None)
            return
        error_type = classify_error(error)
        if error_type == "cancelled":
            self._finish("cancelled", None, None)
        else:
            self._finish("timeout" if error_type == "timeout" else "error", error, error_type)

    def cancel(self) -> None:
        """End the request as ``cancelled`` (the client went away; the caller stopped).

        Example:
            >>> from prometheus_client import CollectorRegistry
            >>> from tinyllm.metrics import MetricsCollector
            >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
            >>> req = lc.start("m", request_type="stream")
            >>> req.token(2)
            >>> req.cancel()
            >>> req.status, req.error, req.output_tokens
            ('cancelled', None, 2)
        """
        if self.status is None:
            self._finish("cancelled", None, None)

    def _finish(
        self, status: str, error: BaseException | None, error_type: str | None,
    ) -> None:
        now = perf_counter()
        inst = self._inst
        self.end_time = now
        duration = self.duration = now - self.start_time
        self.error, self.error_type, self.status = error, error_type, status
        out = self.usage_output_tokens
        out = self.output_tokens if out is None else out
        self.output_tokens = out
        finished = status != "cancelled"
        if finished:
            ex = self.exemplar
            inst.latency.observe(duration, ex)
            inst.duration.observe(duration, ex)
        inst.active.dec()
        inst.status[status].inc()
        if self.input_tokens:
            inst.tokens_in.inc(self.input_tokens)
        if out:
            inst.tokens_out.inc(out)
            inst.generated.inc(out)
            if finished:
                inst.per_request.observe(out)
                if duration > 0:
                    inst.tps.set(out / duration)
        inst.tpm.set(inst.tpm_window.add(out, now))
        tpot = None
        if finished and out > 1 and self.ttft is not None:
            tpot = self.tpot = (duration - self.ttft) / (out - 1)
            inst.tpot.observe(tpot)
        lc = self._lifecycle
        acct = inst.acct
        if acct.generation != accounting.generation():  # prices or SLOs reconfigured
            acct = inst.acct = lc._accounting(self.model)
        try:
            acct.settle(self, tpot, now)
        except Exception:  # cost and SLOs must never break the host application
            lc.observer_failures += 1
        if error is not None:
            lc.collector.increment_error_count(self.error_type or "unknown", self.model, self.graph)
            lc.collector._child("inference_errors_total", (self.model, self.error_type)).inc()
        for observer in lc.observers:
            try:
                observer.on_end(self)
            except Exception:  # an observer must never break the host application
                lc.observer_failures += 1

    def __enter__(self) -> Request:
        # Used as a block, the request's span can safely be the current span for the
        # block's duration (enter and exit are bracketed in one context), so logs and
        # child spans inside are correlated. start()/end() alone (generators) never
        # change the current context: a span attached there would leak into the
        # consumer's code between yields.
        # Marked open for the block, so SDK instrumentation inside does not count it again.
        self._opened = open_request.set(self)
        if self.span is not None:  # None unless tracing is on: one slot read when off
            activate = self._lifecycle._activate_span
            if activate is not None:
                self._deactivate = activate(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.end(exc)
        finally:
            opened, self._opened = self._opened, None
            if opened is not None:
                try:
                    open_request.reset(opened)
                except ValueError:  # exited in another context than entered (a generator)
                    open_request.set(None)
            # After end(): observers' on_end (a log line, an event) still see the span.
            deactivate = self._deactivate
            if deactivate is not None:
                self._deactivate = None
                deactivate()


class RequestLifecycle:
    """Opens ``Request`` objects that record into ``collector``'s families."""

    def __init__(self, collector: MetricsCollector) -> None:
        self.collector = collector
        self.observers: list[RequestObserver] = []
        self.observer_failures = 0
        # Set by tinyllm.telemetry while tracing is on: makes a request's span current
        # inside ``with request:`` and returns the undo. None: nothing to do.
        self._activate_span: Callable[[Request], Callable[[], None]] | None = None
        self._instruments: dict[tuple[str, str, str], _Instruments] = {}
        self._models: dict[str, accounting.ModelAccounting] = {}
        self._lock = threading.Lock()

    def start(
        self, model: str, graph: str = "default", request_type: str = "generate",
        *, provider: str | None = None, request_id: str | None = None,
    ) -> Request:
        """Begin observing one request.

        ``provider`` names the backend (``"ollama"``, ``"openai"``, ...) for tracing's
        ``gen_ai.provider.name``; None means tinyllm itself. ``request_id`` is the
        caller's id for it (kept on the log line, the span and the store row).
        """
        key = (model, graph, request_type)
        inst = self._instruments.get(key)
        if inst is None:
            inst = self._resolve(key)
        return Request(self, inst, model, graph, request_type, provider, request_id)

    def _resolve(self, key: tuple[str, str, str]) -> _Instruments:
        with self._lock:
            found = self._instruments.get(key)
            if found is None:
                found = _Instruments(self.collector, *key, self._accounting(key[0]))
                # Bounded like the families: past the budget, keys are not cached (the
                # children underneath are already folded into ``other``).
                if len(self._instruments) < self.collector.max_cardinality:
                    self._instruments[key] = found
            return found

    def _accounting(self, model: str) -> accounting.ModelAccounting:
        """The model's price and objectives, resolved once per configuration."""
        found = self._models.get(model)
        if found is None or found.generation != accounting.generation():
            found = accounting.ModelAccounting(self.collector, model)
            if len(self._models) < self.collector.max_cardinality:
                self._models[model] = found
        return found

    def add_observer(self, observer: RequestObserver) -> None:
        """Tell ``observer`` when each request starts and ends."""
        # Copy on write: a request iterating the old list on another thread is unaffected.
        with self._lock:
            self.observers = [*self.observers, observer]

    def remove_observer(self, observer: RequestObserver) -> None:
        """Stop telling ``observer``; unknown observers are ignored."""
        with self._lock:
            if observer in self.observers:
                self.observers = [o for o in self.observers if o is not observer]


#: What ``get_lifecycle`` does with each lifecycle it makes, before handing it out: the
#: composition root (``tinyllm._composition``) attaches the default sinks here. Called
#: with the new lifecycle and whether its collector is the process-wide one.
LifecycleSetup = Callable[[RequestLifecycle, bool], None]
_setup: LifecycleSetup | None = None


def set_lifecycle_setup(setup: LifecycleSetup | None) -> LifecycleSetup | None:
    """Make ``setup`` run on every lifecycle ``get_lifecycle`` makes from now on; returns
    the previous one. The core knows no sink: this is how the default ones get in.

    Example:
        >>> seen = []
        >>> previous = set_lifecycle_setup(lambda lc, default: seen.append(default))
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.metrics.collector import MetricsCollector
        >>> _ = get_lifecycle(MetricsCollector(registry=CollectorRegistry()))
        >>> seen
        [False]
        >>> _ = set_lifecycle_setup(previous)
    """
    global _setup
    if setup is not None and not callable(setup):
        raise TypeError(f"setup must be callable as setup(lifecycle, is_default), got {setup!r}")
    previous, _setup = _setup, setup
    return previous


def get_lifecycle(collector: MetricsCollector | None = None) -> RequestLifecycle:
    """The lifecycle bound to ``collector`` (default: the process-wide collector).

    Made once per collector; the first call runs the lifecycle set-up (by default:
    a log line per request, an event per failure, and the store when
    ``$TINYLLM_METRICS_DB`` names one).
    """
    collectors = _collectors or _load_collectors()
    c = collector if collector is not None else (
        collectors._default or collectors.get_metrics_collector())
    found: RequestLifecycle | None = c.__dict__.get("_lifecycle")
    if found is None:
        made = RequestLifecycle(c)
        found = c.__dict__.setdefault("_lifecycle", made)
        setup = _setup
        if found is made and setup is not None:
            setup(made, c is collectors._default)
    return found


# The collector module, imported on first use and kept: get_lifecycle() runs once per
# request of the decorators and InferenceContext, and an import statement there costs
# more than the rest of the call. (Imported late because tinyllm.metrics, the package
# it lives in, imports this module.)
_collectors: Any = None


def _load_collectors() -> Any:
    global _collectors
    from tinyllm.metrics import collector

    _collectors = collector
    return collector
