"""The dashboard's history: what one sample collects, and that the page's data needs
nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.http.dashboard import SAMPLED, History
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.gpu import update_gpu_metrics
from tinyllm.metrics.window import Snapshot
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig


def test_a_sample_collects_only_what_the_page_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    lc = RequestLifecycle(collector)
    history = History(lambda: registry, interval=1.0, window_seconds=10.0)
    history.sample(t=0.0)
    for _ in range(4):
        with lc.start("m", request_type="stream") as req:
            req.usage(input_tokens=3)
            req.token()
    collector.increment_cache_miss("memory")
    collector.update_circuit_breaker_state("open", "m")
    for drop in (lambda: collector.increment_log_records_dropped("sampled"),
                 lambda: collector.increment_store_events_dropped("queue_full"),
                 lambda: collector.increment_http_disconnects("asgi"),
                 lambda: collector.increment_event_handler_errors("h"),
                 lambda: collector.increment_telemetry_export_failures("otlp"),
                 collector.increment_gateway_limit_backend_errors):
        drop()
    update_gpu_metrics("m", 0, 2**30, 2**34, 40.0, collector=collector)

    read: set[str] = set()
    values, buckets = Snapshot.values, Snapshot.buckets
    monkeypatch.setattr(Snapshot, "values", lambda self, name, by=None, where=None: read.add(
        name) or values(self, name, by, where))
    monkeypatch.setattr(Snapshot, "buckets",
                        lambda self, name, by=None: read.add(name) or buckets(self, name, by))
    history.sample(t=1.0)
    data = history.data()

    assert read <= set(SAMPLED), sorted(read - set(SAMPLED))
    assert data["totals"]["requests"] == 4.0
    assert data["series"]["requests_per_s"] == [4.0]
    assert data["models"][0]["breaker"] == "open"
    assert set(data["drops"]) == {
        "log_records_dropped", "store_events_dropped", "http_disconnects",
        "event_handler_errors", "telemetry_export_failures", "gateway_limit_backend_errors"}
    assert data["gpu"]["gpus"] == [{"gpu_id": "0", "used_bytes": 2**30,
                                    "utilization_percent": 40.0}]


@pytest.fixture
def accounting() -> Iterator[None]:
    """``m`` priced (100 USD per million input, 200 per million output tokens), other
    models unpriced; every model held to e2e <= 5 s with a 90 % target."""
    configure_prices(PriceTable({"m": ModelPrice(input=100.0, output=200.0)}))
    configure_slo(SLOConfig(Objectives(e2e=5.0, target=0.9)))
    yield
    configure_prices(None)
    configure_slo(None)


def test_spend_and_goodput_in_the_data(accounting: None) -> None:
    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    lc = RequestLifecycle(collector)
    history = History(lambda: registry, interval=1.0, window_seconds=10.0)
    history.sample(t=0.0)
    for _ in range(3):  # 0.1 + 0.1 USD each
        with lc.start("m", request_type="chat") as req:
            req.usage(input_tokens=1000, output_tokens=500)
    with pytest.raises(TimeoutError), lc.start("m", request_type="chat"):
        raise TimeoutError
    with lc.start("free-of-price", request_type="chat"):
        pass
    collector.increment_request_count(model="counted-only")  # not through the lifecycle
    history.sample(t=2.0)
    data = history.data()

    series = data["series"]
    assert series["cost_usd_per_h"] == [pytest.approx(0.6 / 2 * 3600)]
    assert series["cost_usd_per_h_by_model"] == {"m": [pytest.approx(0.6 / 2 * 3600)]}
    assert (series["good_per_s"], series["judged_per_s"]) == ([2.0], [2.5])
    assert series["slo_attainment"] == [pytest.approx(0.8)] and series["slo_target"] == [0.9]
    assert data["totals"] == {"requests": 6.0, "errors": 1.0, "error_rate": 1 / 6}
    assert data["cost"]["total_usd"] == pytest.approx(0.6)
    assert data["cost"]["unpriced_requests"] == 1.0
    spend = {row["model"]: row for row in data["cost"]["models"]}
    assert set(spend) == {"m", "free-of-price"}  # "counted-only" has no cost at all
    assert spend["m"]["usd"] == pytest.approx(0.6) and spend["m"]["unpriced"] is False
    assert spend["free-of-price"] == {"model": "free-of-price", "usd": None, "unpriced": True,
                                      "unpriced_requests": 1.0, "usd_per_h": None}
    slo = {row["model"]: row for row in data["slo"]["models"]}
    assert slo["m"]["target"] == 0.9 and slo["m"]["attainment"] == pytest.approx(0.75)
    assert slo["m"]["objectives"]["e2e"] == {"threshold_seconds": 5.0, "met": 3.0,
                                             "missed": 1.0, "ratio": 0.75,
                                             "meets_target": False}
    assert slo["free-of-price"]["attainment"] == 1.0


def test_without_prices_or_slo_the_panels_are_empty() -> None:
    registry = CollectorRegistry()
    history = History(lambda: registry, interval=1.0, window_seconds=10.0)
    assert history.data()["cost"] == {"total_usd": 0.0, "unpriced_requests": 0.0,
                                      "models": [], "keys": []}
    history.sample(t=0.0)
    history.sample(t=1.0)
    data = history.data()
    assert data["slo"] == {"models": []} and data["cost"]["models"] == []
    assert data["series"]["good_per_s"] == [None]  # no SLO: no goodput, not 0
    assert data["series"]["cost_usd_per_h"] == [0.0]


def test_a_slow_read_stretches_the_samplers_wait() -> None:
    import time
    from itertools import pairwise

    registry = CollectorRegistry()
    reads: list[float] = []

    def slow_source() -> CollectorRegistry:
        reads.append(time.monotonic())
        time.sleep(0.05)  # a read of 50 ms: at a tenth of a core, one every 0.5 s
        return registry

    history = History(slow_source, interval=0.01, window_seconds=10.0).start()
    try:
        time.sleep(1.2)
    finally:
        history.stop()
    # Every 10 ms as configured would be ~20 reads; the CPU share allows about 3.
    assert 2 <= len(reads) <= 4, len(reads)
    assert all(b - a >= 0.45 for a, b in pairwise(reads))
