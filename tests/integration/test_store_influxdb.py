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
