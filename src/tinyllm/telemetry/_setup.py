"""configure_telemetry / shutdown_telemetry and the state they leave behind.

tinyllm keeps its own TracerProvider and MeterProvider instead of installing
OpenTelemetry's global ones: the global provider can be set only once per process, and
reconfiguring must replace ours cleanly. Spans still join the application's traces,
because the *context* (the current span) is global: a tinyllm span opened inside an
application span is its child, whichever provider made either.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tinyllm._version import __version__
from tinyllm.telemetry import _spans
from tinyllm.telemetry._config import TelemetryConfig
from tinyllm.telemetry._export import (
    _CountingBatchProcessor,
    _CountingMetricExporter,
    _CountingSpanExporter,
    _FailureCounter,
    _OtelLogCapture,
    _Stats,
    metric_exporter,
    span_exporter,
    tcp_check,
)
from tinyllm.telemetry._genai import _GenAIMetrics, _GenAIObserver

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from tinyllm.lifecycle import RequestLifecycle

logger = logging.getLogger("tinyllm.telemetry")

#: How long shutdown_telemetry() (and the flush at exit) waits by default, in seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 3.0


class _State:
    """Everything configure_telemetry built; replaced whole on reconfiguration."""

    def __init__(self, config: TelemetryConfig | None = None) -> None:
        self.config = config
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.observer: _GenAIObserver | None = None
        self.lifecycle: RequestLifecycle | None = None
        self.capture: _OtelLogCapture | None = None
        self.exporters: list[Any] = []  # the wrapped OTLP exporters (to abort a hung flush)
        self.failures: list[_FailureCounter] = []
        self.stats = _Stats()


_lock = threading.RLock()
_state = _State()
_atexit_registered = False


def _check_timeout(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{argument}={value!r} must be a positive number of seconds")
    return float(value)


def configure_telemetry(
    config: TelemetryConfig | None = None,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    lifecycle: RequestLifecycle | None = None,
) -> None:
    """Turn tracing (and optionally GenAI metrics) on or off for the whole process.

    Idempotent, and safe to call again: the previous providers are flushed (bounded by
    3 s) and shut down, and the new configuration takes over. With tracing on, every
    request of the lifecycle (``tinyllm.lifecycle.get_lifecycle()``, or ``lifecycle``)
    gets a GenAI span, and the latency/TTFT histograms carry its trace id as an exemplar.

    Args:
        config: what to do; None means ``TelemetryConfig()`` (tracing off).
        span_processors: more span processors, e.g.
            ``SimpleSpanProcessor(InMemorySpanExporter())`` to look at the spans in a
            test; they see every sampled span, and are shut down with telemetry.
        metric_readers: more metric readers (e.g. ``InMemoryMetricReader()``); they
            see the GenAI metrics when ``enable_metrics=True``.
        lifecycle: the request lifecycle to observe (default: the process-wide one).

    Example:
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        ...     InMemorySpanExporter)
        >>> from tinyllm.telemetry import TelemetryConfig, shutdown_telemetry, trace_span
        >>> spans = InMemorySpanExporter()
        >>> configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
        ...                     span_processors=[SimpleSpanProcessor(spans)])
        >>> with trace_span("work"):
        ...     pass
        >>> [s.name for s in spans.get_finished_spans()]
        ['work']
        >>> shutdown_telemetry()
        True
    """
    if config is None:
        config = TelemetryConfig()
    elif not isinstance(config, TelemetryConfig):
        raise TypeError(f"config must be a TelemetryConfig, got {type(config).__name__}")
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import SpanProcessor

    processors = list(span_processors)
    readers = list(metric_readers)
    for p in processors:
        if not isinstance(p, SpanProcessor):
            raise TypeError(f"span_processors items must be SpanProcessor, got {p!r}")
    for r in readers:
        if not isinstance(r, MetricReader):
            raise TypeError(f"metric_readers items must be MetricReader, got {r!r}")
    if processors and not config.enable_tracing:
        raise ValueError("span_processors were given but config.enable_tracing is False")
    if readers and not config.enable_metrics:
        raise ValueError("metric_readers were given but config.enable_metrics is False")

    global _state, _atexit_registered
    with _lock:
        _shutdown_locked(DEFAULT_SHUTDOWN_TIMEOUT)
        state = _State(config)
        _state = state  # before building: a failed build is then undone by shutdown
        if config.enable_tracing or config.enable_metrics:
            try:
                _build(state, config, processors, readers, lifecycle)
            except BaseException:
                _shutdown_locked(DEFAULT_SHUTDOWN_TIMEOUT)
                raise
            if not _atexit_registered:
                atexit.register(_flush_at_exit)
                _atexit_registered = True


def _build(
    state: _State,
    config: TelemetryConfig,
    processors: list[SpanProcessor],
    readers: list[MetricReader],
    lifecycle: RequestLifecycle | None,
) -> None:
    from opentelemetry.sdk.resources import Resource

    r = config._resolved
    resource = Resource.create({"service.name": r.service_name})
    capture = _OtelLogCapture()
    target = r.traces_endpoint or r.exporter
    tracer = None
    if config.enable_tracing:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(r.sampling_rate)),
            # Our own bounded flush runs at exit instead of the SDK's unbounded one.
            shutdown_on_exit=False,
        )
        state.tracer_provider = provider
        exporter = span_exporter(r)
        if exporter is not None:
            failures = _FailureCounter(r.exporter, "traces", target, state.stats, capture)
            state.failures.append(failures)
            wrapped = _CountingSpanExporter(exporter, failures, state.stats)
            provider.add_span_processor(_CountingBatchProcessor(wrapped, state.stats))
            state.exporters.append(exporter)
        for p in processors:
            provider.add_span_processor(p)
        tracer = provider.get_tracer("tinyllm", __version__)

    metrics = None
    if config.enable_metrics:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        all_readers = list(readers)
        mexporter = metric_exporter(r)
        if mexporter is not None:
            mtarget = r.metrics_endpoint or r.exporter
            failures = _FailureCounter(r.exporter, "metrics", mtarget, state.stats, capture)
            state.failures.append(failures)
            all_readers.append(PeriodicExportingMetricReader(
                _CountingMetricExporter(mexporter, failures),
                export_timeout_millis=r.export_timeout * 1000,
            ))
            state.exporters.append(mexporter)
        meter_provider = MeterProvider(
            resource=resource, metric_readers=all_readers, shutdown_on_exit=False
        )
        state.meter_provider = meter_provider
        metrics = _GenAIMetrics(meter_provider.get_meter("tinyllm", __version__))

    if r.exporter == "otlp":
        state.capture = capture
        capture.install()

    if lifecycle is None:
        from tinyllm.lifecycle import get_lifecycle

        lifecycle = get_lifecycle()
    observer = _GenAIObserver(tracer, metrics)
    state.observer, state.lifecycle = observer, lifecycle
    lifecycle.add_observer(observer)
    if tracer is not None:
        lifecycle._activate_span = _spans._activate_request_span
    _spans._install(tracer)


def _run_bounded(
    fn: Callable[[], Any], timeout: float, finally_: Callable[[], None] | None = None
) -> bool:
    """Run ``fn`` then ``finally_`` on a daemon thread; False if it is still running
    after ``timeout`` (it then finishes in the background)."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception:
            logger.debug("telemetry: error while flushing", exc_info=True)
        finally:
            if finally_ is not None:
                finally_()
            done.set()

    try:
        threading.Thread(target=run, name="tinyllm-telemetry-flush", daemon=True).start()
    except RuntimeError:  # no new threads this late in interpreter shutdown
        run()
        return True
    return done.wait(timeout)


