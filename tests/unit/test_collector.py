"""MetricsCollector: seed 000's calls, validation, errors, breaker, cardinality, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from tinyllm.metrics import MetricsCollector, get_metrics_collector


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_seed_000_python_block_runs_as_written(default_collector: MetricsCollector) -> None:
    # Verbatim from seed 000 (the pass bodies stand for request code).
    from tinyllm.metrics import get_metrics_collector

    metrics = get_metrics_collector()
    metrics.increment_request_count(model="model", graph="graph", request_type="generate")
    with metrics.track_request_latency(model="model", graph="graph"):
        pass
    metrics.record_tokens(input_tokens=100, output_tokens=50, model="model", graph="graph")
    metrics.increment_error_count(error_type="timeout", model="model", graph="graph")
    metrics.update_circuit_breaker_state(state="closed", model="model")
    metrics.increment_circuit_breaker_failures(model="model")
    with metrics.track_node_execution(node="node", graph="graph"):
        pass
    metrics.increment_node_error_count(node="node", error_type="error", graph="graph")
    with metrics.track_graph_execution(graph="graph"):
        pass
    metrics.increment_cache_hit(cache_type="memory")
    metrics.increment_cache_miss(cache_type="memory")
    with metrics.track_model_load(model="model"):
        pass
    metrics.record_rate_limit_wait(wait_time=0.1, model="model")
    metrics.increment_memory_operation(operation_type="add")

    mg = {"model": "model", "graph": "graph"}
    r = REGISTRY
    assert value(r, "tinyllm_requests_total", request_type="generate", **mg) == 1
    assert value(r, "tinyllm_request_latency_seconds_count", **mg) == 1
    assert value(r, "tinyllm_active_requests", **mg) == 0
    assert value(r, "tinyllm_tokens_input_total", **mg) == 100
    assert value(r, "tinyllm_tokens_output_total", **mg) == 50
    assert value(r, "tinyllm_errors_total", error_type="timeout", **mg) == 1
    assert value(r, "tinyllm_circuit_breaker_state", model="model") == 0
    assert value(r, "tinyllm_circuit_breaker_failures_total", model="model") == 1
    assert value(r, "tinyllm_node_executions_total", node="node", graph="graph") == 1
    ng = {"node": "node", "graph": "graph"}
    assert value(r, "tinyllm_node_execution_duration_seconds_count", **ng) == 1
    assert value(r, "tinyllm_node_errors_total", error_type="error", **ng) == 1
    assert value(r, "tinyllm_graph_executions_total", graph="graph", status="success") == 1
    assert value(r, "tinyllm_graph_execution_duration_seconds_count", graph="graph") == 1
    assert value(r, "tinyllm_cache_hits_total", cache_type="memory") == 1
    assert value(r, "tinyllm_cache_misses_total", cache_type="memory") == 1
    assert value(r, "tinyllm_model_load_duration_seconds_count", model="model") == 1
    assert value(r, "tinyllm_rate_limit_wait_seconds_sum", model="model") == pytest.approx(0.1)
    assert value(r, "tinyllm_memory_operations_total", operation_type="add") == 1


def test_package_facade_exports_the_seed_names() -> None:
    import tinyllm

    assert tinyllm.get_metrics_collector is get_metrics_collector
    assert tinyllm.MetricsCollector is MetricsCollector
    assert callable(tinyllm.start_metrics_server)


def test_singleton_is_shared(default_collector: MetricsCollector) -> None:
    assert get_metrics_collector() is default_collector


def test_two_collectors_on_default_registry_share_families(
    default_collector: MetricsCollector,
) -> None:
    a = MetricsCollector(max_cardinality=1000)
    b = MetricsCollector(max_cardinality=5)  # no "Duplicated timeseries" error
    a.increment_cache_hit(cache_type="x")
    b.increment_cache_hit(cache_type="x")
    assert value(REGISTRY, "tinyllm_cache_hits_total", cache_type="x") == 2
    assert b.get_cardinality_stats()["max_cardinality"] == 5
    text = generate_latest().decode()
    assert text.count("# TYPE tinyllm_cache_hits_total counter") == 1


def test_system_info_carries_version_python_platform(collector: MetricsCollector) -> None:
    import platform

    from tinyllm import __version__

    labels = {
        "version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    assert value(collector.registry, "tinyllm_system_info", **labels) == 1


def test_namespace_argument_and_environment(
    monkeypatch: pytest.MonkeyPatch, registry: CollectorRegistry
) -> None:
    monkeypatch.setenv("TINYLLM_METRICS_NAMESPACE", "ryot")
    c = MetricsCollector(registry=registry)
    assert c.namespace == "ryot"
    c.record_batch(4, model="gpt4")
    assert value(registry, "ryot_batches_processed_total", model="gpt4") == 1
    assert value(registry, "ryot_batch_size_count", model="gpt4") == 1
    names = {m.name for m in registry.collect()}
    assert not any(n.startswith("tinyllm_") for n in names)


@pytest.mark.parametrize("bad", ["9lives", "has-dash", "__reserved", "a b"])
def test_invalid_namespace_is_rejected_with_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid metric prefix"):
        MetricsCollector(registry=CollectorRegistry(), namespace=bad)


def test_exception_in_request_block_is_counted_and_reraised(
    collector: MetricsCollector,
) -> None:
    boom = TimeoutError("read timed out")
    with pytest.raises(TimeoutError) as caught, collector.track_request_latency("m", "g"):
        raise boom
    assert caught.value is boom
    reg = collector.registry
    assert value(reg, "tinyllm_errors_total", error_type="timeout", model="m", graph="g") == 1
    assert value(reg, "tinyllm_request_latency_seconds_count", model="m", graph="g") == 1
    assert value(reg, "tinyllm_active_requests", model="m", graph="g") == 0


def test_active_requests_while_inside(collector: MetricsCollector) -> None:
    with collector.track_request_latency("m", "g"):
        assert value(collector.registry, "tinyllm_active_requests", model="m", graph="g") == 1


def test_node_graph_and_model_load_failures(collector: MetricsCollector) -> None:
    reg = collector.registry
    with pytest.raises(MemoryError), collector.track_node_execution("n", "g"):
        raise MemoryError
    assert value(reg, "tinyllm_node_errors_total", node="n", graph="g", error_type="oom") == 1
    assert value(reg, "tinyllm_node_executions_total", node="n", graph="g") == 1
    with pytest.raises(ValueError), collector.track_graph_execution("g"):
        raise ValueError("bad")
    assert value(reg, "tinyllm_graph_executions_total", graph="g", status="error") == 1
    with pytest.raises(RuntimeError), collector.track_model_load("m"):
        raise RuntimeError("CUDA error: device-side assert")
    assert value(reg, "tinyllm_model_load_duration_seconds_count", model="m") is None
    assert value(reg, "tinyllm_model_load_errors_total", model="m", error_type="cuda") == 1
    assert not any(s.name == "tinyllm_errors_total" for m in reg.collect() for s in m.samples)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda c: c.record_tokens(input_tokens=5, output_tokens=-1), "output_tokens"),
        (lambda c: c.record_tokens(input_tokens=float("nan")), "input_tokens"),
        (lambda c: c.record_tokens(input_tokens=1.5), "input_tokens"),
        (lambda c: c.record_rate_limit_wait(wait_time=-0.1), "wait_time"),
        (lambda c: c.record_rate_limit_wait(wait_time=float("inf")), "wait_time"),
        (lambda c: c.set_queue_size(-1), "size"),
        (lambda c: c.record_queue_wait_time(float("nan")), "wait_time"),
        (lambda c: c.set_kv_cache_hit_ratio(1.5), "ratio"),
        (lambda c: c.record_batch(-2), "batch_size"),
    ],
)
def test_bad_numbers_raise_naming_the_argument_and_change_nothing(
    collector: MetricsCollector, call, argument: str  # type: ignore[no-untyped-def]
) -> None:
    before = generate_latest(collector.registry)
    with pytest.raises(ValueError, match=argument):
        call(collector)
    assert generate_latest(collector.registry) == before


def test_non_numbers_raise_type_error(collector: MetricsCollector) -> None:
    with pytest.raises(TypeError, match="input_tokens must be a number"):
        collector.record_tokens(input_tokens="12")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wait_time"):
        collector.record_rate_limit_wait(wait_time=True)


def test_circuit_breaker_states_and_transitions(collector: MetricsCollector) -> None:
    reg = collector.registry
    for state, expected in [("closed", 0), ("open", 2), ("half-open", 1), ("closed", 0)]:
        collector.update_circuit_breaker_state(state=state, model="m")
        assert value(reg, "tinyllm_circuit_breaker_state", model="m") == expected
    collector.update_circuit_breaker_state(state="closed", model="m")  # no transition
    t = "tinyllm_circuit_breaker_transitions_total"
    assert value(reg, t, model="m", from_state="closed", to_state="open") == 1
    assert value(reg, t, model="m", from_state="open", to_state="half-open") == 1
    assert value(reg, t, model="m", from_state="half-open", to_state="closed") == 1
    assert value(reg, t, model="m", from_state="closed", to_state="closed") is None


def test_unknown_breaker_state_lists_the_valid_ones(collector: MetricsCollector) -> None:
    with pytest.raises(ValueError, match="valid: closed, half-open, open"):
        collector.update_circuit_breaker_state(state="ajar", model="m")
    assert value(collector.registry, "tinyllm_circuit_breaker_state", model="m") is None


def test_cardinality_guard_folds_into_other_and_keeps_every_increment(
    registry: CollectorRegistry,
) -> None:
    c = MetricsCollector(max_cardinality=3, registry=registry)
    for i in range(10):
        c.increment_cache_hit(cache_type=f"t{i}")
        c.increment_cache_hit(cache_type=f"t{i}")
    series = {
        s.labels["cache_type"]: s.value
        for m in registry.collect()
        if m.name == "tinyllm_cache_hits"
        for s in m.samples
        if s.name == "tinyllm_cache_hits_total"
    }
    assert series == {"t0": 2, "t1": 2, "t2": 2, "other": 14}
    stats = c.get_cardinality_stats()
    assert stats["metrics"]["cache_hits_total"] == {"cardinality": 4, "dropped": 14}
    assert stats["max_cardinality"] == 3
    assert stats["total_combinations"] == sum(
        m["cardinality"] for m in stats["metrics"].values()
    )


def test_cardinality_stats_shape_matches_seed_003(collector: MetricsCollector) -> None:
    collector.increment_request_count("a", "g", "generate")
    collector.increment_request_count("b", "g", "generate")
    collector.increment_error_count("timeout", "a", "g")
    stats = collector.get_cardinality_stats()
    assert set(stats) == {"total_combinations", "max_cardinality", "metrics"}
    assert stats["metrics"]["requests_total"] == {"cardinality": 2, "dropped": 0}
    assert stats["metrics"]["errors_total"] == {"cardinality": 1, "dropped": 0}
    assert stats["max_cardinality"] == 1000


@pytest.mark.parametrize("bad", [0, -5])
def test_max_cardinality_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="max_cardinality"):
        MetricsCollector(max_cardinality=bad, registry=CollectorRegistry())


def test_totals_are_exact_under_threads(collector: MetricsCollector) -> None:
    threads, per_thread = 8, 5000

    def work() -> None:
        for i in range(per_thread):
            collector.increment_request_count(f"m{i % 3}", "g", "generate")
            with collector.track_request_latency(f"m{i % 3}", "g"):
                pass

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    reg = collector.registry
    total = sum(
        value(reg, "tinyllm_requests_total", model=f"m{k}", graph="g", request_type="generate")
        or 0
        for k in range(3)
    )
    assert total == threads * per_thread
    assert sum(
        value(reg, "tinyllm_active_requests", model=f"m{k}", graph="g") or 0 for k in range(3)
    ) == 0


def test_totals_are_exact_under_asyncio_tasks(collector: MetricsCollector) -> None:
    async def one(i: int) -> None:
        with collector.track_request_latency("m", "g"):
            await asyncio.sleep(0)
            collector.record_tokens(1, 2, "m", "g")

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(500)))

    asyncio.run(main())
    reg = collector.registry
    assert value(reg, "tinyllm_request_latency_seconds_count", model="m", graph="g") == 500
    assert value(reg, "tinyllm_tokens_output_total", model="m", graph="g") == 1000
    assert value(reg, "tinyllm_active_requests", model="m", graph="g") == 0


def test_queue_and_inference_extras(collector: MetricsCollector) -> None:
    reg = collector.registry
    collector.set_queue_size(3, priority="high")
    collector.record_queue_wait_time(0.2, priority="high")
    collector.increment_queue_requests(priority="high")
    collector.increment_queue_rejections(priority="high")
    collector.set_queue_active_workers(2)
    collector.set_kv_cache_hit_ratio(0.75, model="m")
    collector.increment_retry_count(model="m")
    assert value(reg, "tinyllm_queue_size", priority="high") == 3
    assert value(reg, "tinyllm_queue_wait_time_seconds_count", priority="high") == 1
    assert value(reg, "tinyllm_queue_requests_total", priority="high") == 1
    assert value(reg, "tinyllm_queue_requests_rejected_total", priority="high") == 1
    assert value(reg, "tinyllm_queue_active_workers") == 2
    assert value(reg, "tinyllm_kv_cache_hit_ratio", model="m") == 0.75
    assert value(reg, "tinyllm_inference_retries_total", model="m") == 1


def test_seed_002_make_asgi_app_mount_shows_the_families(
    default_collector: MetricsCollector,
) -> None:
    from prometheus_client import make_asgi_app

    default_collector.increment_request_count(model="gpt4")
    app = make_asgi_app()
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": []}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b'tinyllm_requests_total{graph="default",model="gpt4",request_type="generate"} 1.0' \
        in body


def test_pipeline_health_counters(collector: MetricsCollector) -> None:
    reg = collector.registry
    collector.increment_events("model", "error")
    collector.increment_event_handler_errors("SlackHandler")
    collector.increment_log_records_dropped("sampled", 3)
    collector.increment_telemetry_export_failures("otlp", "traces")
    collector.increment_store_events_dropped("queue_full", 2)
    assert value(reg, "tinyllm_store_events_dropped_total", reason="queue_full") == 2
    assert value(reg, "tinyllm_events_total", category="model", severity="error") == 1
    assert value(reg, "tinyllm_event_handler_errors_total", handler="SlackHandler") == 1
    assert value(reg, "tinyllm_log_records_dropped_total", reason="sampled") == 3
    assert value(reg, "tinyllm_telemetry_export_failures_total", exporter="otlp",
                 signal="traces") == 1
    with pytest.raises(ValueError, match="count"):
        collector.increment_log_records_dropped("sampled", -1)


def test_record_model_load_observes_a_load_timed_elsewhere(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    collector.record_model_load(1.5, model="llama3")
    assert registry.get_sample_value("tinyllm_model_load_duration_seconds_sum",
                                     {"model": "llama3"}) == 1.5
    with pytest.raises(ValueError, match="duration must be a finite number >= 0"):
        collector.record_model_load(-1, model="llama3")


def test_gateway_key_spend_and_budget_left(collector: MetricsCollector) -> None:
    reg = collector.registry
    collector.record_gateway_key_cost("team-a", 0.25)
    collector.record_gateway_key_cost("team-a", 0.0)  # a free model: the series shows 0
    collector.set_gateway_key_budget_remaining("team-a", 9.75)
    assert value(reg, "tinyllm_gateway_key_cost_usd_total", key="team-a") == 0.25
    assert value(reg, "tinyllm_gateway_key_budget_remaining_usd", key="team-a") == 9.75
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="usd must be a finite number >= 0"):
            collector.record_gateway_key_cost("team-a", bad)
    assert value(reg, "tinyllm_gateway_key_cost_usd_total", key="team-a") == 0.25
