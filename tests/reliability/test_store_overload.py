"""Overload: producers offering at least 10x what the writer commits, for 5 s (fast suite)
and 60 s (``make soak``), on a SQLite store with the default queue (50,000 events) and
batch size.

The database is made slow on purpose (a SQLAlchemy ``before_cursor_execute`` hook sleeps
before every insert into ``performance_events``, as a slow disk or a busy server would:
the GIL is free meanwhile), so the writer commits < 8,000 events/s while three producer
threads call ``record_event`` flat out, each call timed.

Proves: the queue never holds more than its cap (every producer reads its length after
each call; a sampler thread too), and with it every event the store holds (the cap counts
the writer's batches too, which the RSS figure shows); the process's memory (RSS) grows
< 50 MB; drops are exact: produced = stored + dropped, and
``tinyllm_store_events_dropped_total{reason="queue_full"}`` says the same; the caller's
p99 per ``record_event`` call < 1 ms.
"""

from __future__ import annotations

import gc
import inspect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

Figure = Callable[..., None]

#: Seconds the "slow database" takes per insert statement (the writer inserts up to
#: 2,000 rows a statement): caps the writer under 8,000 events/s.
_SLOW_INSERT = 0.25
_PRODUCERS = 3
_SLOTS = 10_001  # call-time histogram: one slot per microsecond, the last one for more
_METADATA = {"endpoint": "generate", "token_count": 25, "input_tokens": 10,
             "graph": "default", "success": True, "request_id": "r-1", "cost_usd": 0.0004,
             "slo_met": True}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _quantile(hist: list[int], q: float) -> int:
    """The ``q`` quantile of a microsecond histogram, in microseconds."""
    want, seen = q * sum(hist), 0
    for us, count in enumerate(hist):
        seen += count
        if seen >= want:
            return us
    return len(hist) - 1


def _overload(tmp_path: Path, figure: Figure, seconds: float) -> None:
    registry = CollectorRegistry()
    db = MetricsDatabase(tmp_path / "metrics.db",
                         collector=MetricsCollector(registry=registry, namespace="tinyllm"))

    slowed = threading.Event()
    slowed.set()

    def slow(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if slowed.is_set() and statement.startswith("INSERT INTO performance_events"):
            time.sleep(_SLOW_INSERT)

    event.listen(db.engine, "before_cursor_execute", slow)
    cap = inspect.signature(MetricsDatabase).parameters["queue_size"].default
    queue = db._queue  # the queue proper (``pending`` also counts the writer's batches)
    stop = threading.Event()
    produced = [0] * _PRODUCERS
    most = [0] * (_PRODUCERS + 1)
    hists = [[0] * _SLOTS for _ in range(_PRODUCERS)]
    raised: list[BaseException] = []

    def produce(k: int) -> None:
        record, clock, hist = db.record_event, time.perf_counter, hists[k]
        top, n = 0, 0
        try:
            while not stop.is_set():
                for _ in range(1000):
                    t0 = clock()
                    record("diffusion_generate", 0.5, model_id="m", metadata=_METADATA)
                    us = int((clock() - t0) * 1e6)
                    hist[us if us < _SLOTS else _SLOTS - 1] += 1
                    depth = len(queue)
                    if depth > top:
                        top = depth
                n += 1000
        except BaseException as exc:  # the finding, reported below
            raised.append(exc)
        produced[k] = n
        most[k] = top

    peak = [0]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _rss())
            most[-1] = max(most[-1], len(queue))

    gc.collect()
    base = _rss()
    peak[0] = base
    written0 = db._writer.written
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(_PRODUCERS)]
    threads.append(threading.Thread(target=sample))
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - started
    committed = db._writer.written - written0  # what the writer managed meanwhile
    # Not event.remove(): that mutates the listener list the writer may be iterating.
    slowed.clear()
    assert db.flush(120)
    total = sum(produced)
    with db.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM performance_events").scalar_one()
    dropped = db.dropped
    counted = registry.get_sample_value("tinyllm_store_events_dropped_total",
                                        {"reason": "queue_full"})
    db.close()

    hist = [sum(col) for col in zip(*hists, strict=True)]
    p99, p999 = _quantile(hist, 0.99), _quantile(hist, 0.999)
    ratio = total / max(committed, 1)
    grown = (peak[0] - base) / 1e6
    deepest = max(most)
    label = f"overload {seconds:.0f} s"
    figure(f"{label}: offered / committed", f"{ratio:.1f}x", ">= 10x", ratio >= 10)
    figure(f"{label}: offered, committed /s",
           f"{total / elapsed / 1e3:.0f}k, {committed / elapsed / 1e3:.1f}k", "(info)", True)
    figure(f"{label}: deepest queue", f"{deepest}", f"<= {cap}", deepest <= cap)
    figure(f"{label}: RSS growth", f"{grown:.1f} MB", "< 50 MB", grown < 50)
    figure(f"{label}: produced - stored - dropped", f"{total - stored - sum(dropped.values())}",
           "0 exactly", total == stored + sum(dropped.values()))
    figure(f"{label}: record_event p99", f"{p99} us", "< 1 ms", p99 < 1000)
    figure(f"{label}: record_event p99.9", f"{p999} us", "(info)", True)
    assert not raised, raised[0]
    assert ratio >= 10, (total, committed)
    assert deepest <= cap
    assert grown < 50
    assert set(dropped) == {"queue_full"}, dropped
    assert total == stored + dropped["queue_full"], (total, stored, dropped)
    assert counted == dropped["queue_full"]
    assert p99 < 1000


def test_overload_5s(tmp_path: Path, figure: Figure) -> None:
    _overload(tmp_path, figure, 5.0)


@pytest.mark.soak
def test_overload_60s(tmp_path: Path, figure: Figure) -> None:
    _overload(tmp_path, figure, 60.0)
