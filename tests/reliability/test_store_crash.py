"""Store crash: the writer process SIGKILLed at random points while it flushes, on SQLite
and on a PostgreSQL server of the test's own.

After every kill: the database is intact (SQLite ``PRAGMA integrity_check``; PostgreSQL:
the table reads back), the roll-ups agree with the raw rows (``rebuild_rollups()``
changes nothing), no acknowledged event is lost (every event recorded before a
``flush()`` that returned is there, none twice), and a restart (open + first write,
flushed) takes < 1 s.

The writers are forked from one "zygote" process that imported tinyllm once (a fresh
interpreter per point would cost 0.4 s of imports each); each child opens the store,
then records bursts of events and flushes after each, printing ``ack N`` when a flush
returns, until it is killed at a random moment.

Fast suite (``make test``): SQLite 40 points, PostgreSQL 15 (10-30 s together on the
shared 2-core machine, depending on its load); ``make soak``: 200 points on each.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from tests.support.pg_cluster import PgCluster, pg_cluster
from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

Figure = Callable[..., None]

ZYGOTE = textwrap.dedent("""
    import os, random, sys
    from prometheus_client import CollectorRegistry
    from tinyllm.metrics import MetricsCollector
    from tinyllm.store import MetricsDatabase

    def child(target, point, seed):
        rng = random.Random(seed)
        db = MetricsDatabase(target, batch_size=rng.choice([64, 512, 8192]),
                             collector=MetricsCollector(registry=CollectorRegistry()))
        os.write(1, b"ready %d\\n" % os.getpid())
        seq = 0
        user = "p%d" % point
        while True:
            for _ in range(rng.randint(1, 3000)):
                # Dyadic durations and costs: roll-up sums are exact in any order.
                db.record_event("diffusion_generate", rng.choice([0.25, 0.5, 1.5, 3.0]),
                                model_id=rng.choice(["a", "b"]), user_id=user,
                                timestamp=1.7e9 + seq * 0.5,
                                metadata={"token_count": seq % 7, "cost_usd": 0.125,
                                          "success": seq % 5 != 0, "slo_met": seq % 3 == 0})
                seq += 1
            if not db.flush():
                os.write(1, b"flush timed out\\n")
                os._exit(3)
            os.write(1, b"ack %d\\n" % seq)

    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "run":
            pid = os.fork()
            if pid == 0:
                try:
                    child(args[0], int(args[1]), int(args[2]))
                finally:
                    os._exit(4)
        elif cmd == "reap":
            pid, status = os.waitpid(int(args[0]), 0)
            os.write(1, b"reaped %d %d\\n" % (pid, status))
""")


class Zygote:
    """The forking parent of the crash points; ``point()`` runs one and kills it."""

    def __init__(self, tmp: Path) -> None:
        script = tmp / "zygote.py"
        script.write_text(ZYGOTE)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self._buf = b""

    def _line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the zygote's child did not answer")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"zygote died: {self.proc.stderr.read().decode()[-3000:]}"
                                   if self.proc.stderr else "zygote died")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def point(self, target: str, point: int, seed: int, kill_after: float) -> int:
        """Run one writer, SIGKILL it ``kill_after`` s after it opened the store; returns
        the highest acknowledged (flushed) event count."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {target} {point} {seed}\n".encode())
        ready = self._line(time.monotonic() + 30)
        assert ready.startswith("ready "), ready
        pid = int(ready.split()[1])
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
        self.proc.stdin.write(f"reap {pid}\n".encode())
        acked = 0
        while True:
            line = self._line(time.monotonic() + 30)
            if line.startswith("ack "):
                acked = int(line.split()[1])
            elif line.startswith("reaped "):
                status = int(line.split()[2])
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, line
                return acked
            else:
                raise AssertionError(f"child said {line!r}")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[Zygote]:
    z = Zygote(tmp_path)
    yield z
    z.close()


def _rollups(db: MetricsDatabase) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        sums = conn.execute(text(
            "SELECT bucket, event_type, endpoint, model_id, requests, errors, duration_sum, "
            "tokens, cost_usd, unpriced, slo_judged, slo_met FROM performance_rollups "
            "ORDER BY bucket, event_type, endpoint, model_id")).all()
        bins = conn.execute(text(
            "SELECT bucket, event_type, model_id, bin, count FROM performance_latency_bins "
            "ORDER BY bucket, event_type, model_id, bin")).all()
    return [tuple(r) for r in sums] + [tuple(r) for r in bins]


