"""`tinyllm metrics --db`, `tinyllm export` and `tinyllm store prune` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli_metrics import assert_no_traceback, run, start_server
from tests.support.servers import free_port
from tinyllm.store import MetricsDatabase


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Seed 004's example: 10 generate (2 errors), 5 infill (1 error), plus 4 events 40 days
    old."""
    path = tmp_path / "metrics.db"
    now = time.time()
    with MetricsDatabase(path) as db:
        for i in range(10):
            db.record_event("diffusion_generate", 1.5, model_id="dream", timestamp=now - 60 + i,
                            metadata={"token_count": 2, "success": i >= 2})
        for i in range(5):
            db.record_event("diffusion_infill", 2.0, model_id="llada", timestamp=now - 30 + i,
                            metadata={"token_count": 6, "success": i != 0})
        for i in range(4):
            db.record_event("diffusion_generate", 1.0, model_id="dream",
                            timestamp=now - 40 * 86400 + i, metadata={"success": True})
    return path


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert_no_traceback(result)


def test_metrics_serves_the_store_like_the_seed(db_path: Path) -> None:
    port = free_port()
    proc = start_server(port, "--db", str(db_path), "--api-prefix", "/api/diffusion",
                        "--export-prefix", "diffusion_llm")
    base = f"http://127.0.0.1:{port}/api/diffusion/metrics"
    try:
        summary = httpx.get(base)
        prom = httpx.get(f"{base}/export", params={"format": "prometheus"})
        influx = httpx.get(f"{base}/export", params={"format": "influxdb"})
        bogus = httpx.get(f"{base}/export", params={"format": "bogus"})
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        live = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "Traceback" not in err
    assert summary.status_code == 200
    data = summary.json()
    assert data["overall"]["total_requests"] == 19
    assert data["endpoints"]["infill"] == {"requests": 5, "errors": 1, "error_rate": 20.0}
    assert prom.status_code == 200 and prom.headers["content-type"].startswith("text/plain")
    assert 'diffusion_llm_requests_total{endpoint="generate"} 14' in prom.text
    assert 'diffusion_llm_errors_total{endpoint="infill"} 1' in prom.text
    assert influx.text.startswith("diffusion_llm,type=requests,")
    assert bogus.status_code == 400
    assert "format must be one of json, prometheus, influxdb" in bogus.json()["error"]
    assert health["checks"]["store"]["status"] == "healthy"
    assert "# TYPE tinyllm_requests_total counter" in live  # /metrics is still there


def test_metrics_default_api_prefix(db_path: Path) -> None:
    port = free_port()
    proc = start_server(port, "--db", str(db_path))
    try:
        summary = httpx.get(f"http://127.0.0.1:{port}/api/metrics")
        prom = httpx.get(f"http://127.0.0.1:{port}/api/metrics/export?format=prometheus")
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert summary.json()["overall"]["total_requests"] == 19
    assert "tinyllm_store_requests_total" in prom.text


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--api-prefix", "api"], 2, ["--api-prefix", "/api/diffusion"]),
    (["--api-prefix", "/a b"], 2, ["--api-prefix"]),
    (["--export-prefix", "9x"], 2, ["--export-prefix", "diffusion_llm"]),
    (["--db", "mysql://h/db"], 2, ["--db", "postgresql://"]),
])
def test_metrics_store_usage_errors(
    db_path: Path, args: list[str], code: int, needles: list[str]
) -> None:
    full = ["metrics", "--port", str(free_port())]
    if "--db" not in args:
        full += ["--db", str(db_path)]
    one_line_error(run(*full, *args), code, *needles)


def test_metrics_with_a_db_that_cannot_be_opened(tmp_path: Path) -> None:
    target = str(tmp_path / "missing" / "m.db")
    one_line_error(run("metrics", "--port", str(free_port()), "--db", target), 1,
                   f"cannot open metrics database {target}")


