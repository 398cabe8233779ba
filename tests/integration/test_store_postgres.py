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


# (model, cost_usd or None, slo_met or None, seconds after the start): by hand, gpt-4o
# costs 0.0123 + 0.0456 + 1e-7 + 0.3, local 0.0 (priced at nothing), mystery is unpriced.
PRICED: list[tuple[str, float | None, bool | None, float]] = [
    ("gpt-4o", 0.0123, True, 0.0), ("gpt-4o", 0.0456, False, 10.0),
    ("gpt-4o", 1e-7, True, 3700.0), ("gpt-4o", 0.3, None, 7300.0),
    ("local", 0.0, True, 5.0), ("local", 0.0, True, 4000.0),
    ("mystery", None, None, 20.0), ("mystery", None, False, 3650.0),
    ("mystery", None, None, 9000.0),
]
GPT = 0.0123 + 0.0456 + 1e-7 + 0.3
T0 = 1_700_000_000.0


def _priced_metadata(cost: float | None, met: bool | None) -> dict[str, Any]:
    md: dict[str, Any] = {"token_count": 10}
    if cost is not None:
        md["cost_usd"] = cost
    if met is not None:
        md["slo_met"] = met
    return md


def _check_spend(db: MetricsDatabase, extra: float = 0.0) -> None:
    s = db.get_summary()
    assert s["cost"]["total_usd"] == pytest.approx(GPT + extra, abs=1e-9)
    assert s["cost"]["unpriced_requests"] == 3
    assert s["cost"]["by_model"]["local"] == {"requests": 2, "cost_usd": 0.0,
                                              "unpriced_requests": 0}
    assert s["slo"]["requests"] == 6 and s["slo"]["met"] == 4
    ranged = db.get_summary(since=T0 + 1, until=T0 + 3700)  # partial hours at both ends
    assert ranged["cost"]["total_usd"] == pytest.approx(0.0456, abs=1e-9)
    assert ranged["cost"]["unpriced_requests"] == 2


def test_spend_in_the_summary_and_the_exports(open_db: Callable[..., MetricsDatabase]) -> None:
    db = open_db()
    for model, cost, met, dt in PRICED:
        db.record_event("llm_chat", 0.5, model_id=model, timestamp=T0 + dt,
                        metadata=_priced_metadata(cost, met))
    assert db.flush()
    _check_spend(db)
    prom = db.export("prometheus", prefix="diffusion_llm")
    samples = {(s.name, s.labels.get("model_id")): s.value
               for f in text_string_to_metric_families(prom) for s in f.samples}
    assert samples[("diffusion_llm_cost_usd_total", "gpt-4o")] == pytest.approx(GPT, abs=1e-9)
    assert samples[("diffusion_llm_unpriced_requests_total", "mystery")] == 3
    influx = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=7)
    assert "diffusion_llm,type=cost,model_id=mystery cost_usd=0.0,unpriced_requests=3," \
        "requests=3,slo_requests=1,slo_met=0 7\n" in influx
    doc = json.loads(db.export("json"))
    assert doc["summary"]["cost"]["by_model"]["gpt-4o"]["cost_usd"] == pytest.approx(GPT)
    assert db.rebuild_rollups() == 9
    _check_spend(db)


# The previous version's tables, as it created them on each backend (its SQLAlchemy DDL).
_OLD_ROLLUPS = """
CREATE TABLE performance_rollups (
    bucket INTEGER NOT NULL, event_type TEXT NOT NULL, endpoint TEXT NOT NULL,
    model_id TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
    duration_sum {real} NOT NULL, tokens INTEGER NOT NULL,
    PRIMARY KEY (bucket, event_type, endpoint, model_id)
){rowid}"""
_OLD_TABLES = ["""
CREATE TABLE performance_events (
    id {id}, model_id TEXT NOT NULL, user_id TEXT NOT NULL, event_type TEXT NOT NULL,
    duration {real} NOT NULL, timestamp {real} NOT NULL, metadata TEXT{pk}
)""", "CREATE INDEX ix_performance_events_timestamp ON performance_events (timestamp)", """
CREATE TABLE performance_latency_bins (
    event_type TEXT NOT NULL, bin INTEGER NOT NULL, model_id TEXT NOT NULL,
    bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (event_type, bin, model_id, bucket)
){rowid}""", _OLD_ROLLUPS, """
CREATE TABLE store_meta (key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key))""",
    "INSERT INTO store_meta VALUES ('rollups', '1')"]


