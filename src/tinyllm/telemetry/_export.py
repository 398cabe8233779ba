"""Exporters, wrapped so that a failing collector is counted and logged once.

OpenTelemetry's OTLP exporters log every failed batch (and every retry) themselves; while
tinyllm's exporters are configured those records are taken off the exporters' loggers
(the reason is kept for our one log line and ``get_telemetry_state()``), so a dead
collector produces one warning, a counter (``tinyllm_telemetry_export_failures_total``)
and no noise.
"""

from __future__ import annotations

import importlib
import logging
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from tinyllm.telemetry._config import _Resolved

logger = logging.getLogger("tinyllm.telemetry")

# The loggers OpenTelemetry's OTLP exporters and batch processor report failures on.
_OTEL_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)


class _Stats:
    """What the exporters did since telemetry was configured (for the state dict)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans_exported = 0
        self.spans_dropped = 0
        self.export_failures = 0
        self.last_error: str | None = None


class _OtelLogCapture(logging.Filter):
    """Keeps OTel exporter warnings out of the logs, remembering the last message."""

    def __init__(self) -> None:
        super().__init__("tinyllm.telemetry")
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            self.last = record.getMessage()
        except Exception:  # a malformed record must not break the exporter thread
            self.last = str(record.msg)
        return False

    def install(self) -> None:
        for name in _OTEL_LOGGERS:
            found = logging.getLogger(name)
            if self not in found.filters:
                # First in line: OTel's own DuplicateFilter on these loggers would hide
                # repeated failures (and their reasons) from a filter behind it.
                found.filters.insert(0, self)

    def remove(self) -> None:
        for name in _OTEL_LOGGERS:
            logging.getLogger(name).removeFilter(self)

    def take(self) -> str | None:
        last, self.last = self.last, None
        return last


class _FailureCounter:
    """Counts one signal's failed exports; logs the first one only."""

    def __init__(
        self, exporter: str, signal: str, target: str, stats: _Stats, capture: _OtelLogCapture
    ) -> None:
        self.exporter, self.signal, self.target = exporter, signal, target
        self._stats = stats
        self._capture = capture
        self._logged = False
        #: Set when tinyllm stopped the exporter itself (collector unreachable at
        #: shutdown): the truer reason than the exporter's "already shutdown".
        self.aborted: str | None = None

    def failed(self, reason: str | None) -> None:
        captured = self._capture.take()
        reason = self.aborted or captured or reason or "the exporter reported FAILURE"
        stats = self._stats
        with stats.lock:
            stats.export_failures += 1
            stats.last_error = f"{self.signal} to {self.target}: {reason}"
            first = not self._logged
            self._logged = True
        try:
            from tinyllm.metrics.collector import get_metrics_collector

            get_metrics_collector().increment_telemetry_export_failures(self.exporter, self.signal)
        except Exception:  # counting must never break the exporter thread
            logger.debug("could not count a telemetry export failure", exc_info=True)
        if first:
            logger.warning(
                "telemetry: exporting %s to %s failed (%s); the data of failed batches is "
                "dropped, and further failures are counted in "
                "telemetry_export_failures_total{exporter=%r,signal=%r}, not logged",
                self.signal, self.target, reason, self.exporter, self.signal,
            )


