"""PostgreSQL outage: a server of the test's own (``tests.support.pg_cluster``, never the
machine's shared one at :5432) stopped and restarted while a request loop records an
event every millisecond, and a server that accepts connections but never answers.

Proves: nothing is raised into the caller; every event is stored or dropped and counted
(produced = stored + dropped, ``db_unavailable`` / ``queue_full``, the same numbers in
``tinyllm_store_events_dropped_total``); the writer is storing again within 5 s of the
server being back; the outage adds < 50 ms to the caller's p99 ``record_event``; and
connecting has an explicit timeout (``PG_CONNECT_TIMEOUT``, 5 s), so a server that never
answers fails the open in about that long instead of hanging the host (fast suite), and
a server frozen mid-run (SIGSTOP, ``make soak``: 12 s) makes the writer's reconnects time
out and drop, counted, instead of stalling it for as long as the server stays frozen.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from tests.support.pg_cluster import PgCluster, pg_cluster
from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase
from tinyllm.store.database import PG_CONNECT_TIMEOUT

Figure = Callable[..., None]


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    with pg_cluster() as cluster:
        yield cluster


class _Requests:
    """A request loop: one ``record_event`` per ~1 ms, each call timed, per phase."""

    def __init__(self, db: MetricsDatabase) -> None:
        self.db = db
        self.phase = "before"
        self.times: dict[str, list[float]] = {}
        self.produced = 0
        self.raised: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        clock = time.perf_counter
        while not self._stop.is_set():
            phase = self.phase
            t0 = clock()
            try:
                self.db.record_event("diffusion_generate", 0.5, model_id="m",
                                     timestamp=time.time(),
                                     metadata={"token_count": 3, "success": True})
            except BaseException as exc:  # the finding
                self.raised.append(exc)
            self.times.setdefault(phase, []).append(clock() - t0)
            self.produced += 1
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _stored_since(url: str, since: float) -> int:
    with psycopg.connect(url, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM performance_events WHERE timestamp >= %s",
                           (since,)).fetchone()
    return int(row[0]) if row else 0


def test_stop_and_restart_mid_run(pg: PgCluster, figure: Figure) -> None:
    registry = CollectorRegistry()
    db = MetricsDatabase(pg.url, collector=MetricsCollector(registry=registry,
                                                            namespace="tinyllm"))
    loop = _Requests(db)
    try:
        time.sleep(2.0)
        loop.phase = "outage"
        pg.stop("fast")
        time.sleep(3.0)
        pg.start()  # returns once the server accepts connections
        back = time.time()
        loop.phase = "after"
        reconnected = None
        while time.time() - back < 15:
            if _stored_since(pg.url, back) > 0:
                reconnected = time.time() - back
                break
            time.sleep(0.02)
        time.sleep(1.0)
    finally:
        loop.stop()
    assert db.flush(30)
    stored = _stored_since(pg.url, 0.0)
    dropped = db.dropped
    counted = {r: registry.get_sample_value("tinyllm_store_events_dropped_total",
                                            {"reason": r}) for r in dropped}
    db.close()

    lost = sum(dropped.values())
    added = _p99(loop.times["outage"]) - _p99(loop.times["before"])
    figure("PG outage: exceptions reaching the caller", str(len(loop.raised)), "0",
           not loop.raised)
    figure("PG outage: produced - stored - dropped", str(loop.produced - stored - lost),
           "0 exactly", loop.produced == stored + lost)
    figure("PG outage: events dropped, counted", f"{lost}", "> 0, by reason", lost > 0)
    figure("PG outage: storing again after restart",
           "never" if reconnected is None else f"{reconnected * 1000:.0f} ms", "< 5 s",
           reconnected is not None and reconnected < 5)
    figure("PG outage: added to caller's p99", f"{added * 1000:.3f} ms", "< 50 ms",
           added < 0.05)
    assert not loop.raised, loop.raised[0]
    assert loop.produced == stored + lost, (loop.produced, stored, dropped)
    assert lost > 0 and set(dropped) <= {"db_unavailable", "queue_full"}, dropped
    assert counted == {r: float(n) for r, n in dropped.items()}
    assert reconnected is not None and reconnected < 5, pg.log_tail()
    assert added < 0.05


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def test_a_server_that_never_answers_times_out(tarpit: int, figure: Figure) -> None:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        MetricsDatabase(f"postgresql://postgres@127.0.0.1:{tarpit}/postgres",
                        collector=MetricsCollector(registry=CollectorRegistry()))
    took = time.monotonic() - started
    figure("PG never answers: open gives up after", f"{took:.1f} s",
           f"<= {PG_CONNECT_TIMEOUT} s + 1", took <= PG_CONNECT_TIMEOUT + 1)
    assert "timeout" in str(caught.value).lower(), caught.value
    assert took <= PG_CONNECT_TIMEOUT + 1


def test_a_connect_timeout_in_the_url_wins(tarpit: int) -> None:
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timeout"):
        MetricsDatabase(f"postgresql://postgres@127.0.0.1:{tarpit}/postgres?connect_timeout=1",
                        collector=MetricsCollector(registry=CollectorRegistry()))
    assert time.monotonic() - started < PG_CONNECT_TIMEOUT - 1  # the URL's 1 s, not 5 s


@pytest.mark.soak
def test_a_frozen_server_mid_run(pg: PgCluster, figure: Figure) -> None:
    """The server freezes (SIGSTOP) after the writer's connection was cut: reconnecting
    hits the connect timeout, events are dropped and counted, the caller never waits;
    after SIGCONT the writer stores again."""
    registry = CollectorRegistry()
    db = MetricsDatabase(pg.url, collector=MetricsCollector(registry=registry,
                                                            namespace="tinyllm"))
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    loop = _Requests(db)
    try:
        time.sleep(1.0)
        loop.phase = "outage"
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(2 * PG_CONNECT_TIMEOUT + 2)
        finally:
            os.kill(pid, signal.SIGCONT)
        back = time.time()
        loop.phase = "after"
        reconnected = None
        while time.time() - back < 20:
            if _stored_since(pg.url, back) > 0:
                reconnected = time.time() - back
                break
            time.sleep(0.02)
    finally:
        loop.stop()
    assert db.flush(30)
    stored = _stored_since(pg.url, 0.0)
    dropped = db.dropped
    db.close()
    lost = sum(dropped.values())
    added = _p99(loop.times["outage"]) - _p99(loop.times["before"])
    figure("PG frozen: exceptions reaching the caller", str(len(loop.raised)), "0",
           not loop.raised)
    figure("PG frozen: produced - stored - dropped", str(loop.produced - stored - lost),
           "0 exactly", loop.produced == stored + lost)
    figure("PG frozen: storing again after SIGCONT",
           "never" if reconnected is None else f"{reconnected * 1000:.0f} ms", "< 5 s",
           reconnected is not None and reconnected < 5)
    figure("PG frozen: added to caller's p99", f"{added * 1000:.3f} ms", "< 50 ms",
           added < 0.05)
    assert not loop.raised, loop.raised[0]
    assert loop.produced == stored + lost, (loop.produced, stored, dropped)
    assert dropped.get("db_unavailable", 0) > 0, dropped
    assert reconnected is not None and reconnected < 5
    assert added < 0.05
