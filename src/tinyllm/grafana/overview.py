"""The Prometheus overview dashboard: every catalog family worth a chart, its PromQL
built so that the rules hold (``model=~"$model"`` on every family with a ``model``
label, ``$__rate_interval`` in every ``rate``, counters only under ``rate`` (or, in a
stat of the whole time range, ``increase(...[$__range])``), quantiles over ``sum by
(le, ...)``, a single bucket only as an exact-bucket share of its ``_count``), and the
families left out with the reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tinyllm.grafana._model import Dashboard, Expect, Panel, Row, Target, Variable
from tinyllm.metrics.catalog import CATALOG, Kind, MetricSpec

__all__ = ["NOT_CHARTED", "SLO_BUCKETS", "overview_dashboard"]

#: Families no panel charts, and why (the tests check that every other one is charted).
NOT_CHARTED: Mapping[str, str] = {
    "tokens_per_second": "the generation rate of whichever request finished last: one "
    "request's figure, overwritten by the next. \"Tokens generated per second by model\" "
    "is the same figure over every request.",
    "model_load_duration_seconds": "models load as a process starts (the example, "
    "`tinyllm serve`), before Prometheus first scrapes it, and `rate()` cannot see an "
    "increase that came before a series' first sample: a per-second or quantile panel of "
    "loads stays at 0 or empty (the dashboard test showed exactly that). The totals are "
    "in `/metrics`.",
    "model_load_errors_total": "as `model_load_duration_seconds`: failed loads happen at "
    "start-up, before the first scrape, so their rate reads 0. The requests that needed "
    "the model fail too, and show in \"Errors per second by model and error type\".",
    "average_tokens_per_minute": "60 times the rate of `tokens_generated_total` over the "
    "trailing minute, computed in the process and updated only when a request finishes "
    "(it does not fall to 0 when traffic stops). \"Tokens generated per second by model\" "
    "is the same figure, computed by Prometheus.",
    "goodput_requests_per_second": "the rate of `slo_requests_total{objective=\"all\", "
    "outcome=\"met\"}` over the trailing minute, computed in the process and updated only "
    "when a request ends (it does not fall to 0 when traffic stops). \"Goodput: requests "
    "meeting every objective per second by model\" is the same figure, computed by "
    "Prometheus over any window.",
}

#: The exact-bucket panel's variables: objective -> (variable, histogram, default ``le``).
#: Every SLO threshold is a bucket boundary of its histogram, so picking the threshold
#: among the bucket bounds (``label_values(..., le)``) gives the exact share under it.
SLO_BUCKETS: Mapping[str, tuple[str, str, str]] = {
    "ttft": ("ttft_threshold", "inference_ttft_seconds", "0.5"),
    "tpot": ("tpot_threshold", "inference_time_per_output_token_seconds", "0.05"),
    "e2e": ("e2e_threshold", "inference_request_duration_seconds", "5.0"),
}

_RATE_WINDOW = "$__rate_interval"
_RANGE = "$__range"
_MODEL_MATCHER = 'model=~"$model"'
_HOUR = "3600"


@dataclass(frozen=True)
class _PromQL:
    namespace: str

    def selector(self, family: str, suffix: str = "", **match: str) -> str:
        spec: MetricSpec = CATALOG[family]
        matchers = [_MODEL_MATCHER] if "model" in spec.labels else []
        matchers += [f'{k}=~"{v}"' if any(c in v for c in "|.*") else f'{k}="{v}"'
                     for k, v in match.items()]
        inner = "{" + ", ".join(matchers) + "}" if matchers else ""
        return f"{self.namespace}_{family}{suffix}{inner}"

    def rate(self, by: Sequence[str], family: str, suffix: str = "", **match: str) -> str:
        """``sum by (by) (rate(family[$__rate_interval]))``: counters (and a histogram's
        ``_count``) only ever appear under ``rate``."""
        spec = CATALOG[family]
        if spec.kind is Kind.GAUGE or (spec.kind is Kind.HISTOGRAM and not suffix):
            raise ValueError(f"rate() of {family} ({spec.kind.value}{suffix})")
        return _agg("sum", by, f"rate({self.selector(family, suffix, **match)}[{_RATE_WINDOW}])")

    def per_hour(self, by: Sequence[str], family: str, **match: str) -> str:
        """A counter's rate per hour (spend: USD per hour)."""
        return f"{self.rate(by, family, **match)} * {_HOUR}"

    def in_range(self, by: Sequence[str], family: str) -> str:
        """``sum by (by) (increase(family[$__range]))``: a counter's increase over the
        dashboard's whole time range (for a stat panel)."""
        if CATALOG[family].kind is not Kind.COUNTER:
            raise ValueError(f"increase() of {family}, which is not a counter")
        return _agg("sum", by, f"increase({self.selector(family)}[{_RANGE}])")

    def exact_bucket_share(self, by: Sequence[str], family: str, variable: str) -> str:
        """The share of observations at or under the bound ``$variable``: one exact
        bucket over the count (no interpolation: the bound is a real boundary)."""
        if CATALOG[family].kind is not Kind.HISTOGRAM:
            raise ValueError(f"a bucket of {family}, which is not a histogram")
        return _ratio(self.rate(by, family, "_bucket", le=f"${variable}"),
                      self.rate(by, family, "_count"))

    def quantile(self, q: float, by: Sequence[str], family: str) -> str:
        if CATALOG[family].kind is not Kind.HISTOGRAM:
            raise ValueError(f"histogram_quantile of {family}, which is not a histogram")
        return (f"histogram_quantile({q:g}, sum by ({', '.join(('le', *by))}) "
                f"(rate({self.selector(family, '_bucket')}[{_RATE_WINDOW}])))")

    def gauge(self, agg: str, by: Sequence[str], family: str) -> str:
        if CATALOG[family].kind is not Kind.GAUGE:
            raise ValueError(f"{family} is not a gauge: chart it under rate()")
        return _agg(agg, by, self.selector(family))


