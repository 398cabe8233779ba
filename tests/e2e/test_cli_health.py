"""`tinyllm health` as a probe runs it: one row per check, exit 0 only when healthy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.test_cli_debug import assert_no_traceback, run, run_python
from tests.support.servers import free_port


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port with a TCP listener: all ``check_exporter`` asks of a collector."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def rows(stdout: str) -> dict[str, list[str]]:
    """``name -> [status, detail]`` for each check row, plus ``overall``."""
    out: dict[str, list[str]] = {}
    for line in stdout.strip().splitlines():
        if line.startswith("overall: "):
            out["overall"] = [line.removeprefix("overall: ")]
        else:
            name, status, detail = line.split(maxsplit=2)
            out[name] = [status, detail]
    return out


def test_health_of_a_default_process_is_healthy() -> None:
    result = run("health")
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout)
    assert list(table) == ["metrics", "events", "telemetry", "overall"]
    assert table["metrics"][0] == "healthy" and "families registered" in table["metrics"][1]
    assert table["events"] == ["healthy",
                               "enabled; handlers: LogEventHandler, MetricEventHandler"]
    assert table["telemetry"] == ["healthy", "not configured"]
    assert table["overall"] == ["healthy"]
    assert result.stderr == ""


def test_health_json_is_one_object() -> None:
    result = run("health", "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["status"] == "healthy"
    assert list(data["checks"]) == ["metrics", "events", "telemetry"]
    assert all(set(c) == {"status", "detail"} for c in data["checks"].values())


def test_unreachable_collector_is_degraded_and_exits_1() -> None:
    port = free_port()
    result = run("--otlp-endpoint", f"http://127.0.0.1:{port}", "health")
    assert result.returncode == 1
    table = rows(result.stdout)
    assert table["telemetry"][0] == "degraded"
    assert f"127.0.0.1:{port} unreachable" in table["telemetry"][1]
    assert table["overall"] == ["degraded"]
    assert_no_traceback(result)
    as_json = run("--otlp-endpoint", f"http://127.0.0.1:{port}", "health", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["status"] == "degraded"


def test_reachable_collector_is_healthy(listening_port: int) -> None:
    result = run("--otlp-endpoint", f"http://127.0.0.1:{listening_port}", "health")
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result.stdout)
    assert table["telemetry"][0] == "healthy"
    assert "accepts connections" in table["telemetry"][1]


def test_a_registered_unhealthy_check_fails_the_probe() -> None:
    code = ("from tinyllm.health import register_health_check\n"
            "register_health_check('store', lambda timeout: ('unhealthy', 'database is gone'))")
    result = run_python(code, "health")
    assert result.returncode == 1
    table = rows(result.stdout)
    assert table["store"] == ["unhealthy", "database is gone"]
    assert table["overall"] == ["unhealthy"]
    assert_no_traceback(result)


def test_a_check_that_hangs_is_reported_within_the_timeout() -> None:
    code = ("import time\nfrom tinyllm.health import register_health_check\n"
            "register_health_check('model', lambda timeout: time.sleep(60))")
    result = run_python(code, "health", "--timeout", "0.5")
    assert result.returncode == 1
    assert rows(result.stdout)["model"] == ["unhealthy", "no answer within 0.5 s"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_timeout_is_a_usage_error(value: str) -> None:
    result = run("health", "--timeout", value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--timeout must be a positive number of seconds" in lines[0]
    assert result.stdout == ""


def test_a_non_numeric_timeout_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "tinyllm", "health", "--timeout", "soon"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--timeout" in result.stderr
    assert_no_traceback(result)
