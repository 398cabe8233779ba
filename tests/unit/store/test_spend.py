"""Spend in the store: each event's ``cost_usd`` and ``slo_met`` summed into the roll-ups,
the summary's ``cost`` and ``slo`` against hand sums, exact at any range boundary, kept by
prune and rebuild, and a store made before the spend columns upgraded when it opens."""

from __future__ import annotations

import logging
import math
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tinyllm.store import MetricsDatabase
from tinyllm.store.schema import ROLLUP_SECONDS

from .conftest import PRICED, T0, record_priced


def test_the_summary_totals_are_the_hand_sums(db: MetricsDatabase) -> None:
    record_priced(db)
    s = db.get_summary()
    cost = s["cost"]
    assert cost["total_usd"] == pytest.approx(0.0123 + 0.0456 + 1e-7 + 0.3, abs=1e-9)
    assert cost["unpriced_requests"] == 3
    assert cost["by_model"] == {
        "gpt-4o": {"requests": 4, "cost_usd": pytest.approx(0.3579001, abs=1e-9),
                   "unpriced_requests": 0},
        "local": {"requests": 2, "cost_usd": 0.0, "unpriced_requests": 0},
        "mystery": {"requests": 3, "cost_usd": 0.0, "unpriced_requests": 3},
    }
    assert s["slo"] == {
        "requests": 6, "met": 4, "goodput_ratio": pytest.approx(4 / 6),
        "by_model": {
            "gpt-4o": {"requests": 3, "met": 2, "goodput_ratio": pytest.approx(2 / 3)},
            "local": {"requests": 2, "met": 2, "goodput_ratio": 1.0},
            "mystery": {"requests": 1, "met": 0, "goodput_ratio": 0.0},
        },
    }
    # The seed's keys are as they were.
    assert s["overall"]["total_requests"] == 9
    one = db.get_summary(model_id="gpt-4o")
    assert list(one["cost"]["by_model"]) == ["gpt-4o"]
    assert one["cost"]["total_usd"] == pytest.approx(0.3579001, abs=1e-9)
    # A range: the first 3650 s hold four gpt-4o/local/mystery events, partial hours both
    # ends, read from the raw rows.
    ranged = db.get_summary(since=T0 + 1, until=T0 + 3700)
    assert ranged["cost"]["total_usd"] == pytest.approx(0.0456, abs=1e-9)
    assert ranged["cost"]["unpriced_requests"] == 2
    assert ranged["slo"]["requests"] == 3 and ranged["slo"]["met"] == 1


def test_an_empty_or_unjudged_store_has_zero_cost_and_no_goodput(db: MetricsDatabase) -> None:
    s = db.get_summary()
    assert s["cost"] == {"total_usd": 0.0, "unpriced_requests": 0, "by_model": {}}
    assert s["slo"] == {"requests": 0, "met": 0, "goodput_ratio": None, "by_model": {}}
    db.record_event("x_y", 1.0, model_id="m")  # no metadata at all: unpriced, not judged
    db.record_event("x_y", 1.0, model_id="m", metadata={"cost_usd": "1", "slo_met": "yes"})
    assert db.flush()
    s = db.get_summary()
    assert s["cost"]["by_model"] == {"m": {"requests": 2, "cost_usd": 0.0,
                                           "unpriced_requests": 2}}
    assert s["slo"]["goodput_ratio"] is None and s["slo"]["by_model"] == {}


