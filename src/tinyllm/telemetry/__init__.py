"""Tracing with OpenTelemetry: spans for your code and a GenAI span for every LLM request.

Off by default, and then nearly free: ``trace_span`` returns a shared no-op and
``traced`` functions call straight through (the choice is made by
``configure_telemetry``, not on every call). Turned on, spans go to the console, to an
OTLP collector (gRPC or HTTP/protobuf), or nowhere but the current context (trace ids in
logs and exemplars); every request of the request lifecycle opens a span named after the
OpenTelemetry GenAI conventions (``"chat llama3"``) and, with ``enable_metrics=True``,
feeds the GenAI metrics too. Span attributes pass through ``tinyllm.redaction``.

Example:
    >>> from tinyllm.telemetry import (
    ...     TelemetryConfig, configure_telemetry, shutdown_telemetry, trace_span)
    >>> configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"))
    >>> with trace_span("operation") as span:
    ...     len(format(span.get_span_context().trace_id, "032x"))
    32
    >>> shutdown_telemetry()
    True
"""

from tinyllm.telemetry._config import EXPORTERS, PROTOCOLS, TelemetryConfig
from tinyllm.telemetry._setup import (
    check_exporter,
    configure_telemetry,
    get_telemetry_state,
    is_telemetry_enabled,
    shutdown_telemetry,
)
from tinyllm.telemetry._spans import (
    get_current_span_id,
    get_current_trace_id,
    record_span_event,
    set_span_attribute,
    set_span_error,
    trace_span,
    traced,
)

__all__ = [
    "EXPORTERS",
    "PROTOCOLS",
    "TelemetryConfig",
    "check_exporter",
    "configure_telemetry",
    "get_current_span_id",
    "get_current_trace_id",
    "get_telemetry_state",
    "is_telemetry_enabled",
    "record_span_event",
    "set_span_attribute",
    "set_span_error",
    "shutdown_telemetry",
    "trace_span",
    "traced",
]
