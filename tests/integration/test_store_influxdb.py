"""The InfluxDB export, written to a real InfluxDB 1.x (the ``influxdb`` fixture:
Debian's influxd in a temp dir on free loopback ports) and queried back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

if TYPE_CHECKING:  # the fixture's handle type; conftest is not imported at run time
    from conftest import InfluxDB

pytestmark = pytest.mark.integration


def test_export_is_accepted_and_reads_back(influxdb: InfluxDB, tmp_path: Path) -> None:
    with MetricsDatabase(tmp_path / "m.db",
                         collector=MetricsCollector(registry=CollectorRegistry())) as db:
        for i in range(10):
            db.record_event("diffusion_generate", 1.5, model_id="dream", timestamp=1e9 + i,
                            metadata={"token_count": 2 if i < 5 else 3, "success": i >= 2})
        for i in range(5):
            db.record_event("diffusion_infill_stream", 2.0, model_id="dream",
                            timestamp=1e9 + i, metadata={"token_count": 6, "error": i == 0})
        db.record_event("diffusion_generate", 0.5, model_id="dream", timestamp=1e9,
                        metadata={"endpoint": "odd, name=x y"})
        db.flush()
        stamp = 1_234_567_890_000_000_000
        body = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=stamp)
    influxdb.create_database("store_test")
    influxdb.write("store_test", body)

    series = influxdb.query("store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='requests' GROUP BY endpoint")
    got = {s["tags"]["endpoint"]: s["values"][0] for s in series}
    assert got == {"generate": [stamp, 10.0], "infill/stream": [stamp, 5.0],
                   "odd, name=x y": [stamp, 1.0]}
    series = influxdb.query("store_test",
                    "SELECT value FROM diffusion_llm WHERE \"type\"='latency' GROUP BY event_type")
    latency = {s["tags"]["event_type"]: s["values"][0][1] for s in series}
    assert latency == {"diffusion_generate": pytest.approx(15.5 / 11),
                       "diffusion_infill_stream": 2.0}
    series = influxdb.query("store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='tokens' GROUP BY event_type")
    assert {s["tags"]["event_type"]: s["values"][0][1] for s in series} == {
        "diffusion_generate": 25.0, "diffusion_infill_stream": 30.0}
    series = influxdb.query("store_test",
                    "SELECT p50, p99 FROM diffusion_llm WHERE \"type\"='latency_quantiles' "
                    "GROUP BY event_type")
    assert {s["tags"]["event_type"]: s["values"][0][1] for s in series}[
        "diffusion_infill_stream"] == pytest.approx(2.0, rel=0.045)
    series = influxdb.query("store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='errors' GROUP BY endpoint")
    assert {s["tags"]["endpoint"]: s["values"][0][1] for s in series}["infill/stream"] == 1.0


def test_cost_by_model_reads_back_as_the_hand_sum(influxdb: InfluxDB, tmp_path: Path) -> None:
    costs = {"gpt-4o": [0.0123, 0.0456, 1e-7, 0.3], "local": [0.0, 0.0],
             "odd model, x=1": [2.5e-6, 1e-9]}
    with MetricsDatabase(tmp_path / "m.db",
                         collector=MetricsCollector(registry=CollectorRegistry())) as db:
        for model, spent in costs.items():
            for i, cost in enumerate(spent):  # across two hours: two roll-up buckets
                db.record_event("llm_chat", 0.5, model_id=model, timestamp=1e9 + 3000 * i,
                                metadata={"cost_usd": cost, "slo_met": i % 2 == 0})
        for _ in range(3):
            db.record_event("llm_chat", 0.5, model_id="mystery", timestamp=1e9)
        db.flush()
        stamp = 1_234_567_890_000_000_000
        body = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=stamp)
    influxdb.create_database("store_cost")
    influxdb.write("store_cost", body)
    series = influxdb.query("store_cost",
                            "SELECT cost_usd, unpriced_requests, requests, slo_requests, slo_met "
                            "FROM diffusion_llm WHERE \"type\"='cost' GROUP BY model_id")
    got = {s["tags"]["model_id"]: dict(zip(s["columns"], s["values"][0], strict=True))
           for s in series}
    assert sorted(got) == sorted([*costs, "mystery"])
    for model, spent in costs.items():
        assert got[model]["cost_usd"] == pytest.approx(sum(spent), abs=1e-9), model
        assert (got[model]["unpriced_requests"], got[model]["requests"]) == (0, len(spent))
        assert (got[model]["slo_requests"], got[model]["slo_met"]) == (len(spent),
                                                                       (len(spent) + 1) // 2)
    assert got["mystery"]["cost_usd"] == 0.0 and got["mystery"]["unpriced_requests"] == 3
    assert got["mystery"]["slo_requests"] is None  # no request judged: no field
    total = influxdb.query("store_cost", "SELECT sum(cost_usd) FROM diffusion_llm "
                           "WHERE \"type\"='cost'")
    assert total[0]["values"][0][1] == pytest.approx(
        sum(sum(v) for v in costs.values()), abs=1e-9)
    fields = influxdb.query("store_cost", "SHOW FIELD KEYS FROM diffusion_llm")
    assert dict(fields[0]["values"])["cost_usd"] == "float"
