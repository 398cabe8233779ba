"""The metrics store against raw sqlite3, side by side: ingest, caller cost, summary, export.

Run ``python benchmarks/bench_store.py`` (1,000,000 events, a few minutes) or with
``--events 100000`` for a quick look. Cases:

1. ingest until durable: ``record_event`` x N then ``flush()``, against raw sqlite3
   ``executemany`` of the same rows (metadata ``json.dumps``-ed, seed 004's table, WAL,
   synchronous=NORMAL, 2000 rows per transaction: 8,192 is no faster for raw), run
   side by side. Ours also redacts the metadata, keeps the timestamp index and the
   roll-ups. Goal: >= 0.8x raw and >= 100k events/s. Two timings: *history* (the N
   events spread over 7 days, the store the later cases read) and *live* (the same
   events stamped within the last few seconds, as a service records requests as they
   happen). They differ in the roll-ups: a batch of live events falls in one hour, a
   batch of history (8,192 events) in one or two at N = 1M (five at 300,000), and
   touches up to four times as many latency-bin rows.
2. caller-side cost of ``record_event`` (the loop of case 1 alone). Goal: < 5 us.
3. ``get_summary`` over the N events: all of them, and the last 24 hours (median of 5).
   Goal: < 100 ms at 1M.
4. export of the N events: ``prometheus`` and ``influxdb``; ``json`` streamed, timed
   without tracing, then its tracemalloc peak against the same export of N/10 events
   (flat means about equal).
5. where the writer's time goes: the writer's stages run one after another on one
   thread over the same N events (CPU microseconds per event), beside raw's two stages.

Events: 4 event types, 3 models, timestamps spread over the last 7 days, seed-shaped
metadata, 5 % errors. The script reports; it never fails on a missed goal.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

TYPES = ("diffusion_generate", "diffusion_infill", "diffusion_generate_stream",
         "diffusion_infill_stream")
MODELS = ("dream-7b", "llada-8b", "gemma3-270m")
SEED_DDL = """CREATE TABLE performance_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model_id TEXT NOT NULL, user_id TEXT NOT NULL,
    event_type TEXT NOT NULL, duration REAL NOT NULL, timestamp REAL NOT NULL,
    metadata TEXT)"""


def make_events(n: int, now: float) -> list[tuple[str, float, str, float, dict[str, Any]]]:
    rng = random.Random(4)
    week = 7 * 86400
    out = []
    for i in range(n):
        md: dict[str, Any] = {"token_count": rng.randint(1, 200), "max_new_tokens": 64,
                              "temperature": 0.2, "top_p": 0.9, "alg": "entropy",
                              "generation_time": 0.02}
        if rng.random() < 0.05:
            md["success"] = False
            md["error_type"] = "timeout"
        out.append((TYPES[i % 4], rng.lognormvariate(-0.5, 0.7), MODELS[i % 3],
                    now - week + week * i / n, md))
    return out


RAW_INSERT = ("INSERT INTO performance_events (model_id, user_id, event_type, duration, "
              "timestamp, metadata) VALUES (?, ?, ?, ?, ?, ?)")


def raw_db(path: Path) -> sqlite3.Connection:
    """Raw's database: the store's original table in WAL, synchronous=NORMAL, autocommit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SEED_DDL)
    return conn


def bench_raw(path: Path, events: list[Any], batch: int = 2000) -> float:
    conn, sql = raw_db(path), RAW_INSERT
    dumps = json.dumps
    t0 = time.perf_counter()
    for start in range(0, len(events), batch):
        rows = [(m, "anonymous", et, d, ts, dumps(md))
                for et, d, m, ts, md in events[start:start + batch]]
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def bench_ours(path: Path, events: list[Any]) -> tuple[float, float, MetricsDatabase]:
    db = MetricsDatabase(path, queue_size=len(events) + 1,
                         collector=MetricsCollector(registry=CollectorRegistry()))
    record = db.record_event
    t0 = time.perf_counter()
    for et, d, m, ts, md in events:
        record(et, d, model_id=m, timestamp=ts, metadata=md)
    t1 = time.perf_counter()
    assert db.flush(timeout=None)
    t2 = time.perf_counter()
    if db.dropped:
        print(f"  !! dropped: {db.dropped}")
    return t1 - t0, t2 - t0, db