def _agg(op: str, by: Sequence[str], inner: str) -> str:
    return f"{op} by ({', '.join(by)}) ({inner})" if by else f"{op}({inner})"


def _ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n  / {denominator}"


def _legend(by: Sequence[str], suffix: str = "") -> str:
    text = " ".join(f"{{{{{label}}}}}" for label in by)
    return f"{text} {suffix}".strip()


def _quantiles(p: _PromQL, family: str, by: Sequence[str], qs: Sequence[float] = (0.5, 0.95, 0.99)
               ) -> tuple[Target, ...]:
    return tuple(Target(p.quantile(q, by, family), _legend(by, f"p{round(q * 100)}"),
                        f"quantile:{family}") for q in qs)


def _rates(p: _PromQL, family: str, by: Sequence[str], suffix: str = "", legend: str = "",
           expect: Expect = "rate", **match: str) -> Target:
    return Target(p.rate(by, family, suffix, **match), _legend(by, legend), expect)


_M = ("model",)
_BREAKER = ((0, "closed", "green"), (1, "half-open", "yellow"), (2, "open", "red"))


def _overview_rows(p: _PromQL) -> tuple[Row, ...]:
    ns = p.namespace
    traffic = Row("Traffic", (
        Panel("Requests per second by model", "reqps",
              (_rates(p, "requests_total", _M),),
              f"Every request the lifecycle opened ({ns}_requests_total): client calls, "
              "decorators, InferenceContext and the gateway's calls."),
        Panel("Requests per second by model and request type", "reqps",
              (_rates(p, "requests_total", ("model", "request_type")),),
              "chat, chat_stream, completion, embed, ... as the caller declared it."),
        Panel("Requests in flight by model", "short",
              (Target(p.gauge("sum", _M, "active_requests"), "{{model}}", "nonnegative"),),
              "Summed over instances."),
        Panel("Inference requests per second by model and status", "reqps",
              (_rates(p, "inference_requests_total", ("model", "status")),),
              "success, error, timeout, cancelled (the client went away)."),
    ))
    err_by = ("model", "error_type")
    errors = Row("Errors", (
        Panel("Errors per second by model and error type", "reqps",
              (_rates(p, "errors_total", err_by),),
              "error_type is the classified type (timeout, rate_limited, oom, ...)."),
        Panel("Error ratio by model (errors / requests)", "percentunit",
              (Target(_ratio(p.rate(_M, "errors_total"), p.rate(_M, "requests_total")),
                      "{{model}}", "ratio"),),
              "The TinyLLMHighErrorRate alert fires above 5 % for 5 minutes."),
        Panel("Inference errors per second by model and error type", "reqps",
              (_rates(p, "inference_errors_total", err_by),)),
        Panel("Inference error ratio by model (errors / inference requests)", "percentunit",
              (Target(_ratio(p.rate(_M, "inference_errors_total"),
                             p.rate(_M, "inference_requests_total")), "{{model}}", "ratio"),),
              "The HighInferenceErrorRate alert fires above 5 % for 5 minutes."),
        Panel("Inference retries per second by model", "ops",
              (_rates(p, "inference_retries_total", _M),)),
    ))
    latency = Row("Latency", (
        Panel("Request latency p50 / p95 / p99 by model", "s",
              _quantiles(p, "request_latency_seconds", _M), "End to end, as the caller saw it."),
        Panel("Inference latency p50 / p95 / p99 by model", "s",
              _quantiles(p, "inference_request_duration_seconds", _M)),
        Panel("Time to first token p50 / p95 / p99 by model", "s",
              _quantiles(p, "inference_ttft_seconds", _M)),
        Panel("Inter-token latency p50 / p95 / p99 by model", "s",
              _quantiles(p, "inference_inter_token_latency_seconds", _M)),
        Panel("Time per output token p50 / p95 / p99 by model", "s",
              _quantiles(p, "inference_time_per_output_token_seconds", _M),
              "Each request's mean time per output token after the first: (duration - "
              "TTFT) / (tokens - 1), what the tpot objective judges."),
        Panel("Time between streamed chunks p50 / p95 / p99 by model", "s",
              _quantiles(p, "inference_time_per_output_chunk_seconds", _M),
              "Once per chunk, whatever it carries; inter-token latency divides a chunk's "
              "gap among its tokens."),
        Panel("Rate limiter wait p50 / p95 by model", "s",
              _quantiles(p, "rate_limit_wait_seconds", _M, (0.5, 0.95))),
    ))
    tokens = Row("Tokens", (
        Panel("Input and output tokens per second by model", "suffix: tokens/s",
              (_rates(p, "tokens_input_total", _M, legend="input"),
               _rates(p, "tokens_output_total", _M, legend="output")),
              "As the model (or the gateway's upstream) reported its usage."),
        Panel("Tokens generated per second by model", "suffix: tokens/s",
              (_rates(p, "tokens_generated_total", _M),),
              "Counted as they are generated (streamed tokens included)."),
        Panel("Tokens per request p50 / p95 by model", "short",
              _quantiles(p, "tokens_per_request", _M, (0.5, 0.95))),
    ))
    key = ("key",)
    cost = Row("Cost", (
        Panel("Spend per hour by model (USD/h)", "currencyUSD",
              (Target(p.per_hour(_M, "cost_usd_total"), "{{model}}", "rate"),),
              "Each request's tokens at its model's price (per hour of running for "
              "self-hosted models with a per_hour price), as a rate, times 3600. A model "
              "with no price is not in it: see \"Unpriced requests\"."),
        Panel("Spend in the time range by model (USD)", "currencyUSD",
              (Target(p.in_range(_M, "cost_usd_total"), "{{model}}", "rate"),),
              "increase() over the dashboard's whole time range.", kind="stat", width=12),
        Panel("Unpriced requests per second by model", "reqps",
              (_rates(p, "unpriced_requests_total", _M),),
              "Requests to a model with no known price: their cost is unknown, not 0 (add "
              "the model to the price file, --prices or $TINYLLM_PRICES)."),
        Panel("Spend per hour by key (USD/h)", "currencyUSD",
              (Target(p.per_hour(key, "gateway_key_cost_usd_total"), "{{key}}", "rate"),),
              "The gateway's calls per key alias, at their requests' cost."),
        Panel("Budget left by key (USD)", "currencyUSD",
              (Target(p.gauge("min", key, "gateway_key_budget_remaining_usd"), "{{key}}",
                      "nonnegative"),),
              "Keys with budget_usd, for the current day or month; at 0 the key's calls "
              "are refused (429). The lowest any instance reports.", kind="stat"),
    ))
    mo = ("model", "objective")
    judged = p.rate(_M, "slo_requests_total", objective="all")
    missed = p.rate(_M, "slo_requests_total", objective="all", outcome="missed")
    target = p.gauge("max", _M, "slo_target_ratio")
    slo = Row("SLO and goodput", (
        Panel("SLO attainment ratio by model and objective (met / judged)", "percentunit",
              (Target(_ratio(p.rate(mo, "slo_requests_total", outcome="met"),
                             p.rate(mo, "slo_requests_total")), "{{model}} {{objective}}",
                      "ratio"),
               Target(target, "{{model}} target", "ratio")),
              "The share of judged requests meeting each objective (all: every objective "
              "that applies); a failed request misses them all. Against each model's "
              "target."),
        Panel("Goodput: requests meeting every objective per second by model", "reqps",
              (_rates(p, "slo_requests_total", _M, legend="good", objective="all",
                      outcome="met"),
               Target(judged, "{{model}} judged", "rate")),
              "Good requests per second beside all judged requests per second."),
        Panel("Goodput tokens per second by model (trailing minute)", "suffix: tokens/s",
              (Target(p.gauge("sum", _M, "goodput_tokens_per_second"), "{{model}}",
                      "nonnegative"),),
              "Output tokens of the requests meeting every objective, over the trailing "
              "minute as each process computes it; summed over instances."),
        Panel("Error budget burn rate by model (missed share / (1 - target))", "none",
              (Target(_ratio(_ratio(missed, judged), f"(1 - {target})"), "{{model}}",
                      "nonnegative"),),
              "1: the error budget is spent exactly as fast as the target allows; above 1 "
              "it runs out before the period ends (14.4 over an hour spends 2 % of a "
              "30-day budget)."),
        Panel("Share of requests within each objective's chosen threshold by model "
              "(exact bucket / count)", "percentunit",
              tuple(Target(p.exact_bucket_share(_M, family, variable),
                           f"{{{{model}}}} {objective} <= ${variable}", "ratio")
                    for objective, (variable, family, _) in SLO_BUCKETS.items()),
              "Pick each objective's threshold in the ttft_threshold, tpot_threshold and "
              "e2e_threshold variables: every SLO threshold is a bucket boundary, so the "
              "bucket counts exactly the requests at or under it (failed ones included, "
              "unlike the attainment above)."),
        Panel("SLO thresholds by model and objective", "s",
              (Target(p.gauge("max", mo, "slo_objective_seconds"), "{{model}} {{objective}}",
                      "positive"),),
              "As configured (--slo, $TINYLLM_SLO, the gateway's config).", kind="stat"),
    ))
    server = Row("Inference server", (
        Panel("Batches per second by model", "ops",
              (_rates(p, "batches_processed_total", _M),)),
        Panel("Batch size p50 / p95 by model", "short",
              _quantiles(p, "batch_size", _M, (0.5, 0.95))),
        Panel("KV-cache hit ratio by model (mean of instances)", "percentunit",
              (Target(p.gauge("avg", _M, "kv_cache_hit_ratio"), "{{model}}", "ratio"),)),
    ))
    prio = ("priority",)
    queue = Row("Queue", (
        Panel("Requests waiting in the queue by priority", "short",
              (Target(p.gauge("sum", prio, "queue_size"), "{{priority}}", "nonnegative"),),
              "Summed over instances."),
        Panel("Queue workers busy (sum of instances)", "short",
              (Target(p.gauge("sum", (), "queue_active_workers"), "busy", "nonnegative"),)),
        Panel("Queue requests accepted and rejected per second by priority", "reqps",
              (_rates(p, "queue_requests_total", prio, legend="accepted"),
               _rates(p, "queue_requests_rejected_total", prio, legend="rejected (full)"))),
        Panel("Queue wait p50 / p95 by priority", "s",
              _quantiles(p, "queue_wait_time_seconds", prio, (0.5, 0.95))),
    ))
    ct = ("cache_type",)
    hits, misses = p.rate(ct, "cache_hits_total"), p.rate(ct, "cache_misses_total")
    cache = Row("Cache", (
        Panel("Cache hit ratio by cache type (hits / (hits + misses))", "percentunit",
              (Target(f"{hits}\n  / ({hits}\n     + {misses})", "{{cache_type}}", "ratio"),)),
        Panel("Cache hits and misses per second by cache type", "ops",
              (_rates(p, "cache_hits_total", ct, legend="hits"),
               _rates(p, "cache_misses_total", ct, legend="misses"))),
        Panel("Cache errors per second by cache type and operation", "ops",
              (_rates(p, "cache_errors_total", ("cache_type", "operation")),),
              "The request went on uncached."),
    ))
    breakers = Row("Circuit breakers", (
        Panel("Circuit breaker state by model (0 closed, 1 half-open, 2 open)", "none",
              (Target(p.gauge("max", _M, "circuit_breaker_state"), "{{model}}", "nonnegative"),),
              "The worst state of any instance.", kind="stat", width=8, mappings=_BREAKER),
        Panel("Circuit breaker failures per second by model", "ops",
              (_rates(p, "circuit_breaker_failures_total", _M),), width=8),
        Panel("Circuit breaker transitions per second by model, from state and to state", "ops",
              (_rates(p, "circuit_breaker_transitions_total", ("model", "from_state",
                                                              "to_state")),), width=8),
    ))
    graph = Row("Graphs and nodes", (
        Panel("Graph executions per second by graph and status", "ops",
              (_rates(p, "graph_executions_total", ("graph", "status")),)),
        Panel("Graph execution time p50 / p95 by graph", "s",
              _quantiles(p, "graph_execution_duration_seconds", ("graph",), (0.5, 0.95))),
        Panel("Node executions per second by graph and node", "ops",
              (_rates(p, "node_executions_total", ("graph", "node")),)),
        Panel("Node execution time p95 by graph and node", "s",
              _quantiles(p, "node_execution_duration_seconds", ("graph", "node"), (0.95,))),
        Panel("Node errors per second by graph, node and error type", "ops",
              (_rates(p, "node_errors_total", ("graph", "node", "error_type")),)),
        Panel("Graph memory operations per second by operation type", "ops",
              (_rates(p, "memory_operations_total", ("operation_type",)),)),
    ))
    gpu_by = ("model", "gpu_id")
    gpu = Row("GPU", (
        Panel("GPU memory used and reserved by model and GPU id", "bytes",
              (Target(p.gauge("max", gpu_by, "gpu_memory_used_bytes"),
                      _legend(gpu_by, "used"), "positive"),
               Target(p.gauge("max", gpu_by, "gpu_memory_reserved_bytes"),
                      _legend(gpu_by, "reserved"), "positive")),
              'model="all": the whole device, from the NVML sampler of `tinyllm metrics`.',
              width=8),
        Panel("GPU utilization by model and GPU id", "percent",
              (Target(p.gauge("max", gpu_by, "gpu_utilization_percent"), _legend(gpu_by),
                      "nonnegative"),), width=8),
        Panel("GPU memory used / reserved by model and GPU id", "percentunit",
              (Target(p.gauge("max", gpu_by, "memory_efficiency_ratio"), _legend(gpu_by),
                      "ratio"),),
              "The GPUMemoryPressure alert fires under 50 % for 5 minutes.", width=8),
    ))
    route = ("route",)
    gateway = Row("Gateway (tinyllm serve)", (
        Panel("Gateway responses per second by route and status", "reqps",
              (_rates(p, "gateway_requests_total", ("route", "status")),),
              "Every answer on the model APIs, rejections included."),
        Panel("Share of gateway responses with status 4xx or 5xx by route", "percentunit",
              (Target(_ratio(p.rate(route, "gateway_requests_total", status="4..|5.."),
                             p.rate(route, "gateway_requests_total")), "{{route}}", "ratio"),)),
        Panel("Gateway overhead p50 / p99 by route", "s",
              _quantiles(p, "gateway_overhead_seconds", route, (0.5, 0.99)),
              "The gateway's own time: its whole time minus the wait on the upstream."),
        Panel("Accepted calls per second by key", "reqps",
              (_rates(p, "gateway_key_requests_total", ("key",)),), "By key alias."),
        Panel("Tokens per second by key and direction", "suffix: tokens/s",
              (_rates(p, "gateway_key_tokens_total", ("key", "direction")),)),
        Panel("Rejected calls per second by key and reason", "reqps",
              (_rates(p, "gateway_key_rejections_total", ("key", "reason")),),
              'key="none": no key or an unknown one.'),
        Panel("Shared-limit Redis errors per second (sum of instances)", "ops",
              (_rates(p, "gateway_limit_backend_errors_total", ()),),
              "While Redis fails, each instance enforces the keys' limits on its own."),
    ))
    pipeline = Row("Observability pipeline", (
        Panel("Events per second by category and severity", "ops",
              (_rates(p, "events_total", ("category", "severity")),), width=8),
        Panel("Event handler errors per second by handler", "ops",
              (_rates(p, "event_handler_errors_total", ("handler",)),), width=8),
        Panel("Log records dropped per second by reason", "ops",
              (_rates(p, "log_records_dropped_total", ("reason",)),),
              "Left out by sampling (sampled, rate_limited).", width=8),
        Panel("Telemetry export failures per second by exporter and signal", "ops",
              (_rates(p, "telemetry_export_failures_total", ("exporter", "signal")),),
              "Span or metric batches that never reached the collector.", width=8),
        Panel("Store events dropped per second by reason", "ops",
              (_rates(p, "store_events_dropped_total", ("reason",)),),
              "Performance events the store could not keep.", width=8),
        Panel("HTTP clients gone before their answer per second by transport", "ops",
              (_rates(p, "http_disconnects_total", ("transport",)),), width=8),
    ))
    info_by = ("instance", "version", "python_version", "platform")
    build = Row("Build", (
        Panel("tinyllm version, python version and platform by instance", "none",
              (Target(p.gauge("max", info_by, "system_info"), "", "positive"),),
              kind="table", width=24),
    ))
    return (traffic, errors, latency, tokens, cost, slo, server, queue, cache, breakers,
            graph, gpu, gateway, pipeline, build)


def overview_dashboard(namespace: str = "tinyllm") -> Dashboard:
    """The Prometheus dashboard for metrics named ``namespace_*``."""
    model_values = f'label_values({{__name__=~"{namespace}_.+"}}, model)'
    return Dashboard(
        uid=f"{namespace}-overview", title=f"{namespace} overview",
        description="Traffic, errors, latency, tokens, cost, SLOs and goodput, queue, cache, "
        "breakers, GPU, the gateway and the observability pipeline (generated by "
        "tinyllm.grafana).",
        datasource="prometheus",
        variables=(Variable("datasource", "Prometheus", "datasource", "prometheus"),
                   Variable("model", "Model", "query", model_values, multi=True),
                   *(Variable(variable, f"{objective} threshold (s)", "query",
                              f'label_values({namespace}_{family}_bucket{{{_MODEL_MATCHER}}}, '
                              "le)", default=default)
                     for objective, (variable, family, default) in SLO_BUCKETS.items())),
        rows=_overview_rows(_PromQL(namespace)),
    )
