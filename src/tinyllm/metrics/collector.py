"""``MetricsCollector``: the collector API over the catalog's families.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> metrics = MetricsCollector(registry=CollectorRegistry())
    >>> metrics.increment_request_count(model="m", graph="g", request_type="generate")
    >>> with metrics.track_request_latency(model="m", graph="g"):
    ...     pass
    >>> metrics.get_cardinality_stats()["metrics"]["requests_total"]
    {'cardinality': 1, 'dropped': 0}

Each method validates what it can check cheaply (counts and durations must be finite and
non-negative, states must be known) and raises ``ValueError`` naming the argument before
touching any metric, so nothing is half-applied. An exception inside a ``track_*`` block
is recorded (error counters, status label) and re-raised unchanged.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from time import perf_counter
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry

from tinyllm._validation import check_amount
from tinyllm.errors import classify_error
from tinyllm.metrics.families import OTHER, FamilySet, family_set
from tinyllm.settings import metrics_namespace

__all__ = [
    "BREAKER_STATES",
    "DEFAULT_MAX_CARDINALITY",
    "OTHER",
    "MetricsCollector",
    "get_metrics_collector",
    "reset_metrics_collector",
]

DEFAULT_MAX_CARDINALITY = 1000

#: Circuit-breaker states and the gauge value each is exported as.
BREAKER_STATES: dict[str, int] = {"closed": 0, "half-open": 1, "open": 2}
_BREAKER_ALIASES = {"half_open": "half-open", "halfopen": "half-open"}


class _Timed(ABC):
    """Base of the track_* context managers: times the block, records the outcome."""

    __slots__ = ("_start",)

    def __enter__(self) -> _Timed:
        self._start = perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(perf_counter() - self._start, exc)

    @abstractmethod
    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        """Record the block's outcome; ``exc`` is None on success."""


class _RequestLatency(_Timed):
    __slots__ = ("_active", "_c", "_errors", "_graph", "_latency", "_model")

    def __init__(self, c: MetricsCollector, model: str, graph: str) -> None:
        self._c, self._model, self._graph = c, model, graph
        self._latency = c._child("request_latency_seconds", (model, graph))
        self._active = c._child("active_requests", (model, graph))

    def __enter__(self) -> _RequestLatency:
        self._active.inc()
        self._start = perf_counter()
        return self

    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        self._latency.observe(elapsed)
        self._active.dec()
        if exc is not None:
            self._c.increment_error_count(classify_error(exc), self._model, self._graph)


class _NodeExecution(_Timed):
    __slots__ = ("_c", "_graph", "_node")

    def __init__(self, c: MetricsCollector, node: str, graph: str) -> None:
        self._c, self._node, self._graph = c, node, graph

    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        key = (self._node, self._graph)
        self._c._child("node_executions_total", key).inc()
        self._c._child("node_execution_duration_seconds", key).observe(elapsed)
        if exc is not None:
            self._c.increment_node_error_count(self._node, classify_error(exc), self._graph)


class _GraphExecution(_Timed):
    __slots__ = ("_c", "_graph")

    def __init__(self, c: MetricsCollector, graph: str) -> None:
        self._c, self._graph = c, graph

    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        status = "success" if exc is None else "error"
        self._c._child("graph_executions_total", (self._graph, status)).inc()
        self._c._child("graph_execution_duration_seconds", (self._graph,)).observe(elapsed)


class _ModelLoad(_Timed):
    __slots__ = ("_c", "_model")

    def __init__(self, c: MetricsCollector, model: str) -> None:
        self._c, self._model = c, model

    def _finish(self, elapsed: float, exc: BaseException | None) -> None:
        if exc is None:
            self._c.record_model_load(elapsed, self._model)
        else:
            # A failed load took no "load time". It gets its own counter rather than
            # errors_total: the request that needed the model fails and is counted there
            # already, and an error with no request would skew every error ratio.
            key = (self._model, classify_error(exc))
            self._c._child("model_load_errors_total", key).inc()


