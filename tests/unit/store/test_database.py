"""MetricsDatabase on SQLite: schema, validation, the writer, failures, ranges, quantiles."""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase, derive_endpoint
from tinyllm.store.schema import HIST_SECONDS, ROLLUP_SECONDS, latency_bin

from .conftest import dropped, seed_example

SEED_DDL = """
CREATE TABLE performance_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    duration REAL NOT NULL,
    timestamp REAL NOT NULL,
    metadata TEXT
);
"""


def table_info(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return [tuple(r[1:]) for r in conn.execute("PRAGMA table_info(performance_events)")]


def test_schema_is_the_seeds_column_for_column(tmp_path: Path, db: MetricsDatabase) -> None:
    seeded = tmp_path / "seed.db"
    with sqlite3.connect(seeded) as conn:
        conn.executescript(SEED_DDL)
    assert table_info(tmp_path / "metrics.db") == table_info(seeded)
    with sqlite3.connect(tmp_path / "metrics.db") as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='performance_events'"
                           ).fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert "AUTOINCREMENT" in sql
    assert mode == "wal"


def test_a_database_made_by_the_seeds_ddl_opens_and_reads(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase]
) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SEED_DDL)
        conn.executemany(
            "INSERT INTO performance_events (model_id, user_id, event_type, duration, "
            "timestamp, metadata) VALUES (?, ?, ?, ?, ?, ?)",
            [("dream", "u", "diffusion_generate", 1.5, 1e9 + i,
              '{"token_count": 5, "success": %s}' % ("false" if i < 2 else "true"))
             for i in range(10)] + [("dream", "u", "diffusion_infill", 2.0, 1e9, None)],
        )
    db = make_db(path)
    summary = db.get_summary()
    assert summary["overall"]["total_requests"] == 11
    assert summary["endpoints"]["generate"] == {"requests": 10, "errors": 2, "error_rate": 20.0}
    assert summary["tokens_by_event_type"] == {"diffusion_generate": 50, "diffusion_infill": 0}
    db.record_event("diffusion_infill", 2.0, model_id="dream", timestamp=1e9 + 1)
    assert db.flush()
    assert db.get_summary()["endpoints"]["infill"]["requests"] == 2
    db.close()
    # A second open must not fold the old rows in again.
    assert make_db(path).get_summary()["overall"]["total_requests"] == 12


def test_seed_example_summary(db: MetricsDatabase) -> None:
    seed_example(db)
    s = db.get_summary()
    assert s["overall"] == {"total_requests": 15, "success_rate": 80.0,
                            "average_latency": pytest.approx(25 / 15)}
    assert s["endpoints"] == {"generate": {"requests": 10, "errors": 2, "error_rate": 20.0},
                              "infill": {"requests": 5, "errors": 1, "error_rate": 20.0}}
    assert s["average_latency_by_event_type"] == {"diffusion_generate": 1.5,
                                                  "diffusion_infill": 2.0}
    assert s["tokens_by_event_type"] == {"diffusion_generate": 25, "diffusion_infill": 30}
    assert [e["event_type"] for e in s["recent_events"]][:2] == ["diffusion_infill"] * 2
    assert s["recent_events"][0]["metadata"]["token_count"] == 6
    assert len(s["recent_events"]) == 10
    assert len(db.get_summary(recent=3)["recent_events"]) == 3
    assert db.get_summary(model_id="other")["overall"]["total_requests"] == 0


def test_empty_store_summary(db: MetricsDatabase) -> None:
    s = db.get_summary()
    assert s["overall"] == {"total_requests": 0, "success_rate": 0.0, "average_latency": 0.0}
    assert s["endpoints"] == {} and s["recent_events"] == []


def test_explicit_endpoint_wins_over_the_rule(db: MetricsDatabase) -> None:
    db.record_event("chat_completion", 1.0, model_id="m", metadata={"endpoint": "chat"})
    db.record_event("chat_completion", 1.0, model_id="m")
    db.flush()
    assert set(db.get_summary()["endpoints"]) == {"chat", "completion"}


