"""The dashboard's history: what one sample collects, and that the page's data needs
nothing else."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.http.dashboard import SAMPLED, History
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.gpu import update_gpu_metrics
from tinyllm.metrics.window import Snapshot


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
    monkeypatch.setattr(Snapshot, "values",
                        lambda self, name, by=None: read.add(name) or values(self, name, by))
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