def _collector_answers(state: _State, timeout: float) -> bool:
    """Whether the OTLP collector accepts a TCP connection (a quick check at shutdown)."""
    config = state.config
    if config is None:
        return True
    r = config._resolved
    endpoint = r.traces_endpoint if config.enable_tracing else r.metrics_endpoint
    if r.exporter != "otlp" or endpoint is None or r.protocol is None:
        return True
    return tcp_check(endpoint, r.protocol, min(0.25, timeout))[0]


def _abort(state: _State, reason: str) -> None:
    """Shut the OTLP exporters down: their retry waits end, later exports fail fast."""
    for failures in state.failures:
        failures.aborted = reason
    for exporter in state.exporters:
        try:
            exporter.shutdown()
        except Exception:
            logger.debug("telemetry: exporter shutdown failed", exc_info=True)
    state.exporters = []


def _shutdown_locked(timeout: float) -> bool:
    global _state
    state = _state
    _spans._install(None)  # new spans stop here, before anything is flushed
    lc = state.lifecycle
    if lc is not None and state.observer is not None:
        lc.remove_observer(state.observer)
        if lc._activate_span is _spans._activate_request_span:
            lc._activate_span = None
    tp, mp = state.tracer_provider, state.meter_provider
    ok = True
    if tp is not None or mp is not None:
        if state.exporters and not _collector_answers(state, timeout):
            # Nobody listens: the exporters' retries (seconds of back-off) cannot
            # succeed, so stop them first; the flush then fails at once and the
            # batches it held are counted as failed, instead of holding up the exit.
            _abort(state, "the collector did not accept a connection at shutdown")

        def flush_and_close() -> None:
            if tp is not None:
                tp.force_flush()
                tp.shutdown()
            if mp is not None:
                mp.shutdown(timeout_millis=timeout * 1000)

        # The OTel exporters' log records stay captured until the flush is really over
        # (it may outlive ``timeout``), so a late failure is still logged only once.
        capture = state.capture
        state.capture = None
        ok = _run_bounded(flush_and_close, timeout, capture.remove if capture else None)
        if not ok:
            # A collector that does not answer: stop the exporters' retry loops so the
            # flush thread ends soon; what it still held is lost (and counted).
            _abort(state, f"the flush at shutdown did not finish within {timeout:g}s")
            logger.warning(
                "telemetry: flushing spans/metrics did not finish within %gs; "
                "the rest is dropped", timeout,
            )
    if state.capture is not None:
        state.capture.remove()
    _state = _State(None)
    _state.stats = state.stats  # the counts stay readable after shutdown
    return ok


