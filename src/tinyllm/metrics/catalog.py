"""Every metric family tinyllm exports, as data.

This table is the single source of truth: the collector builds its prometheus_client
families from it, ``docs/metrics.md`` and ``deploy/prometheus/alerts.yml`` are rendered
from it (and a test fails when they drift), and the cardinality guard reads the label
sets from it. Names are given without the namespace; ``tinyllm`` is prepended at build
time, or whatever ``TINYLLM_METRICS_NAMESPACE`` says.

Example:
    >>> from tinyllm.metrics.catalog import CATALOG
    >>> CATALOG["requests_total"].labels
    ('model', 'graph', 'request_type')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

__all__ = [
    "ALERTS",
    "CATALOG",
    "AlertRule",
    "Kind",
    "MetricSpec",
    "full_name",
]


class Kind(StrEnum):
    """The prometheus_client type a family is built as."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


GaugeMode = Literal["livesum", "max", "min", "sum", "mostrecent", "livemostrecent", "all"]

# Buckets, named so that the docs can say where they come from.
REQUEST_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The inference-server spec: "11 buckets from 10ms to 30s".
INFERENCE_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The inference-server spec: "9 buckets from 5ms to 2.5s".
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The inference-server spec: "8 buckets from 1ms to 500ms".
INTER_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
# The inference-server spec: "Token Rate Buckets 1 ... 2000".
TOKENS_PER_REQUEST_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEP_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
MODEL_LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# What a gateway adds to a request: tens of microseconds to a few milliseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: what prometheus_client needs, and what the docs say.

    ``multiprocess_mode`` is how a gauge aggregates across worker processes when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (see prometheus_client's multiprocess docs).
    ``group`` orders the reference in docs/metrics.md; ``source`` records where the family
    came from (a spec document or an issue), for maintainers.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    multiprocess_mode: GaugeMode | None = None
    group: str = "request"
    source: str = "001"

    def __post_init__(self) -> None:
        if self.kind is Kind.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")
        if (self.kind is Kind.HISTOGRAM) != (self.buckets is not None):
            raise ValueError(f"{self.name!r}: buckets go with histograms, and only with them")
        if (self.kind is Kind.GAUGE) != (self.multiprocess_mode is not None):
            raise ValueError(
                f"{self.name!r}: multiprocess_mode goes with gauges, and only with them"
            )


def full_name(namespace: str, spec: MetricSpec) -> str:
    """The exposed family name, e.g. ``tinyllm_requests_total``."""
    return f"{namespace}_{spec.name}"


_C, _G, _H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM
_MG = ("model", "graph")

_SPECS = (
    # -- requests (the original metrics set / observability guide) ---------------
    MetricSpec("requests_total", _C, "Total LLM requests started.",
               ("model", "graph", "request_type")),
    MetricSpec("request_latency_seconds", _H, "End-to-end LLM request latency in seconds.",
               _MG, buckets=REQUEST_LATENCY_BUCKETS),
    MetricSpec("active_requests", _G, "LLM requests in flight.", _MG,
               multiprocess_mode="livesum"),
    MetricSpec("tokens_input_total", _C, "Prompt (input) tokens processed.", _MG),
    MetricSpec("tokens_output_total", _C, "Completion (output) tokens generated.", _MG),
    MetricSpec("model_load_duration_seconds", _H, "Time to load a model, in seconds.",
               ("model",), buckets=MODEL_LOAD_BUCKETS),
    MetricSpec("model_load_errors_total", _C, "Model loads that failed, by classified type.",
               ("model", "error_type"), source="issue 2"),
    # -- errors and resilience ---------------------------------------------------------
    MetricSpec("errors_total", _C, "LLM request errors by classified type.",
               ("error_type", "model", "graph"), group="errors"),
    MetricSpec("circuit_breaker_state", _G,
               "Circuit breaker state per model: 0 closed, 1 half-open, 2 open.", ("model",),
               multiprocess_mode="max", group="errors"),
    MetricSpec("circuit_breaker_failures_total", _C, "Failures counted by the circuit breaker.",
               ("model",), group="errors"),
    MetricSpec("circuit_breaker_transitions_total", _C, "Circuit breaker state transitions.",
               ("model", "from_state", "to_state"), group="errors", source="issue 2"),
    # -- graph nodes -----------------------------------------------------------------
    MetricSpec("node_executions_total", _C, "Graph node executions.", ("node", "graph"),
               group="graph"),
    MetricSpec("node_execution_duration_seconds", _H, "Graph node execution time in seconds.",
               ("node", "graph"), buckets=STEP_DURATION_BUCKETS, group="graph"),
    MetricSpec("node_errors_total", _C, "Graph node errors by type.",
               ("node", "graph", "error_type"), group="graph"),
    MetricSpec("graph_executions_total", _C, "Graph executions by outcome (success, error).",
               ("graph", "status"), group="graph"),
    MetricSpec("graph_execution_duration_seconds", _H, "Graph execution time in seconds.",
               ("graph",), buckets=STEP_DURATION_BUCKETS, group="graph"),
    # -- cache -------------------------------------------------------------------------
    MetricSpec("cache_hits_total", _C, "Response cache hits.", ("cache_type",), group="cache"),
    MetricSpec("cache_misses_total", _C, "Response cache misses.", ("cache_type",),
               group="cache"),
    MetricSpec("cache_errors_total", _C,
               "Response cache operations that failed (backend unreachable, bad entry); "
               "the request went on uncached.", ("cache_type", "operation"), group="cache",
               source="issue 5"),
    # -- queue -------------------------------------------------------------------------
    MetricSpec("queue_size", _G, "Requests waiting in the queue.", ("priority",),
               multiprocess_mode="livesum", group="queue"),
    MetricSpec("queue_wait_time_seconds", _H, "Time a request waited in the queue, in seconds.",
               ("priority",), buckets=WAIT_BUCKETS, group="queue"),
    MetricSpec("queue_requests_total", _C, "Requests accepted by the queue.", ("priority",),
               group="queue"),
    MetricSpec("queue_requests_rejected_total", _C, "Requests the queue rejected (full).",
               ("priority",), group="queue"),
    MetricSpec("queue_active_workers", _G, "Queue workers currently processing a request.",
               multiprocess_mode="livesum", group="queue"),
    # -- other -------------------------------------------------------------------------
    MetricSpec("system_info", _G,
               "tinyllm build and platform information (always 1; the facts are labels).",
               ("version", "python_version", "platform"), multiprocess_mode="max",
               group="other"),
    MetricSpec("rate_limit_wait_seconds", _H, "Time spent waiting on the rate limiter, seconds.",
               ("model",), buckets=WAIT_BUCKETS, group="other"),
    MetricSpec("memory_operations_total", _C, "Graph memory operations by type.",
               ("operation_type",), group="other"),
    # -- the observability pipeline itself (issue 3) ----------------------------------
    MetricSpec("events_total", _C, "Events emitted, by category and severity.",
               ("category", "severity"), group="pipeline", source="003"),
    MetricSpec("event_handler_errors_total", _C,
               "Event handlers that raised (the event still reached the other handlers).",
               ("handler",), group="pipeline", source="issue 3"),
    MetricSpec("log_records_dropped_total", _C,
               "Log records left out by sampling (warnings and above are never sampled).",
               ("reason",), group="pipeline", source="issue 3"),
    MetricSpec("telemetry_export_failures_total", _C,
               "Span or metric export batches that failed (collector down, timeout).",
               ("exporter", "signal"), group="pipeline", source="issue 3"),
    MetricSpec("http_disconnects_total", _C,
               "HTTP clients that went away before their answer was sent whole (a scraper "
               "timing out, a cancelled export); normal in small numbers.", ("transport",),
               group="pipeline", source="issue 11"),
    MetricSpec("store_events_dropped_total", _C,
               "Performance events the store could not keep (queue full, database error).",
               ("reason",), group="pipeline", source="issue 4"),
    # -- the gateway (tinyllm serve) ------------------------------------------------
    MetricSpec("gateway_requests_total", _C,
               "HTTP requests the gateway answered on its model APIs, by route and status "
               "code (rejections included: 400, 401, 404, 413, 429, 503, ...).",
               ("route", "status"), group="gateway", source="issue 12"),
    MetricSpec("gateway_overhead_seconds", _H,
               "What the gateway adds to a request: its whole time minus the time spent "
               "waiting on the upstream (also the X-Tinyllm-Overhead-Ms header).",
               ("route",), buckets=OVERHEAD_BUCKETS, group="gateway", source="issue 12"),
    MetricSpec("gateway_key_requests_total", _C,
               "Model calls the gateway accepted, by the caller's key alias.", ("key",),
               group="gateway", source="issue 12"),
    MetricSpec("gateway_key_tokens_total", _C,
               "Tokens of the calls accepted per key alias (direction: input, output), as "
               "the upstream reported them.", ("key", "direction"), group="gateway",
               source="issue 12"),
    MetricSpec("gateway_key_rejections_total", _C,
               "Calls refused per key alias (\"none\": no or an unknown key) and reason "
               "(missing_key, invalid_key, model_not_allowed, budget, rpm, tpm).",
               ("key", "reason"),
               group="gateway", source="issue 12"),
    MetricSpec("gateway_key_cost_usd_total", _C,
               "Spend in USD of the calls accepted per key alias (the request's cost, as "
               "tinyllm_cost_usd_total counts it).", ("key",), group="gateway",
               source="issue 15"),
    MetricSpec("gateway_key_budget_remaining_usd", _G,
               "USD left in the key's budget for the current day or month (keys with "
               "budget_usd set); at 0 its calls are refused with 429 insufficient_quota.",
               ("key",), multiprocess_mode="mostrecent", group="gateway", source="issue 15"),
    MetricSpec("gateway_limit_backend_errors_total", _C,
               "Calls to the shared limits' Redis that failed (down, slow); meanwhile each "
               "instance enforces its own limits.", group="gateway", source="issue 12"),
    # -- inference (the inference-server API) ----------------------------------------
    MetricSpec("inference_requests_total", _C,
               "Inference requests by outcome (success, error, timeout, cancelled: the client "
               "went away).", ("model", "status"),
               group="inference", source="002"),
    MetricSpec("inference_request_duration_seconds", _H,
               "End-to-end inference latency in seconds.", ("model",),
               buckets=INFERENCE_DURATION_BUCKETS, group="inference", source="002"),
    MetricSpec("inference_ttft_seconds", _H, "Time to first token in seconds.", ("model",),
               buckets=TTFT_BUCKETS, group="inference", source="002"),
    MetricSpec("inference_inter_token_latency_seconds", _H,
               "Time between consecutive generated tokens in seconds (per token: a chunk "
               "of n tokens counts n gaps of its gap / n).", ("model",),
               buckets=INTER_TOKEN_BUCKETS, group="inference", source="002"),
    MetricSpec("inference_time_per_output_chunk_seconds", _H,
               "Time between consecutive streamed chunks in seconds, once per chunk "
               "whatever it carries (OTel GenAI's time_per_output_chunk).", ("model",),
               buckets=INTER_TOKEN_BUCKETS, group="inference", source="issue 15"),
    MetricSpec("inference_time_per_output_token_seconds", _H,
               "A request's mean time per output token after the first, seconds: "
               "(duration - TTFT) / (tokens - 1), once per request of two tokens or more "
               "(OTel GenAI's time_per_output_token; the tpot objective).", ("model",),
               buckets=INTER_TOKEN_BUCKETS, group="inference", source="issue 15"),
    MetricSpec("tokens_generated_total", _C, "Tokens generated.", ("model",),
               group="inference", source="002"),
    MetricSpec("tokens_per_request", _H, "Tokens generated per request.", ("model",),
               buckets=TOKENS_PER_REQUEST_BUCKETS, group="inference", source="002"),
    MetricSpec("tokens_per_second", _G,
               "Generation rate of the most recent request, tokens per second.", ("model",),
               multiprocess_mode="mostrecent", group="inference", source="002"),
    MetricSpec("average_tokens_per_minute", _G,
               "Tokens generated over the trailing 60 s, updated as requests finish.",
               ("model",), multiprocess_mode="livesum", group="inference", source="002"),
    MetricSpec("kv_cache_hit_ratio", _G, "KV-cache hit ratio (0.0-1.0).", ("model",),
               multiprocess_mode="mostrecent", group="inference", source="002"),
    MetricSpec("batch_size", _H, "Inference batch sizes.", ("model",),
               buckets=BATCH_SIZE_BUCKETS, group="inference", source="002"),
    MetricSpec("batches_processed_total", _C, "Inference batches processed.", ("model",),
               group="inference", source="002"),
    MetricSpec("inference_errors_total", _C,
               "Inference errors by classified type (oom, timeout, cuda, ...).",
               ("model", "error_type"), group="inference", source="002"),
    MetricSpec("inference_retries_total", _C, "Inference retry attempts.", ("model",),
               group="inference", source="002"),
    # -- cost ----------------------------------------------------------------------------
    MetricSpec("cost_usd_total", _C,
               "Spend in USD: each request's tokens at its model's price (per million "
               "input, cached-input and output tokens; per hour of running for "
               "self-hosted models). Local models cost 0 unless priced.", ("model",),
               group="cost", source="issue 15"),
    MetricSpec("unpriced_requests_total", _C,
               "Requests to a model with no known price: their cost is unknown, not 0 "
               "(add the model to your price file).", ("model",), group="cost",
               source="issue 15"),
    # -- SLOs and goodput ---------------------------------------------------------------
    MetricSpec("slo_requests_total", _C,
               "Requests judged against their model's objectives, by objective (ttft, "
               "tpot, e2e; all: every objective that applies) and outcome (met, missed; "
               "a failed request misses every objective).", ("model", "objective", "outcome"),
               group="slo", source="issue 15"),
    MetricSpec("slo_objective_seconds", _G,
               "The threshold of each latency objective, seconds (also an exact bucket "
               "boundary of its histogram).", ("model", "objective"),
               multiprocess_mode="max", group="slo", source="issue 15"),
    MetricSpec("slo_target_ratio", _G,
               "The share of requests that must meet the objectives (e.g. 0.99).",
               ("model",), multiprocess_mode="max", group="slo", source="issue 15"),
    MetricSpec("goodput_requests_per_second", _G,
               "Requests meeting every objective per second over the trailing minute, "
               "updated as requests end.", ("model",), multiprocess_mode="livesum",
               group="slo", source="issue 15"),
    MetricSpec("goodput_tokens_per_second", _G,
               "Output tokens of the requests meeting every objective, per second over "
               "the trailing minute, updated as requests end.", ("model",),
               multiprocess_mode="livesum", group="slo", source="issue 15"),
    # -- GPU (the inference-server API) ----------------------------------------------
    MetricSpec("gpu_memory_used_bytes", _G, "GPU memory in use, bytes.", ("model", "gpu_id"),
               multiprocess_mode="mostrecent", group="gpu", source="002"),
    MetricSpec("gpu_memory_reserved_bytes", _G, "GPU memory reserved, bytes.",
               ("model", "gpu_id"), multiprocess_mode="mostrecent", group="gpu", source="002"),
    MetricSpec("gpu_utilization_percent", _G, "GPU compute utilization, percent (0-100).",
               ("model", "gpu_id"), multiprocess_mode="mostrecent", group="gpu", source="002"),
    MetricSpec("memory_efficiency_ratio", _G, "GPU memory used / reserved (0.0-1.0).",
               ("model", "gpu_id"), multiprocess_mode="mostrecent", group="gpu", source="002"),
)

CATALOG: MappingProxyType[str, MetricSpec] = MappingProxyType({s.name: s for s in _SPECS})
if len(CATALOG) != len(_SPECS):  # pragma: no cover - a typo in the table above
    raise RuntimeError("duplicate metric name in the catalog")


@dataclass(frozen=True)
class AlertRule:
    """A Prometheus alerting rule; ``{ns}`` in ``expr`` becomes the namespace.

    ``note`` says how it differs from the original rule it came from, for the docs.
    """

    name: str
    expr: str
    duration: str
    summary: str
    severity: str = "warning"
    extra_labels: tuple[tuple[str, str], ...] = ()
    note: str = ""


ALERTS: tuple[AlertRule, ...] = (
    # The inference-server API's four, made valid (see the notes).
    AlertRule(
        "HighInferenceErrorRate",
        "sum by (model) (rate({ns}_inference_errors_total[5m]))\n"
        "  / sum by (model) (rate({ns}_inference_requests_total[5m])) > 0.05",
        "5m",
        "More than 5% of inference requests to {{ $labels.model }} fail.",
        note="That rule compared the raw error rate (errors per second) with 0.05; "
        "the alert's name asks for a ratio of requests.",
    ),
    AlertRule(
        "HighInferenceLatency",
        "histogram_quantile(0.95,\n"
        "  sum by (model, le) (rate({ns}_inference_request_duration_seconds_bucket[5m]))) > 10",
        "10m",
        "p95 inference latency of {{ $labels.model }} is above 10 s.",
        note="That rule passed the histogram itself to histogram_quantile, which needs the "
        "rate of its _bucket series aggregated by le.",
    ),
    AlertRule(
        "HighTTFT",
        "histogram_quantile(0.95,\n"
        "  sum by (model, le) (rate({ns}_inference_ttft_seconds_bucket[5m]))) > 1",
        "10m",
        "p95 time to first token of {{ $labels.model }} is above 1 s (memory pressure?).",
        extra_labels=(("reason", "memory_pressure"),),
        note="That rule was called LowTTFT, but it fires on a high TTFT; same histogram fix "
        "as HighInferenceLatency.",
    ),
    AlertRule(
        "GPUMemoryPressure",
        "{ns}_memory_efficiency_ratio < 0.5",
        "5m",
        "GPU {{ $labels.gpu_id }} uses under half of the memory reserved for "
        "{{ $labels.model }}.",
        note="Not at all: it was valid as written.",
    ),
    # The tinyllm_ families (the quick reference and observability guide vocabulary).
    AlertRule(
        "TinyLLMHighErrorRate",
        "sum by (model) (rate({ns}_errors_total[5m]))\n"
        "  / sum by (model) (rate({ns}_requests_total[5m])) > 0.05",
        "5m",
        "More than 5% of requests to {{ $labels.model }} end in an error.",
    ),
    AlertRule(
        "TinyLLMHighLatencyP95",
        "histogram_quantile(0.95,\n"
        "  sum by (model, le) (rate({ns}_request_latency_seconds_bucket[5m]))) > 10",
        "10m",
        "p95 request latency of {{ $labels.model }} is above 10 s.",
    ),
    AlertRule(
        "TinyLLMCircuitBreakerOpen",
        "max by (model) ({ns}_circuit_breaker_state) == 2",
        "1m",
        "The circuit breaker for {{ $labels.model }} is open.",
        severity="critical",
    ),
)