def _check_point(db: MetricsDatabase, point: int, acked: int) -> tuple[int, bool]:
    """Acknowledged events all there, once; roll-ups = raw rows. Returns (rows of the
    point, whether roll-ups matched)."""
    with db.engine.connect() as conn:
        count, distinct, below = conn.execute(text(
            "SELECT count(*), count(DISTINCT timestamp), "
            "sum(CASE WHEN timestamp < :edge THEN 1 ELSE 0 END) "
            "FROM performance_events WHERE user_id = :u"),
            {"u": f"p{point}", "edge": 1.7e9 + acked * 0.5}).one()
    assert count == distinct, f"point {point}: {count - distinct} event(s) stored twice"
    assert (below or 0) == acked, f"point {point}: {acked - (below or 0)} acked event(s) lost"
    before = _rollups(db)
    db.rebuild_rollups()
    return int(count), before == _rollups(db)


def _restart(target: str) -> tuple[float, MetricsDatabase]:
    """Seconds to open the store and get a first write committed."""
    started = time.perf_counter()
    db = MetricsDatabase(target, collector=MetricsCollector(registry=CollectorRegistry()))
    db.record_event("restart_probe", 0.5, model_id="probe", user_id="restart",
                    timestamp=1.6e9, metadata={"token_count": 1})
    assert db.flush(10)
    return time.perf_counter() - started, db


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _record(figure: Figure, backend: str, points: int, acked: int, restarts: list[float],
            mismatched: int, broken: int) -> None:
    figure(f"{backend} SIGKILL points, integrity ok", f"{points - broken}/{points}",
           f"{points}/{points}", broken == 0)
    figure(f"{backend} SIGKILL, roll-ups = raw rows", f"{points - mismatched}/{points}",
           f"{points}/{points}", mismatched == 0)
    figure(f"{backend} SIGKILL, acked events lost", f"0 of {acked}", "0", True)
    worst = max(restarts)
    figure(f"{backend} restart (open + first write), max", f"{worst * 1000:.0f} ms", "< 1 s",
           worst < 1.0)
    figure(f"{backend} restart (open + first write), p99", f"{_p99(restarts) * 1000:.0f} ms",
           "< 1 s", _p99(restarts) < 1.0)


def _sqlite_points(zygote: Zygote, tmp: Path, figure: Figure, points: int) -> None:
    rng = random.Random(20261202)
    restarts: list[float] = []
    acked_total = mismatched = broken = 0
    for point in range(points):
        path = tmp / f"crash-{point}.db"
        acked = zygote.point(str(path), point, rng.randrange(2**31), rng.uniform(0.0, 0.12))
        acked_total += acked
        with sqlite3.connect(path) as conn:
            verdict = conn.execute("PRAGMA integrity_check").fetchall()
        conn.close()
        if verdict != [("ok",)]:
            broken += 1
        assert verdict == [("ok",)], f"point {point}: {verdict}"
        took, db = _restart(str(path))
        restarts.append(took)
        try:
            _, same = _check_point(db, point, acked)
        finally:
            db.close()
        mismatched += not same
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    _record(figure, "SQLite", points, acked_total, restarts, mismatched, broken)
    assert mismatched == 0
    assert max(restarts) < 1.0


def _pg_points(zygote: Zygote, pg: PgCluster, figure: Figure, points: int) -> None:
    rng = random.Random(20261203)
    restarts: list[float] = []
    acked_total = mismatched = broken = 0
    for point in range(points):
        acked = zygote.point(pg.url, point, rng.randrange(2**31), rng.uniform(0.0, 0.15))
        acked_total += acked
        took, db = _restart(pg.url)
        restarts.append(took)
        try:
            try:
                _, same = _check_point(db, point, acked)
            except Exception:
                broken += 1
                raise
            mismatched += not same
            with db.engine.begin() as conn:  # the next point starts from an empty store
                conn.execute(text("TRUNCATE performance_events, performance_rollups, "
                                  "performance_latency_bins"))
        finally:
            db.close()
    _record(figure, "PostgreSQL", points, acked_total, restarts, mismatched, broken)
    assert mismatched == 0
    assert max(restarts) < 1.0


def test_sqlite_sigkill_40_points(zygote: Zygote, tmp_path: Path, figure: Figure) -> None:
    _sqlite_points(zygote, tmp_path, figure, 40)


def test_postgresql_sigkill_15_points(zygote: Zygote, figure: Figure) -> None:
    with pg_cluster() as pg:
        _pg_points(zygote, pg, figure, 15)


@pytest.mark.soak
def test_sqlite_sigkill_200_points(zygote: Zygote, tmp_path: Path, figure: Figure) -> None:
    _sqlite_points(zygote, tmp_path, figure, 200)


@pytest.mark.soak
def test_postgresql_sigkill_200_points(zygote: Zygote, figure: Figure) -> None:
    with pg_cluster() as pg:
        _pg_points(zygote, pg, figure, 200)