def _make_old_store(target: str) -> None:
    from sqlalchemy import create_engine, text

    from tinyllm.store.database import _to_url

    engine = create_engine(_to_url(target))
    sqlite = engine.dialect.name == "sqlite"
    words = ({"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "pk": "",
              "rowid": " WITHOUT ROWID"} if sqlite else
             {"id": "INTEGER GENERATED BY DEFAULT AS IDENTITY", "real": "DOUBLE PRECISION",
              "pk": ", PRIMARY KEY (id)", "rowid": ""})
    with engine.begin() as conn:
        for ddl in _OLD_TABLES:
            conn.execute(text(ddl.format(**words)))
        for model, cost, met, dt in PRICED:
            conn.execute(text(
                "INSERT INTO performance_events (model_id, user_id, event_type, duration, "
                "timestamp, metadata) VALUES (:m, 'u', 'llm_chat', 0.5, :ts, :md)"),
                {"m": model, "ts": T0 + dt, "md": json.dumps(_priced_metadata(cost, met))})
            conn.execute(text(
                "INSERT INTO performance_rollups VALUES (:b, 'llm_chat', 'chat', :m, 1, 0, "
                "0.5, 10) ON CONFLICT (bucket, event_type, endpoint, model_id) DO UPDATE SET "
                "requests = performance_rollups.requests + 1, duration_sum = "
                "performance_rollups.duration_sum + 0.5, tokens = performance_rollups.tokens"
                " + 10"), {"b": int((T0 + dt) // 3600) * 3600, "m": model})
    engine.dispose()


def test_a_store_made_before_the_spend_columns_opens_upgraded(
    target: str, open_db: Callable[..., MetricsDatabase]
) -> None:
    from sqlalchemy import inspect

    _make_old_store(target)
    db = open_db()
    columns = {c["name"]: c for c in inspect(db.engine).get_columns("performance_rollups")}
    assert list(columns)[-4:] == ["cost_usd", "unpriced", "slo_judged", "slo_met"]
    assert all(columns[c]["nullable"] is False for c in list(columns)[-4:])
    float_type = "REAL" if db.dialect == "sqlite" else "DOUBLE_PRECISION"
    assert type(columns["cost_usd"]["type"]).__name__ == float_type
    assert db.get_summary()["overall"]["total_requests"] == 9
    _check_spend(db)
    db.record_event("llm_chat", 0.5, model_id="gpt-4o", timestamp=T0 + 8000,
                    metadata={"cost_usd": 0.25})
    assert db.flush()
    _check_spend(db, 0.25)
    db.close()
    again = open_db()  # no second rebuild: the sums stay the sums
    _check_spend(again, 0.25)
    assert again.get_summary()["overall"]["total_requests"] == 10


def test_rows_of_the_original_table_are_folded_when_the_store_first_opens(
    target: str, open_db: Callable[..., MetricsDatabase]
) -> None:
    # Only the original table, with rows (the diffusion service's database): the first
    # open claims the "rollups" key and folds them; a PostgreSQL claim once read as lost.
    from sqlalchemy import create_engine, text

    from tinyllm.store.database import _to_url

    engine = create_engine(_to_url(target))
    sqlite = engine.dialect.name == "sqlite"
    words = ({"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "pk": ""} if sqlite
             else {"id": "INTEGER GENERATED BY DEFAULT AS IDENTITY",
                   "real": "DOUBLE PRECISION", "pk": ", PRIMARY KEY (id)"})
    with engine.begin() as conn:
        conn.execute(text(_OLD_TABLES[0].format(**words)))
        for model, cost, met, dt in PRICED:
            conn.execute(text(
                "INSERT INTO performance_events (model_id, user_id, event_type, duration, "
                "timestamp, metadata) VALUES (:m, 'u', 'llm_chat', 0.5, :ts, :md)"),
                {"m": model, "ts": T0 + dt, "md": json.dumps(_priced_metadata(cost, met))})
    engine.dispose()
    db = open_db()
    assert db.get_summary()["overall"]["total_requests"] == 9
    _check_spend(db)
    db.close()
    _check_spend(open_db())  # folded once


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
