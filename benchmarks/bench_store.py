"""The metrics store against raw sqlite3, side by side: ingest, caller cost, summary, export.

Run ``python benchmarks/bench_store.py`` (1,000,000 events, a few minutes) or with
``--events 100000`` for a quick look. Cases:

1. ingest until durable: ``record_event`` x N then ``flush()``, against raw sqlite3
   ``executemany`` of the same rows (metadata ``json.dumps``-ed, seed 004's table, WAL,
   synchronous=NORMAL, 2000 rows per transaction). Ours also redacts the metadata and
   keeps the roll-ups. Goal: >= 0.8x raw and >= 100k events/s.
2. caller-side cost of ``record_event`` (the loop of case 1 alone). Goal: < 5 us.
3. ``get_summary`` over the N events: all of them, and the last 24 hours (median of 5).
   Goal: < 100 ms at 1M.
4. export of the N events: ``json`` streamed (tracemalloc peak, against the same export of
   N/10 events: flat means about equal), ``prometheus`` and ``influxdb``.

Events: 4 event types, 3 models, timestamps spread over the last 7 days, seed-shaped
metadata, 5 % errors. The script reports; it never fails on a missed goal.
"""

from __future__ import annotations

import argparse
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


def bench_raw(path: Path, events: list[Any], batch: int = 2000) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SEED_DDL)
    sql = ("INSERT INTO performance_events (model_id, user_id, event_type, duration, "
           "timestamp, metadata) VALUES (?, ?, ?, ?, ?, ?)")
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


def export_peak(db: MetricsDatabase, fmt: str, **kw: Any) -> tuple[float, int, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    size = sum(len(c) for c in db.iter_export(fmt, **kw))
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, size, peak


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
    with tempfile.TemporaryDirectory() as tmp:
        raw = bench_raw(Path(tmp) / "raw.db", events)
        caller, e2e, db = bench_ours(Path(tmp) / "ours.db", events)
        print("\n1. ingest until durable")
        print(f"  raw sqlite3 executemany : {n / raw:10,.0f} events/s")
        print(f"  MetricsDatabase         : {n / e2e:10,.0f} events/s  "
              f"= {raw / e2e:.2f}x raw   (goal >= 0.8x and >= 100,000/s)")
        print("\n2. caller side")
        print(f"  record_event            : {caller / n * 1e6:10.2f} us/call (goal < 5 us)")
        print("\n3. get_summary")
        whole = timed(lambda: db.get_summary())
        day = timed(lambda: db.get_summary(since=now - 86400, until=now))
        print(f"  all {n:,} events       : {whole * 1e3:10.1f} ms (goal < 100 ms at 1M)")
        print(f"  last 24 h (exact edges) : {day * 1e3:10.1f} ms")
        print("\n4. export")
        for fmt in ("prometheus", "influxdb"):
            t, size, peak = export_peak(db, fmt, prefix="diffusion_llm")
            print(f"  {fmt:<11} : {t * 1e3:8.1f} ms, {size:,} bytes, peak {peak / 1e6:.1f} MB")
        tenth = now - 7 * 86400 + 7 * 86400 * 0.9
        t_small, size_small, peak_small = export_peak(db, "json", since=tenth)
        t, size, peak = export_peak(db, "json")
        print(f"  json, N/10 events : {t_small:8.2f} s, {size_small / 1e6:,.1f} MB out, "
              f"peak {peak_small / 1e6:.1f} MB")
        print(f"  json, N events    : {t:8.2f} s, {size / 1e6:,.1f} MB out, "
              f"peak {peak / 1e6:.1f} MB  (flat: {peak / max(peak_small, 1):.2f}x the N/10 "
              "peak)")
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
