"""SQLite storage details: WAL checkpoints off the commit path, the roll-up table layout,
and databases written with the earlier roll-up layout."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tinyllm.store import MetricsDatabase, _wal
from tinyllm.store._wal import WalCheckpointer


def test_store_connections_leave_checkpoints_to_the_checkpointer(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    db = make_db()
    with db.engine.connect() as conn:
        # Only past 64 MB (see the next tests); the checkpointer does the rest.
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 16_384
        assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar() == 64 * 2**20
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_commits_are_checkpointed_and_the_wal_is_reused(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wal, "_MIN_GAP", 0.01)  # rounds a second apart, faster
    db = make_db(batch_size=500)
    wal = db._wal
    assert wal is not None
    for round_ in range(6):
        for i in range(3000):
            db.record_event("llm_generate", 0.1, model_id="m", timestamp=1e9 + i,
                            metadata={"token_count": i, "round": round_})
        assert db.flush()
        time.sleep(0.05)  # lets a checkpoint begun before the flush end uncounted
        seen = wal.checkpoints
        wal.poke()  # a checkpoint that starts now copies all of this round's commits
        deadline = time.monotonic() + 10
        while wal.checkpoints <= seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wal.checkpoints > seen
    # Without checkpoints 18,000 events would need ~1,000 WAL frames of 4 KB; with them
    # the WAL restarts from the beginning once it has been copied.
    assert (tmp_path / "metrics.db-wal").stat().st_size < 18_000 * 150
    assert db.get_summary()["overall"]["total_requests"] == 18_000
    db.close()
    conn = sqlite3.connect(tmp_path / "metrics.db")
    assert conn.execute("SELECT count(*) FROM performance_events").fetchone() == (18_000,)
    conn.close()


def test_writes_that_do_not_poke_are_checkpointed_by_the_timer(tmp_path: Path) -> None:
    # prune() and rebuild_rollups() write through the engine without poking.
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        conn.exec_driver_sql("CREATE TABLE t (x TEXT)")
    wal = WalCheckpointer(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t SELECT hex(randomblob(500)) FROM "
                             "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                             "FROM n WHERE i < 2000) SELECT i FROM n)")
    deadline = time.monotonic() + 5
    while wal.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    checkpoints = wal.checkpoints  # before close(), which runs one of its own
    wal.close(timeout=5)
    assert checkpoints >= 1


def test_pokes_within_the_gap_make_one_checkpoint_and_close_cuts_it_short(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    wal = WalCheckpointer(engine, min_gap=30)
    wal.poke()
    deadline = time.monotonic() + 5
    while wal.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(20):  # commits a store makes within the gap: coalesced
        wal.poke()
        time.sleep(0.01)
    assert wal.checkpoints == 1
    started = time.monotonic()
    wal.close(timeout=10)
    assert time.monotonic() - started < 5  # not the 30 s gap
    assert wal.checkpoints == 2  # close() ran the last one


_BUSY_WRITER = """
import sqlite3, sys
from tinyllm.store import _wal
from tinyllm.store.database import _sqlite_pragmas
_wal.AUTOCHECKPOINT_PAGES = int(sys.argv[3])
db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
_sqlite_pragmas(db, None)  # the store's own connection set-up
for _ in range(int(sys.argv[2])):  # one transaction after another, ~25 pages each
    db.execute("BEGIN")
    db.execute("INSERT INTO t SELECT hex(randomblob(250)) FROM (WITH RECURSIVE n(i) AS "
               "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT i FROM n)")
    db.execute("COMMIT")