def _brute(events: list[tuple[str, float | None, bool | None, float]], since: float | None,
           until: float | None, model: str | None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for m, cost, met, dt in events:
        ts = T0 + dt
        if (since is None or ts >= since) and (until is None or ts < until) and \
                model in (None, m):
            acc = out.setdefault(m, [0, [], 0, 0, 0])
            acc[0] += 1
            if cost is None:
                acc[2] += 1
            else:
                acc[1].append(cost)
            acc[3] += met is not None
            acc[4] += met is True
    return out


def test_spend_is_exact_at_any_boundary(db: MetricsDatabase) -> None:
    rng = random.Random(15)
    span = 4 * ROLLUP_SECONDS
    events: list[tuple[str, float | None, bool | None, float]] = [
        (rng.choice(["a", "b", "c"]),
         None if rng.random() < 0.2 else rng.choice([0.0, rng.uniform(0, 0.05)]),
         rng.choice([None, True, False]), rng.uniform(0, span)) for _ in range(2000)]
    record_priced(db, events)
    ranges: list[tuple[float | None, float | None]] = [
        (None, None), (T0 + 30.5, None), (None, T0 + 7000.25), (T0 + 1200, T0 + 1200)]
    ranges += [tuple(sorted((T0 + rng.uniform(-100, span + 100),  # type: ignore[misc]
                             T0 + rng.uniform(-100, span + 100)))) for _ in range(12)]
    for since, until in ranges:
        for model in (None, "b"):
            s = db.get_summary(since, until, model)
            want = _brute(events, since, until, model)
            got = s["cost"]["by_model"]
            assert sorted(got) == sorted(want), (since, until, model)
            for m, (n, costs, unpriced, judged, met) in want.items():
                assert got[m]["requests"] == n
                assert got[m]["unpriced_requests"] == unpriced
                assert got[m]["cost_usd"] == pytest.approx(math.fsum(costs), abs=1e-9)
                slo = s["slo"]["by_model"].get(m, {"requests": 0, "met": 0})
                assert (slo["requests"], slo["met"]) == (judged, met)
            total = math.fsum(c for v in want.values() for c in v[1])
            assert s["cost"]["total_usd"] == pytest.approx(total, abs=1e-9)
            assert s["cost"]["unpriced_requests"] == sum(v[2] for v in want.values())


def test_rebuild_and_prune_keep_the_spend(
    tmp_path: Path, db: MetricsDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_priced(db)
    before = db.get_summary()
    assert db.rebuild_rollups() == len(PRICED)
    assert db.get_summary()["cost"] == before["cost"]
    assert db.get_summary()["slo"] == before["slo"]
    # Prune everything before T0 + 3650 (mid-hour): that hour is rebuilt from what is left.
    monkeypatch.setattr("tinyllm.store.database._now", lambda: T0 + 3650 + 1000)
    assert db.prune(1000) == 4
    s = db.get_summary()
    left = [e for e in PRICED if e[3] >= 3650]
    assert s["overall"]["total_requests"] == len(left) == 5
    assert s["cost"]["total_usd"] == pytest.approx(1e-7 + 0.3, abs=1e-9)
    assert s["cost"]["unpriced_requests"] == 2
    assert s["slo"]["requests"] == 3 and s["slo"]["met"] == 2


# The tables as the store created them before the spend columns (SQLAlchemy's DDL of the
# previous schema, verbatim).
OLD_SQLITE_DDL = """
CREATE TABLE performance_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    duration REAL NOT NULL,
    timestamp REAL NOT NULL,
    metadata TEXT
);
CREATE INDEX ix_performance_events_timestamp ON performance_events (timestamp);
CREATE TABLE performance_latency_bins (
    event_type TEXT NOT NULL,
    bin INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (event_type, bin, model_id, bucket)
) WITHOUT ROWID;
CREATE TABLE performance_rollups (
    bucket INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    model_id TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    duration_sum REAL NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (bucket, event_type, endpoint, model_id)
) WITHOUT ROWID;
CREATE TABLE store_meta (
    "key" TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY ("key")
);
INSERT INTO store_meta VALUES ('rollups', '1');
"""


def make_old_store(path: Path) -> None:
    """A store as the previous version left it: raw rows (metadata with cost_usd, as the
    observer already wrote it), their roll-ups without spend, the ``rollups`` marker."""
    import json

    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SQLITE_DDL)
        for model, cost, met, dt in PRICED:
            md: dict[str, Any] = {"token_count": 10}
            if cost is not None:
                md["cost_usd"] = cost
            if met is not None:
                md["slo_met"] = met
            conn.execute("INSERT INTO performance_events (model_id, user_id, event_type, "
                         "duration, timestamp, metadata) VALUES (?, 'u', 'llm_chat', 0.5, ?, ?)",
                         (model, T0 + dt, json.dumps(md)))
            bucket = int((T0 + dt) // ROLLUP_SECONDS) * ROLLUP_SECONDS
            conn.execute("INSERT INTO performance_rollups VALUES (?, 'llm_chat', 'chat', ?, 1, "
                         "0, 0.5, 10) ON CONFLICT (bucket, event_type, endpoint, model_id) "
                         "DO UPDATE SET requests = requests + 1, "
                         "duration_sum = duration_sum + 0.5, tokens = tokens + 10",
                         (bucket, model))


def test_a_store_made_before_the_spend_columns_gains_them_when_it_opens(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.db"
    make_old_store(path)
    with caplog.at_level(logging.INFO, logger="tinyllm.store"):
        db = make_db(path)
    assert "rebuilt from 9 event(s)" in caplog.text
    s = db.get_summary()
    assert s["overall"]["total_requests"] == 9
    assert s["cost"]["total_usd"] == pytest.approx(0.3579001, abs=1e-9)
    assert s["cost"]["by_model"]["mystery"] == {"requests": 3, "cost_usd": 0.0,
                                                "unpriced_requests": 3}
    assert s["slo"]["requests"] == 6 and s["slo"]["met"] == 4
    # The writer works on the upgraded table, and the table is the one a new store gets.
    db.record_event("llm_chat", 0.5, model_id="gpt-4o", timestamp=T0 + 1,
                    metadata={"cost_usd": 0.5})
    assert db.flush()
    assert db.get_summary()["cost"]["total_usd"] == pytest.approx(0.8579001, abs=1e-9)
    db.close()
    fresh = make_db(tmp_path / "new.db")
    fresh.close()
    info = "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?)"
    with sqlite3.connect(path) as old, sqlite3.connect(tmp_path / "new.db") as new:
        for table in ("performance_rollups", "performance_latency_bins", "store_meta"):
            assert old.execute(info, (table,)).fetchall() == \
                new.execute(info, (table,)).fetchall(), table
        assert old.execute("SELECT * FROM store_meta ORDER BY 1").fetchall() == \
            [("rollups", "1"), ("rollups_spend", "1")]
    # A second open neither alters nor rebuilds again (the sums would double otherwise).
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tinyllm.store"):
        again = make_db(path)
    assert "rebuilt" not in caplog.text
    assert again.get_summary()["cost"]["total_usd"] == pytest.approx(0.8579001, abs=1e-9)
    assert again.get_summary()["overall"]["total_requests"] == 10


def test_a_previous_versions_writer_still_writes_to_an_upgraded_store(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase]
) -> None:
    # An older process still running against the file names only its own columns: the
    # defaults fill the rest (its events count as requests with no spend) until
    # rebuild_rollups() folds their metadata in.
    path = tmp_path / "old.db"
    make_old_store(path)
    db = make_db(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO performance_events (model_id, user_id, event_type, duration,"
                     " timestamp, metadata) VALUES ('gpt-4o', 'u', 'llm_chat', 0.5, ?, "
                     "'{\"cost_usd\": 1.0}')", (T0,))
        conn.execute("INSERT INTO performance_rollups (bucket, event_type, endpoint, model_id,"
                     " requests, errors, duration_sum, tokens) VALUES (?, 'llm_chat', 'chat',"
                     " 'gpt-4o', 1, 0, 0.5, 0) ON CONFLICT (bucket, event_type, endpoint, "
                     "model_id) DO UPDATE SET requests = "
                     "requests + 1", (int(T0 // ROLLUP_SECONDS) * ROLLUP_SECONDS,))
    s = db.get_summary()
    assert s["overall"]["total_requests"] == 10
    assert s["cost"]["total_usd"] == pytest.approx(0.3579001, abs=1e-9)
    assert db.rebuild_rollups() == 10
    assert db.get_summary()["cost"]["total_usd"] == pytest.approx(1.3579001, abs=1e-9)
