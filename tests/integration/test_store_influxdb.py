"""The InfluxDB export, written to a real InfluxDB 1.x and queried back.

``influxd`` comes from scripts/ensure-services.sh (Debian's influxdb package); a missing
binary is a failure, not a skip. The test instance lives in a temp dir on free loopback
ports (HTTP and the meta bind-address), with reporting and IFQL off.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase

pytestmark = pytest.mark.integration

ENSURE = "scripts/ensure-services.sh"


def _config(workdir: Path, http_port: int, meta_port: int, influxd: str) -> Path:
    text = subprocess.run([influxd, "config"], capture_output=True, text=True, check=True,
                          timeout=30).stdout
    text = text.replace("/var/lib/influxdb", str(workdir))
    text = re.sub(r'(?m)^bind-address = ".*"$', f'bind-address = "127.0.0.1:{meta_port}"',
                  text)
    text = re.sub(r'(?ms)(^\[http\].*?^\s*bind-address = )"[^"]*"',
                  rf'\1"127.0.0.1:{http_port}"', text, count=1)
    text = re.sub(r'(?ms)(^\[ifql\].*?^\s*enabled = )\w+', r"\1false", text, count=1)
    text = re.sub(r'(?m)^reporting-enabled = \w+', "reporting-enabled = false", text)
    text = re.sub(r'(?ms)(^\[monitor\].*?^\s*store-enabled = )\w+', r"\1false", text, count=1)
    path = workdir / "influxdb.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def influx(
    tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]
) -> Iterator[str]:
    """A running influxd; yields its base URL."""
    influxd = shutil.which("influxd")
    if influxd is None:
        pytest.fail(f"influxd not found on PATH; run {ENSURE} (installs influxdb)",
                    pytrace=False)
    workdir = tmp_path_factory.mktemp("influxdb")
    http_port, meta_port = free_port(), free_port()
    config = _config(workdir, http_port, meta_port, influxd)
    log = (workdir / "influxd.log").open("wb")
    proc = subprocess.Popen([influxd, "-config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"influxd exited ({proc.returncode}):\n"
                            f"{(workdir / 'influxd.log').read_text()[-3000:]}", pytrace=False)
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 204:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("influxd not ready after 30s", pytrace=False)
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(url: str, db: str, q: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/query", params={"db": db, "q": q, "epoch": "ns"}, timeout=10
                     ).json()
    result = body["results"][0]
    assert "error" not in result, result
    return list(result.get("series", []))


def test_export_is_accepted_and_reads_back(influx: str, tmp_path: Path) -> None:
    with MetricsDatabase(tmp_path / "m.db",
                         collector=MetricsCollector(registry=CollectorRegistry())) as db:
        for i in range(10):
            db.record_event("diffusion_generate", 1.5, model_id="dream", timestamp=1e9 + i,
                            metadata={"token_count": 2 if i < 5 else 3, "success": i >= 2})
        for i in range(5):
            db.record_event("diffusion_infill_stream", 2.0, model_id="dream",
                            timestamp=1e9 + i, metadata={"token_count": 6, "error": i == 0})
        db.record_event("diffusion_generate", 0.5, model_id="dream", timestamp=1e9,
                        metadata={"endpoint": "odd, name=x y"})
        db.flush()
        stamp = 1_234_567_890_000_000_000
        body = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=stamp)
    r = httpx.post(f"{influx}/query", params={"q": "CREATE DATABASE store_test"}, timeout=10)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{influx}/write", params={"db": "store_test"}, content=body.encode(),
                   timeout=10)
    assert r.status_code == 204, r.text

    series = _query(influx, "store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='requests' GROUP BY endpoint")
    got = {s["tags"]["endpoint"]: s["values"][0] for s in series}
    assert got == {"generate": [stamp, 10.0], "infill/stream": [stamp, 5.0],
                   "odd, name=x y": [stamp, 1.0]}
    series = _query(influx, "store_test",
                    "SELECT value FROM diffusion_llm WHERE \"type\"='latency' GROUP BY event_type")
    latency = {s["tags"]["event_type"]: s["values"][0][1] for s in series}
    assert latency == {"diffusion_generate": pytest.approx(15.5 / 11),
                       "diffusion_infill_stream": 2.0}
    series = _query(influx, "store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='tokens' GROUP BY event_type")
    assert {s["tags"]["event_type"]: s["values"][0][1] for s in series} == {
        "diffusion_generate": 25.0, "diffusion_infill_stream": 30.0}
    series = _query(influx, "store_test",
                    "SELECT p50, p99 FROM diffusion_llm WHERE \"type\"='latency_quantiles' "
                    "GROUP BY event_type")
    assert {s["tags"]["event_type"]: s["values"][0][1] for s in series}[
        "diffusion_infill_stream"] == pytest.approx(2.0, rel=0.045)
    series = _query(influx, "store_test",
                    "SELECT count FROM diffusion_llm WHERE \"type\"='errors' GROUP BY endpoint")
    assert {s["tags"]["endpoint"]: s["values"][0][1] for s in series}["infill/stream"] == 1.0
