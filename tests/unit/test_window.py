"""Figures over a window between two snapshots: rates, quantiles of the window's own
observations (not the whole history), resets, per model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.window import FAMILIES, Snapshot, window
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig


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

    def track_values(self: Snapshot, name: str, by: str | None = None,
                     where: Mapping[str, str] | None = None) -> dict[str, float]:
        read.add(name)
        return values(self, name, by, where)

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
    with lc.start("unpriced-model", request_type="chat"):
        pass
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


@pytest.fixture
def accounted() -> Iterator[tuple[CollectorRegistry, RequestLifecycle]]:
    """``m`` priced at 100 USD per million input and 200 per million output tokens,
    other models unpriced; TTFT <= 0.5 s and e2e <= 5 s, target 99 %."""
    configure_prices(PriceTable({"m": ModelPrice(input=100.0, output=200.0)}))
    configure_slo(SLOConfig(Objectives(ttft=0.5, e2e=5.0, target=0.99)))
    registry = CollectorRegistry()
    yield registry, RequestLifecycle(MetricsCollector(registry=registry))
    configure_prices(None)
    configure_slo(None)


def test_spend_rate_and_goodput_over_the_window(
    accounted: tuple[CollectorRegistry, RequestLifecycle],
) -> None:
    registry, lc = accounted
    with lc.start("m", request_type="chat") as req:  # before the window: not counted
        req.usage(input_tokens=10_000, output_tokens=10_000)
    before = Snapshot.from_registry(registry, t=0.0)
    for _ in range(4):  # each 1000 in + 500 out: 0.1 + 0.1 = 0.2 USD
        with lc.start("m", request_type="stream") as req:
            req.token(2)
            req.usage(input_tokens=1000, output_tokens=500)
    with pytest.raises(TimeoutError), lc.start("m"):  # misses every objective
        raise TimeoutError
    with lc.start("other", request_type="stream") as req:
        req.token(2)
    figures = window(before, Snapshot.from_registry(registry, t=4.0))
    m, other, totals = figures["models"]["m"], figures["models"]["other"], figures["totals"]
    assert m["cost_usd"] == pytest.approx(0.8)
    assert m["cost_usd_per_s"] == pytest.approx(0.2)  # 720 USD an hour
    assert m["unpriced"] is False and m["unpriced_requests"] == 0
    # Goodput: the counter's rate over the window, beside every judged request.
    assert (m["good_requests"], m["judged_requests"]) == (4.0, 5.0)
    assert (m["good_per_s"], m["judged_per_s"]) == (1.0, 1.25)
    assert m["good_share"] == pytest.approx(0.8) and m["slo_target"] == 0.99
    # A model with no price: its cost is unknown (None), never 0.
    assert other["cost_usd"] is None and other["cost_usd_per_s"] is None
    assert other["unpriced"] is True and other["unpriced_requests"] == 1.0
    assert other["good_per_s"] == 0.25 and other["good_share"] == 1.0
    assert totals["cost_usd_per_s"] == pytest.approx(0.2)
    assert totals["cost_usd_per_s_by_model"] == {"m": pytest.approx(0.2)}
    assert totals["unpriced"] is False and totals["unpriced_requests"] == 1.0
    assert (totals["good_per_s"], totals["judged_per_s"]) == (1.25, 1.5)
    assert totals["slo_target"] == 0.99

    idle = window(Snapshot.from_registry(registry, t=4.0),
                  Snapshot.from_registry(registry, t=6.0))
    assert idle["models"]["m"]["cost_usd_per_s"] == 0.0
    assert idle["models"]["other"]["cost_usd_per_s"] is None  # still unpriced, not free
    assert idle["models"]["m"]["good_per_s"] == 0.0
    assert idle["models"]["m"]["good_share"] is None  # nothing judged: no share

    # A model counted only through the collector's primitives has no cost series: no
    # spend figure at all, rather than a spend of 0.
    collector = lc.collector
    collector.increment_request_count(model="embedder", graph="g", request_type="embed")
    later = window(Snapshot.from_registry(registry, t=6.0),
                   Snapshot.from_registry(registry, t=7.0))
    assert later["models"]["embedder"]["cost_usd"] is None
    assert later["models"]["embedder"]["unpriced"] is False


def test_without_an_slo_goodput_is_none_and_the_first_window_has_no_rates(
    setup: tuple[CollectorRegistry, MetricsCollector, RequestLifecycle],
) -> None:
    registry, _, lc = setup
    with lc.start("m", request_type="chat"):
        pass
    first = window(None, Snapshot.from_registry(registry, t=1.0))
    assert first["totals"]["cost_usd_per_s"] is None
    row = first["models"]["m"]
    assert row["good_per_s"] is None and row["good_share"] is None
    assert row["slo_target"] is None
