"""A process killed with SIGKILL after ``flush()`` loses nothing it flushed, and the SQLite
file opens cleanly afterwards."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent("""
    import sys, time
    from tinyllm.store import MetricsDatabase
    db = MetricsDatabase(sys.argv[1])
    n = int(sys.argv[2])
    for i in range(n):
        db.record_event("diffusion_generate", 0.5, model_id="m", timestamp=1e9 + i,
                        metadata={"token_count": 3})
    assert db.flush()
    print("flushed", flush=True)
    # Keep writing, unflushed, until killed: the kill lands mid-stream.
    i = n
    while True:
        db.record_event("diffusion_generate", 0.5, model_id="m", timestamp=2e9 + i)
        i += 1
        if i % 1000 == 0:
            time.sleep(0.001)
""")


def test_sigkill_after_flush_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    n = 20_000
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"flushed":
        proc.kill()
        pytest.fail(f"child did not flush: {proc.communicate()[1].decode()[-3000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        flushed = conn.execute(
            "SELECT count(*) FROM performance_events WHERE timestamp < 2e9").fetchone()[0]
    assert flushed == n
    with MetricsDatabase(path, collector=MetricsCollector(registry=CollectorRegistry())) as db:
        s = db.get_summary(until=2e9)
        assert s["overall"]["total_requests"] == n
        assert s["tokens_by_event_type"]["diffusion_generate"] == 3 * n
        total = db.get_summary()["overall"]["total_requests"]
        # Roll-ups commit with their rows: they agree with the raw table after the crash.
        assert total == sum(1 for _ in db.iter_events())