class _CountingSpanExporter(SpanExporter):
    """Delegates to ``inner``; counts what it exported and what failed."""

    def __init__(self, inner: SpanExporter, failures: _FailureCounter, stats: _Stats) -> None:
        self.inner = inner
        self._failures = failures
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        reason = None
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the batch thread
            result, reason = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            with self._stats.lock:
                self._stats.spans_exported += len(spans)
        else:
            self._failures.failed(reason)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingMetricExporter(MetricExporter):
    """Delegates to ``inner``; counts failed metric exports."""

    def __init__(self, inner: MetricExporter, failures: _FailureCounter) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner = inner
        self._failures = failures

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        reason = None
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            result, reason = MetricExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        if result is not MetricExportResult.SUCCESS:
            self._failures.failed(reason)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _CountingBatchProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that counts the spans a full queue drops (OTel only logs it)."""

    def __init__(self, exporter: SpanExporter, stats: _Stats) -> None:
        super().__init__(exporter)
        self._stats = stats
        # The SDK's internal queue (a bounded deque); absent in other SDK versions, in
        # which case drops are only logged by the SDK.
        self._tinyllm_queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._tinyllm_queue
        if (
            queue is not None
            and queue.maxlen is not None
            and len(queue) >= queue.maxlen
            and span.context is not None
            and span.context.trace_flags.sampled
        ):
            with self._stats.lock:
                self._stats.spans_dropped += 1
        super().on_end(span)


def _otlp_missing(exc: ImportError) -> ImportError:
    return ImportError(
        "exporter='otlp' needs the OTLP exporters: pip install 'tinyllm[otlp]' "
        f"({exc})"
    )


def span_exporter(r: _Resolved) -> SpanExporter | None:
    """The exporter the resolved config asks for (None for ``exporter="none"``)."""
    return cast("SpanExporter | None", _exporter(
        r, ConsoleSpanExporter, "trace_exporter", "OTLPSpanExporter", r.traces_endpoint))


def metric_exporter(r: _Resolved) -> MetricExporter | None:
    """The metric exporter the resolved config asks for (None for ``"none"``)."""
    return cast("MetricExporter | None", _exporter(
        r, ConsoleMetricExporter, "metric_exporter", "OTLPMetricExporter", r.metrics_endpoint))


def _exporter(
    r: _Resolved, console: Callable[..., Any], module: str, name: str, endpoint: str | None
) -> Any:
    """One signal's exporter: ``console`` writing to stderr, or the OTLP exporter class
    ``name`` of ``opentelemetry.exporter.otlp.proto.<grpc|http>.<module>``."""
    if r.exporter == "none":
        return None
    if r.exporter == "console":
        # stderr: stdout belongs to the command's output (tinyllm run ... | jq).
        return console(out=sys.stderr)
    transport = "grpc" if r.protocol == "grpc" else "http"
    try:
        otlp = getattr(importlib.import_module(
            f"opentelemetry.exporter.otlp.proto.{transport}.{module}"), name)
    except ImportError as exc:
        raise _otlp_missing(exc) from exc
    exporter = otlp(endpoint=endpoint, headers=r.headers or None, timeout=r.export_timeout)
    if transport == "grpc":
        _spec_retries(exporter)
    return exporter


class _RetryableCodes:
    """The gRPC status codes the OTLP spec lets an exporter retry.

    OpenTelemetry's gRPC exporters retry RESOURCE_EXHAUSTED always; the spec
    (OTLP/gRPC "Failures") allows it only when the server says recovery is possible,
    i.e. sends a ``google.rpc.RetryInfo``. A collector shedding load without one must
    not get the same batch again six times. Whether the last answer on this thread had
    a RetryInfo is set by ``_RetryInfoStub`` just before the exporter asks.
    """

    _RETRY_INFO = "google.rpc.retryinfo-bin"

    def __init__(self, codes: frozenset[Any]) -> None:
        # grpc.StatusCode members, compared by name (grpc ships no type stubs).
        self._codes = frozenset(c for c in codes if c.name != "RESOURCE_EXHAUSTED")
        self._local = threading.local()

    def __contains__(self, code: object) -> bool:
        if getattr(code, "name", None) == "RESOURCE_EXHAUSTED":
            return bool(getattr(self._local, "retry_info", False))
        return code in self._codes

    def saw(self, error: Any) -> None:
        try:
            trailers = dict(error.trailing_metadata() or ())
        except Exception:  # not a call error: no RetryInfo to honour
            trailers = {}
        self._local.retry_info = self._RETRY_INFO in trailers


class _RetryInfoStub:
    """The exporter's gRPC stub, noting whether a failed call carried a RetryInfo."""

    def __init__(self, inner: Any, codes: _RetryableCodes) -> None:
        self._inner = inner
        self._codes = codes

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # the stub's own name
        try:
            return self._inner.Export(*args, **kwargs)
        except Exception as exc:
            self._codes.saw(exc)
            raise


def _spec_retries(exporter: Any) -> None:
    """Make an OTel gRPC exporter retry only what the OTLP spec allows (see
    ``_RetryableCodes``). Left as it is when the SDK's internals differ from the ones
    this was written against (then the SDK's own rule applies)."""
    codes = getattr(exporter, "_retryable_error_codes", None)
    init = getattr(exporter, "_initialize_channel_and_stub", None)
    if not isinstance(codes, frozenset) or init is None or getattr(
            exporter, "_client", None) is None:
        return
    retryable = _RetryableCodes(codes)

    def initialize() -> None:  # the SDK makes a new stub after UNAVAILABLE
        init()
        exporter._client = _RetryInfoStub(exporter._client, retryable)

    exporter._retryable_error_codes = retryable
    exporter._client = _RetryInfoStub(exporter._client, retryable)
    exporter._initialize_channel_and_stub = initialize


def host_port(endpoint: str) -> tuple[str, int]:
    """The TCP address an OTLP endpoint URL points at (default ports: 4317/4318/443)."""
    parts = urlsplit(endpoint)
    port = parts.port
    if port is None:
        port = 443 if parts.scheme == "https" else (4318 if parts.path else 4317)
    return parts.hostname or "localhost", port


def tcp_check(endpoint: str, protocol: str, timeout: float) -> tuple[bool, str]:
    """Whether a TCP connection to ``endpoint`` opens within ``timeout`` seconds."""
    host, port = host_port(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        detail = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            detail = f"no answer within {timeout:g}s"
        return False, f"OTLP {protocol} collector {host}:{port} unreachable: {detail}"
    return True, f"OTLP {protocol} collector {host}:{port} accepts connections"
