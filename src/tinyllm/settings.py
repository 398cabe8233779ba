"""Configuration names and the one precedence rule: argument, then environment, then default.

Every environment variable tinyllm reads is a constant here, so the docs and the code
cannot disagree about a name.

Example:
    >>> from tinyllm.settings import metrics_namespace
    >>> metrics_namespace("ryot")
    'ryot'
"""

from __future__ import annotations

import os
import re

__all__ = [
    "DEFAULT_METRICS_ADDR",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_NAMESPACE",
    "ENV_CAPTURE_CONTENT",
    "ENV_LOG_FILE",
    "ENV_LOG_FORMAT",
    "ENV_LOG_LEVEL",
    "ENV_METRICS_DB",
    "ENV_METRICS_NAMESPACE",
    "ENV_METRICS_URL",
    "ENV_MODEL_DIR",
    "ENV_OTEL_EXPORTER_OTLP_ENDPOINT",
    "ENV_OTEL_EXPORTER_OTLP_HEADERS",
    "ENV_OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "ENV_OTEL_EXPORTER_OTLP_PROTOCOL",
    "ENV_OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "ENV_OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "ENV_OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "ENV_OTEL_SERVICE_NAME",
    "ENV_OTEL_TRACES_EXPORTER",
    "ENV_OTEL_TRACES_SAMPLER_ARG",
    "ENV_PRICES",
    "ENV_PROMETHEUS_MULTIPROC_DIR",
    "ENV_SERVE_WORKER",
    "ENV_SLO",
    "metrics_namespace",
    "multiprocess_dir",
]

ENV_METRICS_NAMESPACE = "TINYLLM_METRICS_NAMESPACE"
# Logging and redaction (tinyllm.logging, tinyllm.redaction).
ENV_LOG_LEVEL = "TINYLLM_LOG_LEVEL"
ENV_LOG_FORMAT = "TINYLLM_LOG_FORMAT"
ENV_LOG_FILE = "TINYLLM_LOG_FILE"
# Opt-in to recording prompt/completion text (OpenTelemetry GenAI's capture-content switch).
ENV_CAPTURE_CONTENT = "TINYLLM_CAPTURE_CONTENT"
ENV_METRICS_URL = "TINYLLM_METRICS_URL"
# The metrics store (tinyllm.store.configure_store): a SQLite path or a postgresql:// URL.
ENV_METRICS_DB = "TINYLLM_METRICS_DB"
# Cost and SLOs (tinyllm.accounting): a cost file (YAML or JSON) whose prices are layered
# over the shipped table, and one (possibly the same file) whose slo section holds
# requests to their objectives.
ENV_PRICES = "TINYLLM_PRICES"
ENV_SLO = "TINYLLM_SLO"
# Where the embedded model's GGUF is assembled (default ~/.cache/tinyllm/models).
ENV_MODEL_DIR = "TINYLLM_MODEL_DIR"
# Internal: what `tinyllm serve --workers N` passes to each worker (JSON; set by the
# parent, never by hand).
ENV_SERVE_WORKER = "TINYLLM_SERVE_WORKER"
# prometheus_client's own variable; we only read it to serve the aggregated view.
ENV_PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# OpenTelemetry's standard variables, honoured by tinyllm.telemetry (argument > env >
# default); the OTel SDK reads further OTEL_* variables of its own (OTEL_BSP_*, ...).
ENV_OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENV_OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
ENV_OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTEL_EXPORTER_OTLP_METRICS_ENDPOINT = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
ENV_OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
ENV_OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_OTEL_EXPORTER_OTLP_TRACES_HEADERS = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"

DEFAULT_NAMESPACE = "tinyllm"
DEFAULT_METRICS_PORT = 9090
DEFAULT_METRICS_ADDR = "127.0.0.1"

_NAMESPACE_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metrics_namespace(value: str | None = None) -> str:
    """The metric name prefix: ``value``, else ``$TINYLLM_METRICS_NAMESPACE``, else ``tinyllm``.

    Raises ValueError when the result is not a valid Prometheus name prefix.
    """
    chosen = value if value is not None else os.environ.get(ENV_METRICS_NAMESPACE, "")
    chosen = chosen.strip() or DEFAULT_NAMESPACE
    if not _NAMESPACE_RE.match(chosen) or chosen.startswith("__"):
        source = "namespace" if value is not None else ENV_METRICS_NAMESPACE
        raise ValueError(
            f"{source}={chosen!r} is not a valid metric prefix: use letters, digits and "
            "underscores, not starting with a digit (e.g. 'tinyllm' or 'ryot')"
        )
    return chosen


def multiprocess_dir() -> str | None:
    """The prometheus_client multiprocess directory, when multi-worker mode is on."""
    return os.environ.get(ENV_PROMETHEUS_MULTIPROC_DIR) or os.environ.get(
        ENV_PROMETHEUS_MULTIPROC_DIR.lower()
    ) or None