def shutdown_telemetry(timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
    """Flush what was recorded and switch telemetry off; waits at most ``timeout`` s.

    Returns True when everything was flushed in time. Also runs at interpreter exit.

    Example:
        >>> shutdown_telemetry()
        True
    """
    timeout = _check_timeout("timeout", timeout)
    with _lock:
        return _shutdown_locked(timeout)


def _flush_at_exit() -> None:
    try:
        shutdown_telemetry()
    except Exception:  # at exit, never raise
        logger.debug("telemetry: flush at exit failed", exc_info=True)


def is_telemetry_enabled() -> bool:
    """Whether tracing is on (spans are being recorded).

    Example:
        >>> is_telemetry_enabled()
        False
    """
    return _spans._tracer is not None


def get_telemetry_state() -> dict[str, Any]:
    """What telemetry is doing, for ``tinyllm debug inspect``.

    Keys: ``enabled`` (tracing on), ``exporter``, ``endpoint``, ``protocol``,
    ``sampling_rate``, ``service_name``, ``metrics_enabled``, ``spans_exported``
    (sent successfully), ``export_failures`` (failed batches), ``spans_dropped`` (a
    full queue), ``last_error``. Header values are never shown.

    Example:
        >>> get_telemetry_state()["enabled"]
        False
    """
    state = _state
    config = state.config
    on = config is not None and (config.enable_tracing or config.enable_metrics)
    stats = state.stats
    with stats.lock:
        counts = {
            "spans_exported": stats.spans_exported,
            "export_failures": stats.export_failures,
            "spans_dropped": stats.spans_dropped,
            "last_error": stats.last_error,
        }
    if config is None or not on:
        return {
            "enabled": False, "exporter": None, "endpoint": None, "protocol": None,
            "sampling_rate": None, "service_name": None, "metrics_enabled": False,
            **counts,
        }
    r = config._resolved
    return {
        "enabled": config.enable_tracing,
        "exporter": r.exporter,
        "endpoint": r.traces_endpoint,
        "protocol": r.protocol,
        "sampling_rate": r.sampling_rate,
        "service_name": r.service_name,
        "metrics_enabled": config.enable_metrics,
        **counts,
    }


def check_exporter(timeout: float = 1.0) -> tuple[bool, str]:
    """Whether the configured OTLP collector accepts a TCP connection within ``timeout``.

    ``(True, "not configured")`` when telemetry sends nothing over OTLP. Used by
    ``tinyllm health``; it opens a connection and closes it, nothing more.

    Example:
        >>> check_exporter()
        (True, 'not configured')
    """
    timeout = _check_timeout("timeout", timeout)
    state = _state
    config = state.config
    if config is None or not (config.enable_tracing or config.enable_metrics):
        return True, "not configured"
    r = config._resolved
    if r.exporter != "otlp" or r.protocol is None:
        return True, "not configured"
    endpoint = r.traces_endpoint if config.enable_tracing else r.metrics_endpoint
    assert endpoint is not None  # resolved together with the protocol
    ok, detail = tcp_check(endpoint, r.protocol, timeout)
    with state.stats.lock:
        failures = state.stats.export_failures
    if ok and failures:
        detail += f"; {failures} export batch(es) failed since configuration"
    return ok, detail