@pytest.mark.parametrize(("kwargs", "exc", "word"), [
    ({"event_type": ""}, ValueError, "event_type"),
    ({"event_type": 5}, TypeError, "event_type"),
    ({"model_id": ""}, ValueError, "model_id"),
    ({"model_id": None}, TypeError, "model_id"),
    ({"user_id": 3}, TypeError, "user_id"),
    ({"duration": -1.0}, ValueError, "duration"),
    ({"duration": math.nan}, ValueError, "duration"),
    ({"duration": math.inf}, ValueError, "duration"),
    ({"duration": "1"}, TypeError, "duration"),
    ({"duration": True}, TypeError, "duration"),
    ({"timestamp": math.nan}, ValueError, "timestamp"),
    ({"timestamp": "now"}, TypeError, "timestamp"),
    ({"metadata": [1]}, TypeError, "metadata"),
])
def test_record_event_rejects_bad_arguments(
    db: MetricsDatabase, kwargs: dict[str, Any], exc: type[Exception], word: str
) -> None:
    args: dict[str, Any] = {"event_type": "diffusion_generate", "duration": 1.0,
                            "model_id": "m", **kwargs}
    with pytest.raises(exc, match=word):
        db.record_event(args.pop("event_type"), args.pop("duration"), **args)
    assert db.pending == 0


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"queue_size": 0}, "queue_size"), ({"batch_size": 0}, "batch_size"),
    ({"flush_interval": 0}, "flush_interval"), ({"target": "mysql://x/y"}, "target"),
    ({"target": ":memory:"}, "target"), ({"target": ""}, "target"),
])
def test_constructor_rejects_bad_arguments(kwargs: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        MetricsDatabase(**kwargs)


@pytest.mark.parametrize(("kwargs", "exc", "word"), [
    ({"since": 10.0, "until": 5.0}, ValueError, "since must be <= until"),
    ({"since": math.inf}, ValueError, "since"),
    ({"until": "x"}, TypeError, "until"),
    ({"model_id": ""}, ValueError, "model_id"),
    ({"recent": -1}, ValueError, "recent"),
])
def test_get_summary_rejects_bad_arguments(
    db: MetricsDatabase, kwargs: dict[str, Any], exc: type[Exception], word: str
) -> None:
    with pytest.raises(exc, match=word):
        db.get_summary(**kwargs)


def test_flush_makes_every_event_durable(tmp_path: Path, db: MetricsDatabase) -> None:
    for i in range(5000):
        db.record_event("diffusion_generate", 0.001 * i, model_id="m", user_id=f"u{i % 7}")
    assert db.flush()
    with sqlite3.connect(tmp_path / "metrics.db") as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT user_id) FROM performance_events"
                            ).fetchone() == (5000, 7)
    assert db.pending == 0 and db.dropped == {}


def test_metadata_is_copied_then_redacted(
    monkeypatch: pytest.MonkeyPatch, make_db: Callable[..., MetricsDatabase]
) -> None:
    fake = types.ModuleType("tinyllm.redaction")
    seen: list[Any] = []

    def redact(value: Any) -> Any:
        seen.append(value)
        return {k: ("[REDACTED]" if k == "api_key" else v) for k, v in value.items()}

    fake.redact = redact  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tinyllm.redaction", fake)
    db = make_db()
    metadata = {"api_key": "sk-secret", "token_count": 3}
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata=metadata)
    metadata["token_count"] = 99  # the caller reuses its dict: the event must not change
    db.flush()
    stored = next(db.iter_events())["metadata"]
    assert stored == {"api_key": "[REDACTED]", "token_count": 3}
    assert len(seen) == 1


def test_the_real_redaction_is_applied(db: MetricsDatabase) -> None:
    db.record_event("diffusion_generate", 1.0, model_id="m",
                    metadata={"api_key": "sk-abcdefabcdefabcdefabcdef", "token_count": 3})
    db.flush()
    stored = next(db.iter_events())["metadata"]
    assert "sk-abcdef" not in str(stored) and stored["token_count"] == 3