class MetricsCollector:
    """Records tinyllm's metrics into a prometheus_client registry.

    Args:
        registry: where the families live; default prometheus_client's ``REGISTRY``,
            so ``generate_latest()`` and ``make_asgi_app()`` show them.
        namespace: metric name prefix; default ``$TINYLLM_METRICS_NAMESPACE`` or
            ``tinyllm``.
        max_cardinality: label combinations allowed per family before new ones fold
            into ``other``.

    Collectors over the same registry and namespace share the same families, so
    creating several is safe.
    """

    def __init__(
        self,
        max_cardinality: int = DEFAULT_MAX_CARDINALITY,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str | None = None,
    ) -> None:
        if isinstance(max_cardinality, bool) or not isinstance(max_cardinality, int):
            raise TypeError(f"max_cardinality must be an int, got {max_cardinality!r}")
        if max_cardinality < 1:
            raise ValueError(f"max_cardinality must be >= 1, got {max_cardinality}")
        self.max_cardinality = max_cardinality
        self.families: FamilySet = family_set(registry, metrics_namespace(namespace))
        self.registry = self.families.registry
        self.namespace = self.families.namespace
        # Bound methods of each family's child(): one attribute lookup on the hot path.
        self._lookups = {name: fam.child for name, fam in self.families.items()}

    def _child(self, family: str, key: tuple[Any, ...]) -> Any:
        return self._lookups[family](key, self.max_cardinality)

    # -- requests ----------------------------------------------------------------------
    def increment_request_count(
        self, model: str = "unknown", graph: str = "default", request_type: str = "generate"
    ) -> None:
        """Count one request started (``tinyllm_requests_total``)."""
        self._lookups["requests_total"]((model, graph, request_type), self.max_cardinality).inc()

    def track_request_latency(self, model: str = "unknown", graph: str = "default") -> _Timed:
        """Context manager: active-requests gauge, latency histogram, errors on exception."""
        return _RequestLatency(self, model, graph)

    def record_tokens(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        model: str = "unknown",
        graph: str = "default",
    ) -> None:
        """Add prompt and completion token counts."""
        check_amount("input_tokens", input_tokens, integral=True)
        check_amount("output_tokens", output_tokens, integral=True)
        key = (model, graph)
        if input_tokens:
            self._child("tokens_input_total", key).inc(input_tokens)
        if output_tokens:
            self._child("tokens_output_total", key).inc(output_tokens)

    def track_model_load(self, model: str = "unknown") -> _Timed:
        """Context manager: observe how long loading ``model`` took."""
        return _ModelLoad(self, model)

    # -- errors and circuit breaker -----------------------------------------------------

    def record_model_load(self, duration: float, model: str = "unknown") -> None:
        """Observe a model load that took ``duration`` seconds, measured elsewhere
        (e.g. Ollama's own ``load_duration``); ``track_model_load`` times one itself."""
        check_amount("duration", duration)
        self._child("model_load_duration_seconds", (model,)).observe(duration)
    def increment_error_count(
        self, error_type: str = "unknown", model: str = "unknown", graph: str = "default"
    ) -> None:
        """Count one error of ``error_type`` (see ``tinyllm.errors.ERROR_TYPES``)."""
        self._child("errors_total", (error_type, model, graph)).inc()

    def update_circuit_breaker_state(self, state: str, model: str = "unknown") -> None:
        """Set the breaker state gauge (closed=0, half-open=1, open=2); count transitions."""
        normal = _BREAKER_ALIASES.get(state, state) if isinstance(state, str) else state
        value = BREAKER_STATES.get(normal) if isinstance(normal, str) else None
        if value is None:
            raise ValueError(
                f"state={state!r} is not a circuit-breaker state; valid: closed, half-open, open"
            )
        fs = self.families
        with fs.breaker_lock:
            previous = fs.breaker_states.get(model, "closed")
            fs.breaker_states[model] = normal
            self._child("circuit_breaker_state", (model,)).set(value)
            if previous != normal:
                key = (model, previous, normal)
                self._child("circuit_breaker_transitions_total", key).inc()

    def increment_circuit_breaker_failures(self, model: str = "unknown") -> None:
        """Count one failure seen by ``model``'s circuit breaker."""
        self._child("circuit_breaker_failures_total", (model,)).inc()

    # -- graphs and nodes --------------------------------------------------------------
    def track_node_execution(self, node: str, graph: str = "default") -> _Timed:
        """Context manager: count and time one node execution; errors by type."""
        return _NodeExecution(self, node, graph)

    def increment_node_error_count(
        self, node: str, error_type: str = "unknown", graph: str = "default"
    ) -> None:
        """Count one error in ``node``."""
        self._child("node_errors_total", (node, graph, error_type)).inc()

    def track_graph_execution(self, graph: str = "default") -> _Timed:
        """Context manager: count (by status) and time one graph execution."""
        return _GraphExecution(self, graph)

    def increment_memory_operation(self, operation_type: str) -> None:
        """Count one graph-memory operation (add, get, update, delete, ...)."""
        self._child("memory_operations_total", (operation_type,)).inc()

    # -- cache -------------------------------------------------------------------------
    def increment_cache_hit(self, cache_type: str = "memory") -> None:
        """Count one response-cache hit."""
        self._child("cache_hits_total", (cache_type,)).inc()

    def increment_cache_miss(self, cache_type: str = "memory") -> None:
        """Count one response-cache miss."""
        self._child("cache_misses_total", (cache_type,)).inc()

    def increment_cache_errors(self, cache_type: str = "redis", operation: str = "get") -> None:
        """Count one cache operation that failed on its backend (``operation``: get, set,
        stats, clear); the request it served went on without the cache."""
        self._child("cache_errors_total", (cache_type, operation)).inc()

    # -- rate limiting and queue --------------------------------------------------------
    def record_rate_limit_wait(self, wait_time: float, model: str = "unknown") -> None:
        """Observe seconds spent waiting on the rate limiter."""
        check_amount("wait_time", wait_time)
        self._child("rate_limit_wait_seconds", (model,)).observe(wait_time)

    def set_queue_size(self, size: int, priority: str = "normal") -> None:
        """Set how many requests of ``priority`` wait in the queue."""
        check_amount("size", size, integral=True)
        self._child("queue_size", (priority,)).set(size)

    def record_queue_wait_time(self, wait_time: float, priority: str = "normal") -> None:
        """Observe seconds a request of ``priority`` waited in the queue."""
        check_amount("wait_time", wait_time)
        self._child("queue_wait_time_seconds", (priority,)).observe(wait_time)

    def increment_queue_requests(self, priority: str = "normal") -> None:
        """Count one request accepted by the queue."""
        self._child("queue_requests_total", (priority,)).inc()

    def increment_queue_rejections(self, priority: str = "normal") -> None:
        """Count one request the queue rejected because it was full."""
        self._child("queue_requests_rejected_total", (priority,)).inc()

    def set_queue_active_workers(self, count: int) -> None:
        """Set how many queue workers are busy."""
        check_amount("count", count, integral=True)
        self._child("queue_active_workers", ()).set(count)

    # -- inference extras (the inference-server API) ------------------------------
    def record_batch(self, batch_size: int, model: str = "unknown") -> None:
        """Observe one inference batch of ``batch_size`` requests."""
        check_amount("batch_size", batch_size, integral=True)
        self._child("batch_size", (model,)).observe(batch_size)
        self._child("batches_processed_total", (model,)).inc()

    def set_kv_cache_hit_ratio(self, ratio: float, model: str = "unknown") -> None:
        """Set the KV-cache hit ratio (0.0-1.0)."""
        check_amount("ratio", ratio)
        if ratio > 1:
            raise ValueError(f"ratio must be between 0.0 and 1.0, got {ratio!r}")
        self._child("kv_cache_hit_ratio", (model,)).set(ratio)

    def increment_retry_count(self, model: str = "unknown") -> None:
        """Count one retry attempt of an inference request."""
        self._child("inference_retries_total", (model,)).inc()

    # -- the observability pipeline's own health ------------------------------------
    def increment_events(self, category: str, severity: str) -> None:
        """Count one emitted event (``events_total{category,severity}``)."""
        self._child("events_total", (category, severity)).inc()

    def increment_event_handler_errors(self, handler: str) -> None:
        """Count one event handler that raised."""
        self._child("event_handler_errors_total", (handler,)).inc()

    def increment_log_records_dropped(self, reason: str, count: int = 1) -> None:
        """Count log records left out (``reason``: ``sampled``, ``rate_limited``)."""
        check_amount("count", count, integral=True)
        self._child("log_records_dropped_total", (reason,)).inc(count)

    def increment_telemetry_export_failures(self, exporter: str, signal: str = "traces") -> None:
        """Count one failed export batch (``signal``: traces or metrics)."""
        self._child("telemetry_export_failures_total", (exporter, signal)).inc()

    def record_gateway_answer(self, route: str, status: int,
                              overhead: float | None = None) -> None:
        """Count one answer of the gateway (``gateway_requests_total{route,status}``) and
        observe what the gateway added to it, in seconds, when given."""
        self._child("gateway_requests_total", (route, str(status))).inc()
        if overhead is not None:
            self._child("gateway_overhead_seconds", (route,)).observe(overhead)

    def record_gateway_key(self, key: str, input_tokens: int = 0,
                           output_tokens: int = 0) -> None:
        """Count one call accepted for key alias ``key``, with its tokens."""
        check_amount("input_tokens", input_tokens, integral=True)
        check_amount("output_tokens", output_tokens, integral=True)
        self._child("gateway_key_requests_total", (key,)).inc()
        if input_tokens:
            self._child("gateway_key_tokens_total", (key, "input")).inc(input_tokens)
        if output_tokens:
            self._child("gateway_key_tokens_total", (key, "output")).inc(output_tokens)

    def record_gateway_key_cost(self, key: str, usd: float) -> None:
        """Add a finished call's cost (USD, the request's ``cost_usd``) to key ``key``'s
        spend (``gateway_key_cost_usd_total``); 0 too, so a key on free models shows 0."""
        check_amount("usd", usd)
        self._child("gateway_key_cost_usd_total", (key,)).inc(usd)

    def set_gateway_key_budget_remaining(self, key: str, usd: float) -> None:
        """What is left of key ``key``'s budget this period, USD
        (``gateway_key_budget_remaining_usd``)."""
        check_amount("usd", usd)
        self._child("gateway_key_budget_remaining_usd", (key,)).set(usd)

    def increment_gateway_key_rejections(self, key: str, reason: str) -> None:
        """Count one call refused for key alias ``key`` (``none``: no or an unknown key)."""
        self._child("gateway_key_rejections_total", (key, reason)).inc()

    def increment_gateway_limit_backend_errors(self) -> None:
        """Count one failed call to the shared limits' backend (Redis)."""
        self._child("gateway_limit_backend_errors_total", ()).inc()

    def increment_http_disconnects(self, transport: str) -> None:
        """Count one HTTP client gone mid-answer (``transport``: ``threaded``, ``asgi``)."""
        self._child("http_disconnects_total", (transport,)).inc()

    def increment_store_events_dropped(self, reason: str, count: int = 1) -> None:
        """Count performance events the store lost (``reason``: queue_full, db_error, ...)."""
        check_amount("count", count, integral=True)
        self._child("store_events_dropped_total", (reason,)).inc(count)

    # -- introspection -----------------------------------------------------------------
    def get_cardinality_stats(self) -> dict[str, Any]:
        """Label combinations per family, and how many updates were folded into ``other``.

        Returns ``{"total_combinations", "max_cardinality", "metrics": {name:
        {"cardinality", "dropped"}}}``; families never touched are left out.
        """
        per_metric: dict[str, dict[str, int]] = {}
        for name, fam in self.families.items():
            if fam.cardinality or fam.dropped:
                per_metric[name] = {"cardinality": fam.cardinality, "dropped": fam.dropped}
        return {
            "total_combinations": sum(m["cardinality"] for m in per_metric.values()),
            "max_cardinality": self.max_cardinality,
            "metrics": per_metric,
        }


_default: MetricsCollector | None = None
_default_lock = threading.Lock()


def get_metrics_collector() -> MetricsCollector:
    """The process-wide collector over prometheus_client's default registry.

    Example:
        >>> get_metrics_collector() is get_metrics_collector()
        True
    """
    found = _default
    if found is not None:
        return found
    return _make_default()


def _make_default() -> MetricsCollector:
    global _default
    with _default_lock:
        if _default is None:
            _default = MetricsCollector()
        return _default


def reset_metrics_collector() -> None:
    """Forget the process-wide collector and unregister its families (tests only)."""
    global _default
    from tinyllm.metrics.families import forget_family_sets

    with _default_lock:
        _default = None
        forget_family_sets()

