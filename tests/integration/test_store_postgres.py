"""The store's API suite over both backends (SQLite and a real PostgreSQL), and several
processes writing one store at once without losing an event.

PostgreSQL comes from scripts/ensure-services.sh (127.0.0.1:5432, user postgres); each
test gets a fresh database, dropped after it. A missing server is a failure, not a skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

pytestmark = pytest.mark.integration

@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "metrics.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def open_db(target: str) -> Iterator[Callable[..., MetricsDatabase]]:
    opened: list[MetricsDatabase] = []

    def make(**kwargs: Any) -> MetricsDatabase:
        kwargs.setdefault("collector", MetricsCollector(registry=CollectorRegistry()))
        db = MetricsDatabase(target, **kwargs)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def _seed(db: MetricsDatabase, ts: float = 1_700_000_000.0) -> None:
    for i in range(10):
        db.record_event("diffusion_generate", 1.5, model_id="dream", timestamp=ts + i,
                        metadata={"token_count": 2 if i < 5 else 3, "success": i >= 2})
    for i in range(5):
        db.record_event("diffusion_infill", 2.0, model_id="dream", timestamp=ts + 20 + i,
                        metadata={"token_count": 6, "error": "boom" if i == 0 else None})
    db.record_event("diffusion_generate_stream", 0.25, model_id="other", timestamp=ts + 3600,
                    metadata={"token_count": 7})
    assert db.flush()


def test_summary(open_db: Callable[..., MetricsDatabase]) -> None:
    db = open_db()
    _seed(db)
    s = db.get_summary(model_id="dream")
    assert s["overall"] == {"total_requests": 15, "success_rate": 80.0,
                            "average_latency": pytest.approx(25 / 15)}
    assert s["endpoints"]["generate"] == {"requests": 10, "errors": 2, "error_rate": 20.0}
    assert s["tokens_by_event_type"] == {"diffusion_generate": 25, "diffusion_infill": 30}
    assert db.get_summary()["endpoints"]["generate/stream"]["requests"] == 1
    ranged = db.get_summary(since=1_700_000_005.5, until=1_700_000_022.0)
    assert ranged["overall"]["total_requests"] == 4 + 2
    assert [e["timestamp"] for e in ranged["recent_events"]][:2] == [1_700_000_021.0,
                                                                     1_700_000_020.0]
    assert ranged["recent_events"][0]["metadata"] == {"token_count": 6, "error": None}


def test_exports(open_db: Callable[..., MetricsDatabase]) -> None:
    db = open_db()
    _seed(db)
    prom = db.export("prometheus", prefix="diffusion_llm", model_id="dream")
    assert 'diffusion_llm_requests_total{endpoint="generate"} 10\n' in prom
    assert 'diffusion_llm_latency_seconds{event_type="diffusion_infill"} 2.0\n' in prom
    assert list(text_string_to_metric_families(prom))
    influx = db.export("influxdb", prefix="diffusion_llm", model_id="dream", timestamp_ns=7)
    assert "diffusion_llm,type=tokens,event_type=diffusion_infill count=30 7\n" in influx
    doc = json.loads(db.export("json"))
    assert len(doc["events"]) == 16 and doc["summary"]["overall"]["total_requests"] == 16


def test_reopen_keeps_everything_and_folds_nothing_twice(
    open_db: Callable[..., MetricsDatabase]
) -> None:
    db = open_db()
    _seed(db)
    db.close()
    again = open_db()
    assert again.get_summary()["overall"]["total_requests"] == 16
    assert again.rebuild_rollups() == 16
    assert again.get_summary()["overall"]["total_requests"] == 16


def test_column_types_match_the_seed(open_db: Callable[..., MetricsDatabase]) -> None:
    from sqlalchemy import inspect

    db = open_db()
    cols = {c["name"]: c for c in inspect(db.engine).get_columns("performance_events")}
    assert list(cols) == ["id", "model_id", "user_id", "event_type", "duration", "timestamp",
                          "metadata"]
    for name in ("model_id", "user_id", "event_type", "duration", "timestamp"):
        assert cols[name]["nullable"] is False, name
    assert cols["metadata"]["nullable"] is True
    assert all(type(cols[n]["type"]).__name__ == "TEXT"
               for n in ("model_id", "user_id", "event_type", "metadata"))
    float_type = "REAL" if db.dialect == "sqlite" else "DOUBLE_PRECISION"
    assert type(cols["timestamp"]["type"]).__name__ == float_type
    # An epoch timestamp with sub-millisecond digits survives the round trip.
    db.record_event("x_y", 0.1234567, model_id="m", timestamp=1_700_000_000.123456)
    db.flush()
    row = next(db.iter_events())
    assert row["timestamp"] == 1_700_000_000.123456 and row["duration"] == 0.1234567


WRITER = textwrap.dedent("""
    import sys
    from prometheus_client import CollectorRegistry
    from tinyllm.metrics import MetricsCollector
    from tinyllm.store import MetricsDatabase
    target, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = MetricsDatabase(target, batch_size=200,
                         collector=MetricsCollector(registry=CollectorRegistry()))
    for i in range(n):
        db.record_event("diffusion_generate", 0.01, model_id=f"w{worker}",
                        timestamp=1_700_000_000.0 + i % 600, metadata={"token_count": 1})
        if i % 500 == 0:
            db.flush()
    db.close()
    assert not db.dropped, db.dropped
""")


def test_several_processes_lose_no_event(target: str, tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    workers, n = 4, 3000
    procs = [subprocess.Popen([sys.executable, str(script), target, str(w), str(n)],
                              stderr=subprocess.PIPE) for w in range(workers)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
    with MetricsDatabase(target, collector=MetricsCollector(registry=CollectorRegistry())
                         ) as db:
        assert sum(1 for _ in db.iter_events()) == workers * n
        s = db.get_summary()
        assert s["overall"]["total_requests"] == workers * n
        assert s["tokens_by_event_type"]["diffusion_generate"] == workers * n
        for w in range(workers):
            assert db.get_summary(model_id=f"w{w}")["overall"]["total_requests"] == n
