"""The summariser behind `tinyllm stats`."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector, update_gpu_metrics
from tinyllm.metrics.stats import histogram_quantile, summarize


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 10 / 20)
    assert histogram_quantile(1.0, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0


def test_summary_of_a_workload() -> None:
    reg = CollectorRegistry()
    c = MetricsCollector(registry=reg, namespace="ryot")
    lc = RequestLifecycle(c)
    for _i in range(4):
        with lc.start("m") as req:
            req.token(5)
            req.usage(input_tokens=3)
    try:
        with lc.start("m"):
            raise TimeoutError
    except TimeoutError:
        pass
    c.increment_cache_hit()
    c.increment_cache_miss()
    c.update_circuit_breaker_state("open", model="m")
    update_gpu_metrics("m", 0, 1.0, 2.0, 50, collector=c)
    s = summarize(generate_latest(reg).decode(), namespace="ryot")
    assert s["requests"]["total"] == 5
    assert s["requests"]["errors"] == 1
    assert s["requests"]["error_rate"] == pytest.approx(0.2)
    assert s["tokens"] == {"input": 12.0, "output": 20.0,
                           "per_second_by_model": s["tokens"]["per_second_by_model"]}
    assert s["cache"]["hit_rate"] == 0.5
    assert s["circuit_breakers"] == {"m": "open"}
    assert s["errors_by_type"] == {"timeout": 1.0}
    assert s["gpus"] == [{"model": "m", "gpu_id": "0", "used_bytes": 1.0,
                          "reserved_bytes": 2.0, "utilization_percent": 50.0}]
    assert s["latency_seconds"]["p95"] is not None
    assert s["ttft_seconds"]["p50"] is not None


def test_summary_of_another_namespace_is_empty() -> None:
    reg = CollectorRegistry()
    MetricsCollector(registry=reg).increment_request_count()
    assert summarize(generate_latest(reg).decode(), namespace="ryot")["requests"]["total"] == 0