def test_export_to_stdout_in_each_format(db_path: Path) -> None:
    out = run("export", "--db", str(db_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["summary"]["overall"]["total_requests"] == 19 and len(data["events"]) == 19
    prom = run("export", "--db", str(db_path), "--format", "prometheus",
               "--prefix", "diffusion_llm", "--since", "1d")
    assert prom.returncode == 0, prom.stderr
    assert 'diffusion_llm_requests_total{endpoint="generate"} 10' in prom.stdout
    influx = run("export", "--db", str(db_path), "--format", "influxdb", "--model", "llada")
    assert influx.returncode == 0
    assert "endpoint=infill count=5" in influx.stdout and "endpoint=generate" not in influx.stdout


def test_export_time_forms_and_output_file(db_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    iso_since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 50 * 86400))
    out = run("export", "--db", str(db_path), "--since", iso_since, "--until", "7d",
              "--output", str(target))
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert len(json.loads(target.read_text())["events"]) == 4
    epoch = run("export", "--db", str(db_path), "--since", str(int(time.time() - 3600)))
    assert len(json.loads(epoch.stdout)["events"]) == 15


def test_export_reads_the_env_var(db_path: Path) -> None:
    out = run("export", "--format", "prometheus", env={"TINYLLM_METRICS_DB": str(db_path)})
    assert out.returncode == 0 and "tinyllm_store_requests_total" in out.stdout


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--format", "xml"], 2, ["--format", "json, prometheus, influxdb"]),
    (["--since", "yesterday"], 2, ["--since", "ISO 8601", "24h"]),
    (["--until", "2026-13-40"], 2, ["--until", "epoch seconds"]),
    (["--since", "1h", "--until", "2d"], 2, ["--since", "--until"]),
    (["--prefix", "bad-name"], 2, ["--prefix", "diffusion_llm"]),
    (["--output", "/nonexistent-dir/x.json"], 1, ["--output", "/nonexistent-dir/x.json"]),
])
def test_export_errors(db_path: Path, args: list[str], code: int, needles: list[str]) -> None:
    one_line_error(run("export", "--db", str(db_path), *args), code, *needles)


def test_export_missing_or_broken_db(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.db")
    one_line_error(run("export", "--db", missing), 1, f"no metrics database at {missing}")
    assert not Path(missing).exists()  # export never creates an empty store
    broken = tmp_path / "broken.db"
    broken.write_text("not sqlite at all\n" * 100)
    one_line_error(run("export", "--db", str(broken)), 1, "cannot open metrics database",
                   str(broken))


def test_store_prune(db_path: Path) -> None:
    out = run("store", "prune", "--db", str(db_path), "--older-than", "30d")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("removed 4 event(s) older than 30d")
    with MetricsDatabase(db_path) as db:
        assert db.get_summary()["overall"]["total_requests"] == 15
        assert len(list(db.iter_events())) == 15
    again = run("store", "prune", "--db", str(db_path), "--older-than", "30d")
    assert again.stdout.startswith("removed 0 event(s)")


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["--older-than", "30"], 2, ["--older-than", "30m, 24h, 7d"]),
    (["--older-than", "a month"], 2, ["--older-than"]),
])
def test_store_prune_errors(db_path: Path, args: list[str], code: int,
                            needles: list[str]) -> None:
    one_line_error(run("store", "prune", "--db", str(db_path), *args), code, *needles)


def test_store_prune_missing_db_and_missing_option(tmp_path: Path) -> None:
    one_line_error(run("store", "prune", "--db", str(tmp_path / "x.db"), "--older-than", "1d"),
                   1, "no metrics database")
    result = run("store", "prune", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 2 and "--older-than" in result.stderr
    assert_no_traceback(result)


def test_metrics_export_prefix_without_a_store() -> None:
    one_line_error(run("metrics", "--port", str(free_port()), "--export-prefix", "x"), 2,
                   "--export-prefix needs a store", "--db")
