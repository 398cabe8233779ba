"""Disk full: the SQLite store on a 1 MiB filesystem.

The writer runs in a process of its own inside a private mount namespace (``unshare
--mount --propagation private``) with a 1 MiB tmpfs mounted over its directory, so the
filesystem that fills is the store's alone and disappears with the process. A ballast
file takes part of the space; the process records events (flushing after each burst)
until the disk is full and further events are being dropped, then deletes the ballast
and records more.

Proves: no exception reaches the caller (``record_event``, ``flush``, ``close``);
produced = stored + dropped, exactly, the drops counted by reason in
``tinyllm_store_events_dropped_total{reason}`` (``disk_full``) and in
``MetricsDatabase.dropped``; once space is freed the next events are stored again; the
file passes ``PRAGMA integrity_check`` and its roll-ups agree with its rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

Figure = Callable[..., None]

CHILD = textwrap.dedent("""
    import json, os, sqlite3, sys, traceback
    from prometheus_client import CollectorRegistry
    from tinyllm.metrics import MetricsCollector
    from tinyllm.store import MetricsDatabase

    root = sys.argv[1]
    out = {"raised": []}
    st = os.statvfs(root)
    out["fs_bytes"] = st.f_blocks * st.f_frsize
    ballast = os.path.join(root, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\\0" * (256 * 1024))
    registry = CollectorRegistry()
    db = MetricsDatabase(os.path.join(root, "metrics.db"), batch_size=256,
                         collector=MetricsCollector(registry=registry, namespace="tinyllm"))
    produced = 0

    def burst(n):
        global produced
        for _ in range(n):
            try:
                db.record_event("diffusion_generate", 0.5, model_id="m", timestamp=1.7e9 + produced,
                                metadata={"token_count": 3, "cost_usd": 0.125,
                                          "prompt_hash": "x" * 64})
            except Exception:
                out["raised"].append(traceback.format_exc())
            produced += 1
        try:
            if not db.flush(30):
                out["raised"].append("flush timed out")
        except Exception:
            out["raised"].append(traceback.format_exc())

    # Fill: keep going until the disk refused at least 20 bursts in a row.
    refused = 0
    while refused < 20 and produced < 2_000_000:
        before = sum(db.dropped.values())
        burst(200)
        refused = refused + 1 if sum(db.dropped.values()) > before else 0
    out["produced_full"] = produced
    out["dropped_full"] = db.dropped
    # Free the space: writing resumes.
    os.unlink(ballast)
    before = dict(db.dropped)
    burst(500)
    out["resumed_dropped"] = sum(db.dropped.values()) - sum(before.values())
    try:
        db.close()
    except Exception:
        out["raised"].append(traceback.format_exc())
    out["produced"] = produced
    out["dropped"] = db.dropped
    out["counted"] = {
        s.labels["reason"]: s.value
        for m in registry.collect() for s in m.samples
        if s.name == "tinyllm_store_events_dropped_total"}
    conn = sqlite3.connect(os.path.join(root, "metrics.db"))
    out["integrity"] = conn.execute("PRAGMA integrity_check").fetchall()
    out["stored"] = conn.execute("SELECT count(*) FROM performance_events").fetchone()[0]
    out["resumed_stored"] = conn.execute(
        "SELECT count(*) FROM performance_events WHERE timestamp >= ?",
        (1.7e9 + out["produced_full"],)).fetchone()[0]
    out["rollup_requests"] = conn.execute(
        "SELECT coalesce(sum(requests), 0) FROM performance_rollups").fetchone()[0]
    out["bin_requests"] = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM performance_latency_bins").fetchone()[0]
    conn.close()
    print(json.dumps(out))
""")


def _run_on_tiny_fs(tmp_path: Path) -> dict[str, object]:
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed for the disk-full test"
    root = tmp_path / "tiny"
    root.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # The tmpfs lives in the child's own mount namespace: it is gone when the child ends,
    # and the machine's mounts never see it.
    cmd = [unshare, "--mount", "--propagation", "private", "sh", "-c",
           'mount -t tmpfs -o size=1m tinyllm-disk-full "$0" && exec "$1" "$2" "$0"',
           str(root), sys.executable, str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"the writer under unshare failed ({done.returncode}): "
                    f"{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_disk_full_drops_are_counted_and_writing_resumes(tmp_path: Path,
                                                         figure: Figure) -> None:
    out = _run_on_tiny_fs(tmp_path)
    assert out["fs_bytes"] == 1024 * 1024, out["fs_bytes"]
    raised = out["raised"]
    assert isinstance(raised, list)
    produced, stored = out["produced"], out["stored"]
    dropped, counted = out["dropped"], out["counted"]
    assert isinstance(produced, int) and isinstance(stored, int)
    assert isinstance(dropped, dict) and isinstance(counted, dict)
    lost = sum(dropped.values())
    figure("disk full: exceptions reaching the caller", str(len(raised)), "0", not raised)
    figure("disk full: produced - stored - dropped", f"{produced - stored - lost}",
           "0 exactly", produced == stored + lost)
    full = out["dropped_full"]
    assert isinstance(full, dict)
    figure("disk full: drops counted as disk_full", f"{full.get('disk_full', 0)}", "> 0",
           full.get("disk_full", 0) > 0)
    figure("disk full: events stored after space freed", f"{out['resumed_stored']}/500",
           "500/500", out["resumed_stored"] == 500)
    assert not raised, raised[0]
    assert produced == stored + lost, out
    assert set(dropped) == {"disk_full"}, dropped
    assert {k: int(v) for k, v in counted.items()} == dropped
    assert out["resumed_dropped"] == 0 and out["resumed_stored"] == 500, out
    assert out["integrity"] == [["ok"]], out["integrity"]
    assert out["rollup_requests"] == stored and out["bin_requests"] == stored, out
