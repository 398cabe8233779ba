"""`tinyllm debug ...` and the global options, as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tinyllm.metrics.catalog import CATALOG

CLI = [sys.executable, "-m", "tinyllm"]
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment minus anything that configures tinyllm or OpenTelemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYLLM_", "OTEL_"))}
    return {**env, "COLUMNS": "200", **extra}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env or clean_env())


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a process that first executes ``code`` (to set up a condition)."""
    script = f"import sys\n{code}\nsys.argv = ['tinyllm', *{list(args)!r}]\n" \
             "from tinyllm.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=clean_env())


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout


# -- inspect ----------------------------------------------------------------------------


def test_inspect_prints_every_section_of_the_seed() -> None:
    result = run("debug", "inspect")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    expected_in_order = [
        "Metrics System:",
        "  Collector: prometheus",
        "  Registry: default",
        f"  Total metrics: {len(CATALOG)}",
        "Cardinality Stats:",
        "  Total combinations: 1",
        "  Max cardinality: 1000",
        "Per-Metric Cardinality:",
        "    system_info: 1 combinations, 0 dropped",
        "Event System:",
        "  Enabled: True",
        "  Handlers: LogEventHandler, MetricEventHandler",
        "Telemetry System:",
        "  Enabled: False",
        "Logging System:",
        "  Configured: True",
        "  Processors: 8 (",
    ]
    lines = out.splitlines()
    position = 0
    for wanted in expected_in_order:
        found = next((i for i in range(position, len(lines)) if lines[i].startswith(wanted)),
                     None)
        assert found is not None, f"{wanted!r} missing (or out of order) in:\n{out}"
        position = found + 1
    assert result.stderr == ""  # nothing but the output, and the output on stdout


@pytest.mark.parametrize(
    ("component", "header"),
    [("metrics", "Metrics System:"), ("events", "Event System:"),
     ("telemetry", "Telemetry System:"), ("logs", "Logging System:")],
)
def test_inspect_one_component(component: str, header: str) -> None:
    headers = ["Metrics System:", "Event System:", "Telemetry System:", "Logging System:"]
    result = run("debug", "inspect", "--component", component)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(header)
    for other in headers:
        if other != header:
            assert other not in result.stdout
    as_json = run("debug", "inspect", "--component", component, "--json")
    assert list(json.loads(as_json.stdout)) == [component]


