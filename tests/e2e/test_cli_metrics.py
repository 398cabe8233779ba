"""`tinyllm metrics` and `tinyllm stats` as a user runs them (real processes, real ports)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

CLI = [sys.executable, "-m", "tinyllm"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def start_server(
    port: int, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*CLI, "metrics", "--port", str(port), *extra], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not come up: {proc.communicate()}")


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tinyllm"
    assert script.exists()
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "0.1.0"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_metrics_serves_and_exits_cleanly_on_signal(sig: signal.Signals) -> None:
    port = free_port()
    proc = start_server(port)
    body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "# TYPE tinyllm_requests_total counter" in body
    assert "tinyllm_system_info{" in body
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "serving metrics on http://127.0.0.1:" in err
    assert "Traceback" not in err
    assert out == ""  # stdout is for command output only


def test_metrics_on_a_busy_port_prints_one_line_and_fails() -> None:
    port = free_port()
    proc = start_server(port)
    try:
        result = run("metrics", "--port", str(port))
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)


def test_metrics_rejects_a_bad_port_as_usage_error() -> None:
    result = run("metrics", "--port", "70000")
    assert result.returncode == 2
    assert "--port" in result.stderr and "65535" in result.stderr
    assert_no_traceback(result)


def test_stats_reads_a_running_server_as_json_and_table() -> None:
    port = free_port()
    proc = start_server(port)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        as_json = run("stats", "--json", "--url", url)
        as_table = run("stats", "--url", url, env={"COLUMNS": "120"})
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["requests"]["total"] == 0
    assert data["source"] == url
    assert "pip install 'tinyllm[gpu]'" in data["gpu_status"]
    assert as_table.returncode == 0
    assert "requests" in as_table.stdout and "no GPU figures" in as_table.stdout


def test_stats_with_nothing_listening_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = run("stats", "--url", url)
    assert result.returncode == 1
    assert url in result.stderr and "tinyllm metrics" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stats", "--url", "ftp://x"], "http://"),
        (["stats", "--namespace", "9bad"], "not a valid metric prefix"),
        (["nonsense"], "nonsense"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert_no_traceback(result)