def timed(fn: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def export_time(db: MetricsDatabase, fmt: str, **kw: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    size = sum(len(c) for c in db.iter_export(fmt, **kw))
    return time.perf_counter() - t0, size


def export_peak(db: MetricsDatabase, fmt: str, **kw: Any) -> int:
    """tracemalloc's peak while the export streams (tracing slows it ~4x: not timed)."""
    tracemalloc.start()
    try:
        for _chunk in db.iter_export(fmt, **kw):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def writer_stages(path: Path, events: list[Any], batch: int | None = None) -> dict[str, float]:
    """CPU seconds per stage of the writer's work, run in sequence on this thread, in
    batches of the store's default ``batch_size``."""
    if batch is None:
        batch = inspect.signature(MetricsDatabase).parameters["batch_size"].default
    from tinyllm.redaction import get_redaction_policy
    from tinyllm.store._statements import make_insert, make_upsert
    from tinyllm.store.writer import _make_encoder, fold_events

    db = MetricsDatabase(path, collector=MetricsCollector(registry=CollectorRegistry()))
    db.close()  # the schema only; the stages below drive the same statements by hand
    engine = db.engine
    insert, upsert, encode = make_insert(engine), make_upsert(engine), _make_encoder()
    policy = get_redaction_policy()
    cpu = time.thread_time
    spent = dict.fromkeys(("redaction check", "JSON encoding", "row tuples",
                           "roll-up folding", "insert (multi-row)", "roll-up upserts",
                           "commit"), 0.0)
    names = list(spent)
    for start in range(0, len(events), batch):
        chunk = [(et, d, m, "anonymous", ts, md.copy())
                 for et, d, m, ts, md in events[start:start + batch]]
        marks = [cpu()]
        for i, ev in enumerate(chunk):
            if not policy.is_clean(ev[5]):
                chunk[i] = (*ev[:5], policy.redact(ev[5]))
        marks.append(cpu())
        texts = [encode(ev[5]) for ev in chunk]
        marks.append(cpu())
        rows = [(m, u, et, d, ts, tx)
                for (et, d, m, u, ts, _), tx in zip(chunk, texts, strict=True)]
        marks.append(cpu())
        sums: dict[Any, Any] = {}
        bins: dict[Any, Any] = {}
        fold_events(sums, bins, {}, chunk)
        marks.append(cpu())
        with engine.connect() as conn:
            tx = conn.begin()
            insert(conn, rows)
            marks.append(cpu())
            upsert(conn, sums, bins)
            marks.append(cpu())
            tx.commit()
        marks.append(cpu())
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            spent[name] += b - a
    engine.dispose()
    return spent


def raw_stages(path: Path, events: list[Any], batch: int = 2000) -> dict[str, float]:
    """bench_raw's two stages, CPU seconds, on this thread."""
    conn, sql = raw_db(path), RAW_INSERT
    spent = {"json.dumps + tuples": 0.0, "executemany + commit": 0.0}
    cpu = time.thread_time
    for start in range(0, len(events), batch):
        t0 = cpu()
        rows = [(m, "anonymous", et, d, ts, json.dumps(md))
                for et, d, m, ts, md in events[start:start + batch]]
        t1 = cpu()
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        spent["json.dumps + tuples"] += t1 - t0
        spent["executemany + commit"] += cpu() - t1
    conn.close()
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events to store (default 1,000,000)")
    args = parser.parse_args(argv)
    n = args.events
    if n < 100:
        parser.error("--events must be >= 100")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cpus, sqlite {sqlite3.sqlite_version}; N = {n:,}")
    now = time.time()
    events = make_events(n, now)
    live = [(et, d, m, now - n * 1e-5 + i * 1e-5, md)
            for i, (et, d, m, _ts, md) in enumerate(events)]
    with tempfile.TemporaryDirectory() as tmp:
        print("\n1. ingest until durable (goal >= 0.8x raw and >= 100,000/s)")
        raw_live = bench_raw(Path(tmp) / "raw-live.db", live)
        _caller, e2e_live, db_live = bench_ours(Path(tmp) / "ours-live.db", live)
        db_live.close()
        raw = bench_raw(Path(tmp) / "raw.db", events)
        caller, e2e, db = bench_ours(Path(tmp) / "ours.db", events)
        for name, r, o in (("history", raw, e2e), ("live", raw_live, e2e_live)):
            print(f"  {name:<8}: raw sqlite3 executemany {n / r:10,.0f} events/s, "
                  f"MetricsDatabase {n / o:10,.0f} events/s = {r / o:.2f}x raw")
        print("\n2. caller side")
        print(f"  record_event            : {caller / n * 1e6:10.2f} us/call (goal < 5 us)")
        print("\n3. get_summary")
        whole = timed(lambda: db.get_summary())
        day = timed(lambda: db.get_summary(since=now - 86400, until=now))
        print(f"  all {n:,} events       : {whole * 1e3:10.1f} ms (goal < 100 ms at 1M)")
        print(f"  last 24 h (exact edges) : {day * 1e3:10.1f} ms")
        print("\n4. export")
        for fmt in ("prometheus", "influxdb"):
            t, size = export_time(db, fmt, prefix="diffusion_llm")
            peak = export_peak(db, fmt, prefix="diffusion_llm")
            print(f"  {fmt:<11} : {t * 1e3:8.1f} ms, {size:,} bytes, peak {peak / 1e6:.1f} MB")
        tenth = now - 7 * 86400 + 7 * 86400 * 0.9
        t_small, size_small = export_time(db, "json", since=tenth)
        t, size = export_time(db, "json")
        peak_small = export_peak(db, "json", since=tenth)
        peak = export_peak(db, "json")
        print(f"  json, N/10 events : {t_small:8.2f} s, {size_small / 1e6:,.1f} MB out, "
              f"peak {peak_small / 1e6:.1f} MB")
        print(f"  json, N events    : {t:8.2f} s = {t / n * 1e6:.1f} us/event, "
              f"{size / 1e6:,.1f} MB out, peak {peak / 1e6:.1f} MB  (flat: "
              f"{peak / max(peak_small, 1):.2f}x the N/10 peak)")
        db.close()
        print("\n5. where the time goes (one thread, stages in sequence, CPU us/event)")
        ours = writer_stages(Path(tmp) / "stages.db", events)
        base = raw_stages(Path(tmp) / "raw-stages.db", events)
        for name, spent in ours.items():
            print(f"  {name:<22}: {spent / n * 1e6:6.2f}")
        print(f"  {'writer, all stages':<22}: {sum(ours.values()) / n * 1e6:6.2f}  "
              f"(+ the caller's record_event above)")
        for name, spent in base.items():
            print(f"  raw: {name:<17}: {spent / n * 1e6:6.2f}")
        print(f"  {'raw, all stages':<22}: {sum(base.values()) / n * 1e6:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