def test_inspect_json_is_one_object_with_every_component() -> None:
    result = run("debug", "inspect", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == ["metrics", "events", "telemetry", "logs"]
    assert data["metrics"]["total_metrics"] == len(CATALOG)
    assert data["metrics"]["collector"] == "prometheus"
    assert data["metrics"]["cardinality"]["max_cardinality"] == 1000
    assert data["metrics"]["cardinality"]["metrics"]["system_info"] == {
        "cardinality": 1, "dropped": 0}
    assert data["events"] == {"enabled": True,
                              "handlers": ["LogEventHandler", "MetricEventHandler"]}
    assert data["telemetry"]["enabled"] is False
    assert data["logs"]["configured"] is True and data["logs"]["format"] == "console"
    assert "add_trace_ids" in data["logs"]["processors"]


def test_global_options_show_in_inspect() -> None:
    logs = json.loads(run("--log-level", "DEBUG", "--log-format", "json",
                          "debug", "inspect", "-c", "logs", "--json").stdout)["logs"]
    assert (logs["level"], logs["format"]) == ("DEBUG", "json")
    assert "render_json" in logs["processors"]

    tracing = run("--tracing", "debug", "inspect", "-c", "telemetry")
    assert "  Enabled: True" in tracing.stdout and "  Exporter: console" in tracing.stdout

    otlp = json.loads(run("--otlp-endpoint", "http://127.0.0.1:4317", "debug", "inspect",
                          "-c", "telemetry", "--json").stdout)["telemetry"]
    assert otlp["enabled"] is True and otlp["exporter"] == "otlp"
    assert otlp["endpoint"] == "http://127.0.0.1:4317" and otlp["protocol"] == "grpc"

    off = json.loads(run("--no-tracing", "debug", "inspect", "-c", "telemetry",
                         "--json").stdout)["telemetry"]
    assert off["enabled"] is False


def test_environment_configures_logging_like_the_options() -> None:
    env = clean_env(TINYLLM_LOG_LEVEL="warning", TINYLLM_LOG_FORMAT="json")
    logs = json.loads(run("debug", "inspect", "-c", "logs", "--json", env=env).stdout)["logs"]
    assert (logs["level"], logs["format"]) == ("WARNING", "json")
    # The option wins over the environment.
    logs = json.loads(run("--log-level", "error", "debug", "inspect", "-c", "logs", "--json",
                          env=env).stdout)["logs"]
    assert logs["level"] == "ERROR"


# -- test-trace -------------------------------------------------------------------------


def test_test_trace_confirms_the_log_line_carries_the_trace_id() -> None:
    result = run("debug", "test-trace")
    assert result.returncode == 0, result.stderr
    trace_id = re.search(r"^Trace ID: ([0-9a-f]{32})$", result.stdout, re.M)
    assert trace_id is not None, result.stdout
    assert "Log line carried trace_id: yes" in result.stdout
    assert "Event carried trace_id: yes" in result.stdout
    assert "enabled for this test (exporter: none)" in result.stdout
    # The event's own log line went to stderr, in the same trace.
    assert f"trace_id={trace_id.group(1)}" in result.stderr
    assert_no_traceback(result)


def test_test_trace_json_and_the_span_is_flushed_at_exit() -> None:
    result = run("--tracing", "debug", "test-trace", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert HEX32.match(data["trace_id"]) and HEX16.match(data["span_id"])
    assert data["log_trace_id"] == data["trace_id"] and data["log_span_id"] == data["span_id"]
    assert data["event_trace_id"] == data["trace_id"]
    assert data["log_has_trace_id"] is True and data["event_has_trace_id"] is True
    assert (data["tracing"], data["exporter"]) == ("already enabled", "console")
    # The console exporter printed the span to stderr when the command ended: tracing
    # was shut down (flushed), and stdout stayed pure JSON.
    assert '"name": "tinyllm.debug.test_trace"' in result.stderr
    assert f'"trace_id": "0x{data["trace_id"]}"' in result.stderr


def test_test_trace_fails_when_logs_lose_the_trace_id() -> None:
    # A log pipeline that drops the trace ids: the command must notice and exit 1.
    code = ("import contextlib, tinyllm.logging as logging_\n"
            "logging_.capture_logs = lambda **kw: contextlib.nullcontext([{'event': 'x'}])")
    result = run_python(code, "debug", "test-trace")
    assert result.returncode == 1, result.stderr
    assert "Log line carried trace_id: NO" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "logs are not correlated with traces" in errors[0]
    assert_no_traceback(result)


# -- emit-event -------------------------------------------------------------------------


def test_seed_emit_event_example_works_as_written() -> None:
    result = run("debug", "emit-event", "test.event", "This is a test event",
                 "--severity", "info", "--category", "system")
    assert result.returncode == 0, result.stderr
    assert "  Event type: test.event" in result.stdout
    assert "  Message: This is a test event" in result.stdout
    assert "  Category: system" in result.stdout and "  Severity: info" in result.stdout
    # The default LogEventHandler wrote it to stderr.
    assert "This is a test event" in result.stderr and "event_type=test.event" in result.stderr
    assert_no_traceback(result)


def test_emit_event_json_with_data_tags_and_redaction() -> None:
    secret = "sk-abcdefghijklmnop123456"
    result = run("--log-format", "json", "debug", "emit-event", "user.login", "User logged in",
                 "-s", "WARNING", "-c", "Security", "--tag", "auth", "--tag", "web",
                 "--data", json.dumps({"user": "ann", "api_key": secret}), "--json")
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["event_type"] == "user.login"
    assert (event["category"], event["severity"]) == ("security", "warning")
    assert event["tags"] == ["auth", "web"]
    assert event["data"] == {"user": "ann", "api_key": "[REDACTED]"}
    assert HEX32.match(event["event_id"])
    log_line = json.loads(result.stderr.strip().splitlines()[-1])
    assert log_line["event_id"] == event["event_id"] and log_line["level"] == "warning"
    assert secret not in result.stdout + result.stderr


def test_emit_event_below_the_log_level_prints_but_does_not_log() -> None:
    result = run("--log-level", "error", "debug", "emit-event", "x", "quiet", "-s", "debug")
    assert result.returncode == 0 and "  Message: quiet" in result.stdout
    assert result.stderr == ""


# -- every error path: exit 2, one line, no traceback ---------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["debug", "emit-event", "x", "m", "--severity", "loud"],
         "--severity 'loud' is not valid; use one of: debug, info, warning, error, critical"),
        (["debug", "emit-event", "x", "m", "--category", "misc"],
         "--category 'misc' is not valid; use one of: system, execution, model, cache, "
         "security, performance, user, integration, data"),
        (["debug", "emit-event", "x", "m", "--data", "{nope"], "--data is not valid JSON"),
        (["debug", "emit-event", "x", "m", "--data", "[1, 2]"],
         "--data must be a JSON object"),
        (["debug", "emit-event", "", "m"], "event_type must not be empty"),
        (["debug", "inspect", "--component", "gpu"],
         "--component 'gpu' is not valid; use one of: metrics, events, telemetry, logs"),
        (["--log-level", "verbose", "debug", "inspect"],
         "--log-level 'verbose' is not valid; use one of: debug, info, warning, error, "
         "critical"),
        (["--log-format", "xml", "debug", "inspect"],
         "--log-format 'xml' is not valid; use one of: console, json"),
        (["--otlp-endpoint", "ftp://collector", "debug", "inspect"],
         "--otlp-endpoint 'ftp://collector' is not an http(s) URL"),
        (["--otlp-endpoint", "http://127.0.0.1:4317", "--no-tracing", "debug", "inspect"],
         "--otlp-endpoint sends spans, which --no-tracing turns off"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert result.stdout == ""
    assert_no_traceback(result)


def test_a_bad_logging_environment_variable_is_a_usage_error() -> None:
    result = run("debug", "inspect", env=clean_env(TINYLLM_LOG_FORMAT="yaml"))
    assert result.returncode == 2
    assert "TINYLLM_LOG_FORMAT='yaml' is not valid; use one of: console, json" in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result)


@pytest.mark.parametrize(
    "args",
    [["debug", "emit-event"], ["debug", "emit-event", "only-type"], ["debug", "nope"],
     ["debug", "inspect", "--unknown"]],
)
def test_typer_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_no_traceback(result)


def test_help_lists_the_commands_and_global_options() -> None:
    top = run("--help")
    for word in ("debug", "health", "--log-level", "--log-format", "--tracing",
                 "--otlp-endpoint"):
        assert word in top.stdout
    debug = run("debug", "--help")
    for command in ("inspect", "test-trace", "emit-event"):
        assert command in debug.stdout


def test_test_trace_works_whatever_the_log_level() -> None:
    result = run("--log-level", "error", "debug", "test-trace")
    assert result.returncode == 0, result.stderr
    assert "Log line carried trace_id: yes" in result.stdout


def test_bad_log_level_in_the_environment_is_reported_once() -> None:
    result = run("health", env={"TINYLLM_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TINYLLM_LOG_LEVEL" in lines[0] and "debug" in lines[0]


def test_global_options_also_work_after_the_command() -> None:
    # Seed 003 writes them after the command: `tinyllm run "..." --log-format json`.
    result = run("debug", "emit-event", "t.e", "hello", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    line = next(json.loads(x) for x in result.stderr.splitlines() if x.startswith("{"))
    assert line["event_type"] == "t.e" and line["app"] == "tinyllm"