"""


@pytest.mark.parametrize("pages", [400, 0])
def test_a_writer_that_never_pauses_still_gets_its_wal_started_over(
    tmp_path: Path, pages: int,
) -> None:
    # A writer that starts each transaction before the checkpointer's last checkpoint
    # is done never finds the WAL fully copied, so SQLite never starts it over: with
    # automatic checkpoints off (pages=0) it grows by every commit (~500 MB over 1M
    # events). With them past `pages`, the writer's own connection checkpoints the rest
    # and its next transaction starts the WAL over.
    path = tmp_path / "x.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 10})
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("CREATE TABLE t (x TEXT)")
    wal = WalCheckpointer(engine, min_gap=0)
    writer = subprocess.Popen([sys.executable, "-c", _BUSY_WRITER, str(path), "600",
                               str(pages)])
    largest = 0
    while writer.poll() is None:
        wal.poke()
        with contextlib.suppress(FileNotFoundError):
            largest = max(largest, (tmp_path / "x.db-wal").stat().st_size)
        time.sleep(0.002)
    wal.close(timeout=10)
    assert writer.returncode == 0
    # Unbounded, the WAL takes every commit: ~600 x 25 pages (~60 MB). Bounded, it stays
    # near the threshold plus the transactions that run while a checkpoint is busy: a
    # handful on a quiet machine (~2 MB), a few dozen under load (7.4 MB seen in CI).
    threshold = 400 * 4096
    assert (largest < 12 * threshold) if pages else (largest > 16 * threshold), largest


def test_a_failing_checkpoint_is_logged_once_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_engine("sqlite://")
    calls = []

    def refuse(*_args: object, **_kwargs: object) -> None:
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    engine.connect = refuse  # type: ignore[method-assign,assignment]
    caplog.set_level(logging.DEBUG, logger="tinyllm.store")
    wal = WalCheckpointer(engine, min_gap=0)
    for _ in range(3):
        wal.poke()
        deadline = time.monotonic() + 5
        seen = len(calls)
        while len(calls) == seen and time.monotonic() < deadline:
            time.sleep(0.005)
    wal.close(timeout=5)
    assert len(calls) >= 3 and wal.checkpoints == 0
    failures = [r for r in caplog.records if "checkpoint failed" in r.getMessage()]
    assert len(failures) == 1


def test_rollup_tables_are_clustered_by_their_primary_key(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase],
) -> None:
    make_db().close()
    conn = sqlite3.connect(tmp_path / "metrics.db")
    ddl = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table'"))
    for table in ("performance_rollups", "performance_latency_bins"):
        assert ddl[table].rstrip().endswith("WITHOUT ROWID"), table
    # The quantiles' GROUP BY (event_type, bin) reads the bins in primary-key order.
    pk = sorted((row[5], row[1]) for row in
                conn.execute("PRAGMA table_info(performance_latency_bins)") if row[5])
    assert [name for _, name in pk] == ["event_type", "bin", "model_id", "bucket"]
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT event_type, bin, sum(count) FROM performance_latency_bins "
        "GROUP BY event_type, bin"))
    assert "TEMP B-TREE" not in plan
    conn.close()


OLD_ROLLUPS = """
CREATE TABLE performance_rollups (bucket INTEGER NOT NULL, event_type TEXT NOT NULL,
    endpoint TEXT NOT NULL, model_id TEXT NOT NULL, requests INTEGER NOT NULL,
    errors INTEGER NOT NULL, duration_sum REAL NOT NULL, tokens INTEGER NOT NULL,
    PRIMARY KEY (bucket, event_type, endpoint, model_id));
CREATE TABLE performance_latency_bins (bucket INTEGER NOT NULL, event_type TEXT NOT NULL,
    model_id TEXT NOT NULL, bin INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (bucket, event_type, model_id, bin));
CREATE INDEX ix_performance_latency_bins_quantiles ON performance_latency_bins
    (event_type, bin, model_id, bucket, count);
"""


def test_a_store_with_the_earlier_rollup_layout_keeps_working(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase],
) -> None:
    path = tmp_path / "metrics.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_ROLLUPS)
    conn.close()
    db = make_db()
    for i in range(10):
        db.record_event("diffusion_generate", 1.0 + i, model_id="m", timestamp=1e9 + i,
                        metadata={"success": i != 3, "token_count": 2})
    db.record_event("diffusion_generate", 1.0, model_id="m", timestamp=1e9 + 20)
    assert db.flush() and db.dropped == {}
    summary = db.get_summary()
    assert summary["overall"]["total_requests"] == 11
    assert summary["endpoints"]["generate"]["errors"] == 1
    assert summary["tokens_by_event_type"] == {"diffusion_generate": 20}
    assert summary["latency_quantiles_by_event_type"]["diffusion_generate"]["p50"] > 1.0
