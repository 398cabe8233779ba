"""Figures over a window between two snapshots: rates, quantiles of the window's own
observations (not the whole history), resets, per model."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.window import FAMILIES, Snapshot, window


@pytest.fixture
def setup() -> tuple[CollectorRegistry, MetricsCollector, RequestLifecycle]:
    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    return registry, collector, RequestLifecycle(collector)


def test_rates_and_quantiles_cover_only_the_window(
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    registry, collector, _lc = setup
    for _ in range(50):  # before the window: slow requests that must not count
        with collector.track_request_latency("m", "g"):
            pass
        collector.increment_request_count("m", "g")
    collector._child("request_latency_seconds", ("m", "g")).observe(20.0)
    before = Snapshot.from_registry(registry, t=10.0)
    for i in range(10):
        collector.increment_request_count("m", "g")
        collector._child("request_latency_seconds", ("m", "g")).observe(0.3)
        if i < 2:
            collector.increment_error_count("timeout", "m", "g")
    after = Snapshot.from_registry(registry, t=15.0)
    figures = window(before, after)
    totals = figures["totals"]
    assert figures["seconds"] == 5.0
    assert totals["requests"] == 10 and totals["requests_per_s"] == 2.0
    assert totals["error_rate"] == 0.2
    assert totals["errors_per_s_by_type"] == {"timeout": 0.4}
    # All ten fell in (0.25, 0.5]: Prometheus interpolates within that bucket.
    assert totals["latency_seconds"]["p50"] == pytest.approx(0.375)
    assert totals["latency_seconds"]["p99"] == pytest.approx(0.4975)
    model = figures["models"]["m"]
    assert model["requests_per_s"] == 2.0 and model["error_pct"] == 20.0


def test_a_reset_counter_counts_its_new_value() -> None:
    before = Snapshot.from_text(
        '# TYPE tinyllm_requests_total counter\n'
        'tinyllm_requests_total{model="m",graph="g",request_type="x"} 100\n', t=0.0)
    after = Snapshot.from_text(
        '# TYPE tinyllm_requests_total counter\n'
        'tinyllm_requests_total{model="m",graph="g",request_type="x"} 4\n', t=2.0)
    assert window(before, after)["totals"]["requests_per_s"] == 2.0


def test_no_traffic_and_no_previous_snapshot_are_empty_not_errors(
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    registry, _, lc = setup
    first = window(None, Snapshot.from_registry(registry, t=1.0))
    assert first["totals"]["requests_per_s"] is None and first["models"] == {}
    assert first["totals"]["latency_seconds"] == {"p50": None, "p95": None, "p99": None}
    with lc.start("m", request_type="stream") as req:
        req.token(5)
    later = window(Snapshot.from_registry(registry, t=1.0), Snapshot.from_registry(
        registry, t=1.0))
    assert later["totals"]["requests_per_s"] is None  # a zero-length window has no rate


def test_per_model_rows_with_breakers_and_tokens(
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    registry, collector, lc = setup
    before = Snapshot.from_registry(registry, t=0.0)
    for model in ("a", "b"):
        with lc.start(model, request_type="stream") as req:
            req.token(1)
            req.token(4)
    collector.update_circuit_breaker_state("open", "b")
    figures = window(before, Snapshot.from_registry(registry, t=1.0))
    assert set(figures["models"]) == {"a", "b"}
    assert figures["models"]["a"]["tokens_out_per_s"] == 5.0
    assert figures["models"]["b"]["breaker"] == "open"
    assert figures["models"]["a"]["breaker"] is None
    assert figures["totals"]["tokens_per_s"]["output"] == 10.0
    assert figures["totals"]["ttft_seconds"]["p95"] is not None


def _names_read(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every family name a Snapshot is asked for from now on."""
    read: set[str] = set()
    values, buckets = Snapshot.values, Snapshot.buckets

    def track_values(self: Snapshot, name: str, by: str | None = None) -> dict[str, float]:
        read.add(name)
        return values(self, name, by)

    def track_buckets(self: Snapshot, name: str,
                      by: str | None = None) -> dict[str, dict[float, float]]:
        read.add(name)
        return buckets(self, name, by)

    monkeypatch.setattr(Snapshot, "values", track_values)
    monkeypatch.setattr(Snapshot, "buckets", track_buckets)
    return read


def test_window_reads_only_the_families_a_restricted_snapshot_keeps(
    monkeypatch: pytest.MonkeyPatch,
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    registry, collector, lc = setup
    full_before = Snapshot.from_registry(registry, t=0.0)
    kept_before = Snapshot.from_registry(registry, t=0.0, families=FAMILIES)
    for _ in range(5):
        with lc.start("m", request_type="stream") as req:
            req.usage(input_tokens=3)
            req.token()
            req.token()
    with pytest.raises(TimeoutError), lc.start("m", request_type="stream"):
        raise TimeoutError("slow")
    collector.increment_cache_hit("memory")
    collector.update_circuit_breaker_state("open", "m")
    full_after = Snapshot.from_registry(registry, t=2.0)
    kept_after = Snapshot.from_registry(registry, t=2.0, families=FAMILIES)

    read = _names_read(monkeypatch)
    assert window(kept_before, kept_after) == window(full_before, full_after)
    assert read and read <= set(FAMILIES)
    # ...and the restriction does drop what window() does not read.
    assert len(kept_after.samples.samples) < len(full_after.samples.samples)


def test_a_snapshot_from_the_registry_equals_one_from_its_text(
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    from prometheus_client import generate_latest

    registry, collector, lc = setup
    with lc.start("m", request_type="chat") as req:
        req.usage(input_tokens=3, output_tokens=2)
    collector.update_circuit_breaker_state("half_open", "m")
    direct = Snapshot.from_registry(registry, t=1.0).samples.samples
    parsed = Snapshot.from_text(generate_latest(registry).decode(), t=1.0).samples.samples

    def canonical(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, Any]:
        return {k: sorted((sorted(labels.items()), v) for labels, v in rows)
                for k, rows in samples.items()}

    assert canonical(direct) == canonical(parsed)