def test_a_full_queue_drops_and_counts(
    make_db: Callable[..., MetricsDatabase], store_collector: MetricsCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = make_db(queue_size=10, flush_interval=5.0)
    with caplog.at_level(logging.ERROR, logger="tinyllm.store"):
        for _ in range(1000):
            db.record_event("diffusion_generate", 1.0, model_id="m")
    assert db.flush()
    lost = db.dropped["queue_full"]
    assert lost >= 900
    assert dropped(store_collector, "queue_full") == lost
    assert db.get_summary()["overall"]["total_requests"] == 1000 - lost
    assert sum("queue_full" in r.getMessage() for r in caplog.records) == 1


def _on_new_connections(db: MetricsDatabase, *pragmas: str) -> None:
    def apply(dbapi_conn: Any, _record: Any) -> None:
        for pragma in pragmas:
            dbapi_conn.execute(pragma)

    event.listen(db.engine, "connect", apply)
    db.engine.dispose()  # the writer's next connection gets the pragmas


def test_disk_full_drops_counts_logs_once_and_carries_on(
    db: MetricsDatabase, store_collector: MetricsCollector, caplog: pytest.LogCaptureFixture
) -> None:
    db.record_event("diffusion_generate", 1.0, model_id="m")
    db.flush()
    with sqlite3.connect(db.engine.url.database or "") as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    _on_new_connections(db, f"PRAGMA max_page_count={pages + 2}")
    with caplog.at_level(logging.ERROR, logger="tinyllm.store"):
        for _round in range(3):
            for i in range(300):
                db.record_event("diffusion_generate", 1.0, model_id="m",
                                metadata={"blob": "x" * 2000, "i": i})
            assert db.flush()
    assert db.dropped.get("disk_full", 0) > 0
    assert dropped(store_collector, "disk_full") == db.dropped["disk_full"]
    assert sum("disk_full" in r.getMessage() for r in caplog.records) == 1
    kept = db.get_summary()["overall"]["total_requests"]
    assert kept + db.dropped["disk_full"] == 901


def test_a_locked_database_drops_and_counts(
    db: MetricsDatabase, store_collector: MetricsCollector
) -> None:
    _on_new_connections(db, "PRAGMA busy_timeout=50")
    blocker = sqlite3.connect(db.engine.url.database or "", isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        db.record_event("diffusion_generate", 1.0, model_id="m")
        assert db.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert db.dropped == {"db_locked": 1}
    assert dropped(store_collector, "db_locked") == 1
    db.record_event("diffusion_generate", 1.0, model_id="m")  # it recovers by itself
    assert db.flush()
    assert db.get_summary()["overall"]["total_requests"] == 1


def test_close_flushes_and_later_events_are_counted(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase], store_collector: MetricsCollector
) -> None:
    db = make_db(flush_interval=30.0)
    for _ in range(10):
        db.record_event("diffusion_generate", 1.0, model_id="m")
    db.close()
    db.close()  # idempotent
    with sqlite3.connect(tmp_path / "metrics.db") as conn:
        assert conn.execute("SELECT count(*) FROM performance_events").fetchone()[0] == 10
    db.record_event("diffusion_generate", 1.0, model_id="m")
    assert dropped(store_collector, "closed") == 1


def _brute(events: list[tuple[str, float, float, dict[str, Any]]], since: float | None,
           until: float | None) -> dict[str, Any]:
    sel = [e for e in events if (since is None or e[2] >= since) and
           (until is None or e[2] < until)]
    eps: dict[str, list[int]] = {}
    for et, _d, _ts, md in sel:
        acc = eps.setdefault(derive_endpoint(et), [0, 0])
        acc[0] += 1
        acc[1] += md.get("success") is False
    return {"n": len(sel), "dsum": sum(e[1] for e in sel),
            "tokens": sum(e[3]["token_count"] for e in sel), "eps": eps}


def test_time_ranges_are_exact_at_any_boundary(db: MetricsDatabase) -> None:
    rng = random.Random(4)
    t0 = 1_700_000_000.0
    span = 3 * HIST_SECONDS
    events = []
    for _ in range(3000):
        et = rng.choice(["diffusion_generate", "diffusion_infill_stream"])
        md = {"token_count": rng.randint(0, 50), "success": rng.random() > 0.1}
        events.append((et, rng.uniform(0.01, 3.0), t0 + rng.uniform(0, span), md))
    for et, d, ts, md in events:
        db.record_event(et, d, model_id="m", timestamp=ts, metadata=md)
    db.flush()
    ranges: list[tuple[float | None, float | None]] = [
        (None, None), (t0 + 30.5, None), (None, t0 + 7000.25), (t0 + 60, t0 + 3600),
        (t0 + 59.9, t0 + 60.1), (t0 + 100, t0 + 100),
    ]
    ranges += [tuple(sorted((t0 + rng.uniform(-100, span + 100),  # type: ignore[misc]
                             t0 + rng.uniform(-100, span + 100)))) for _ in range(15)]
    for since, until in ranges:
        s = db.get_summary(since, until)
        want = _brute(events, since, until)
        assert s["overall"]["total_requests"] == want["n"], (since, until)
        assert sum(s["tokens_by_event_type"].values()) == want["tokens"]
        got_eps = {ep: [v["requests"], v["errors"]] for ep, v in s["endpoints"].items()}
        assert got_eps == want["eps"]
        if want["n"]:
            assert s["overall"]["average_latency"] == pytest.approx(want["dsum"] / want["n"])
            hist_total = sum(1 for e in events if (since is None or e[2] >= since) and
                             (until is None or e[2] < until))
            assert hist_total == want["n"]
    assert span > 2 * ROLLUP_SECONDS  # the ranges above cross whole roll-up buckets


@pytest.mark.parametrize("hist_seconds", [HIST_SECONDS, 1800])
def test_latency_histograms_are_exact_at_any_boundary(
    db: MetricsDatabase, monkeypatch: pytest.MonkeyPatch, hist_seconds: int,
) -> None:
    # The histograms behind p50/p95/p99: whole hours from the roll-ups, partial hours
    # from the raw rows (folded once with the sums when both granularities are equal,
    # read on their own when not), against a count of every event.
    from tinyllm.store import schema
    from tinyllm.store.summary import totals

    monkeypatch.setattr(schema, "HIST_SECONDS", hist_seconds)
    rng = random.Random(11)
    t0 = 1_700_000_000.0
    span = 4 * HIST_SECONDS
    events = [(rng.choice(["diffusion_generate", "diffusion_infill"]),
               rng.lognormvariate(-1.0, 1.0), t0 + rng.uniform(0, span),
               rng.choice(["a", "b"])) for _ in range(3000)]
    for et, d, ts, model in events:
        db.record_event(et, d, model_id=model, timestamp=ts)
    assert db.flush()
    ranges: list[tuple[float | None, float | None]] = [(None, None), (t0 + 10.5, None),
                                                       (None, t0 + 5000.0)]
    ranges += [tuple(sorted((t0 + rng.uniform(-100, span + 100),  # type: ignore[misc]
                             t0 + rng.uniform(-100, span + 100)))) for _ in range(12)]
    with db.engine.connect() as conn:
        for since, until in ranges:
            for model in (None, "a"):
                want: dict[str, dict[int, int]] = {}
                for et, d, ts, m in events:
                    if (since is None or ts >= since) and (until is None or ts < until) \
                            and model in (None, m):
                        h = want.setdefault(et, {})
                        h[latency_bin(d)] = h.get(latency_bin(d), 0) + 1
                got = totals(conn, since, until, model).hist
                assert {et: h for et, h in got.items() if h} == want, (since, until, model)


def test_quantiles_are_within_the_bin_error(db: MetricsDatabase) -> None:
    rng = random.Random(7)
    durations = [rng.lognormvariate(-1.0, 0.8) for _ in range(4000)]
    for d in durations:
        db.record_event("diffusion_generate", d, model_id="m", timestamp=1_700_000_000.0)
    db.flush()
    got = db.get_summary()["latency_quantiles_by_event_type"]["diffusion_generate"]
    ordered = sorted(durations)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = ordered[math.ceil(q * len(ordered)) - 1]
        assert got[name] == pytest.approx(exact, rel=0.045), name


def test_rebuild_rollups_picks_up_rows_written_behind_our_back(
    tmp_path: Path, db: MetricsDatabase
) -> None:
    seed_example(db)
    with sqlite3.connect(tmp_path / "metrics.db") as conn:
        conn.execute("INSERT INTO performance_events (model_id, user_id, event_type, duration,"
                     " timestamp, metadata) VALUES ('m', 'u', 'diffusion_infill', 2.0, 5, NULL)")
    assert db.get_summary()["overall"]["total_requests"] == 15
    assert db.rebuild_rollups() == 16
    assert db.get_summary()["overall"]["total_requests"] == 16


def test_switching_a_new_database_to_wal_is_retried_when_another_process_races() -> None:
    # Four processes opening one new SQLite file at once: the losers of the switch to
    # WAL are told "database is locked" at once (no busy wait), and must try again.
    import sqlite3

    from tinyllm.store.database import _set_wal

    class Racing:
        def __init__(self, failures: int, message: str = "database is locked") -> None:
            self.failures, self.message, self.calls = failures, message, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.calls <= self.failures:
                raise sqlite3.OperationalError(self.message)

    cur = Racing(3)
    _set_wal(cur)
    assert cur.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _set_wal(Racing(10), attempts=5)
    other = Racing(1, "disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _set_wal(other)
    assert other.calls == 1
