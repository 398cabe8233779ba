"""tinyllm.logging: JSON/console output, trace ids, redaction, stdlib routing, context, sampling."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from structlog.exceptions import DropEvent

import tinyllm
import tinyllm.logging as tlog
from tinyllm.logging import (
    LOG_FORMATS,
    LOG_LEVELS,
    RequestLogger,
    bind_context,
    capture_logs,
    clear_context,
    configure_log_sampling,
    configure_logging,
    get_logger,
    get_logging_state,
    get_request_logger,
    reset_logging,
    unbind_context,
)
from tinyllm.logging._sampling import LogSampler
from tinyllm.metrics import MetricsCollector
from tinyllm.redaction import REDACTED, configure_redaction, reset_redaction
from tinyllm.settings import ENV_CAPTURE_CONTENT, ENV_LOG_FILE, ENV_LOG_FORMAT, ENV_LOG_LEVEL

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ANSI = "\x1b["


@pytest.fixture(autouse=True)
def _fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (ENV_LOG_LEVEL, ENV_LOG_FORMAT, ENV_LOG_FILE, ENV_CAPTURE_CONTENT):
        monkeypatch.delenv(name, raising=False)
    reset_redaction()
    reset_logging()
    clear_context()
    yield
    reset_logging()
    clear_context()
    reset_redaction()


@pytest.fixture
def tracer() -> trace.Tracer:
    return TracerProvider().get_tracer("test")


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def dropped(collector: MetricsCollector, reason: str) -> float:
    value = collector.registry.get_sample_value(
        "tinyllm_log_records_dropped_total", {"reason": reason}
    )
    return value or 0.0


# -- the JSON line ---------------------------------------------------------------------------


def test_json_line_shape_with_trace_ids(tmp_path: Path, tracer: trace.Tracer) -> None:
    log_file = tmp_path / "nested" / "dir" / "app.log"
    configure_logging(log_level="INFO", log_format="json", log_file=str(log_file))
    logger = get_logger("tinyllm.executor", component="executor")
    bind_context(request_id="req-123", user_id="user-456")
    with tracer.start_as_current_span("my_operation") as span:
        logger.info("operation_started", task_id="abc123")
        ctx = span.get_span_context()
    logger.info("outside_span")

    inside, outside = json_lines(log_file)
    assert inside["event"] == "operation_started"
    assert inside["level"] == "info"
    assert TIMESTAMP.match(inside["timestamp"])
    assert inside["logger"] == "tinyllm.executor"
    assert inside["app"] == "tinyllm"
    assert inside["version"] == tinyllm.__version__
    assert inside["component"] == "executor"
    assert inside["request_id"] == "req-123" and inside["user_id"] == "user-456"
    assert inside["task_id"] == "abc123"
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])
    assert re.fullmatch(r"[0-9a-f]{16}", inside["span_id"])
    assert "trace_id" not in outside and "span_id" not in outside


def test_nested_spans_give_the_inner_span_id(tracer: trace.Tracer) -> None:
    with capture_logs() as logs, tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner") as inner:
            get_logger("t").info("in_inner")
        get_logger("t").info("in_outer")
    assert logs[0]["span_id"] == format(inner.get_span_context().span_id, "016x")
    assert logs[1]["span_id"] == format(outer.get_span_context().span_id, "016x")
    assert logs[0]["trace_id"] == logs[1]["trace_id"]


def test_use_span_is_enough(tracer: trace.Tracer) -> None:
    span = tracer.start_span("detached")
    with capture_logs() as logs, trace.use_span(span, end_on_exit=True):
        get_logger("t").info("x")
    assert logs[0]["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_stdlib_records_come_out_in_the_same_shape(tmp_path: Path, tracer: trace.Tracer) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(log_format="json", log_file=log_file)
    bind_context(request_id="req-1")
    with tracer.start_as_current_span("op"):
        get_logger("tinyllm.x").warning("ours")
        logging.getLogger("httpx").warning("x")
        logging.getLogger("uvicorn.error").info("started %s on %d", "server", 8000)
    ours, httpx_line, uvicorn_line = json_lines(log_file)
    assert set(httpx_line) == set(ours)
    assert httpx_line["event"] == "x" and httpx_line["logger"] == "httpx"
    assert httpx_line["level"] == "warning"
    assert TIMESTAMP.match(httpx_line["timestamp"])
    assert httpx_line["trace_id"] == ours["trace_id"] and httpx_line["request_id"] == "req-1"
    assert uvicorn_line["event"] == "started server on 8000"
    assert uvicorn_line["level"] == "info"


def test_stdlib_records_are_redacted_and_filtered_by_level(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(log_level="warning", log_format="json", log_file=log_file)
    lib = logging.getLogger("somelib")
    lib.info("below the level")
    lib.error("calling https://u:hunter2@h/?api_key=abc", extra={"password": "p", "n": 1})
    try:
        raise RuntimeError("token=abc123")
    except RuntimeError:
        lib.exception("boom")
    (line, exc_line) = json_lines(log_file)
    assert line["event"] == f"calling https://u:{REDACTED}@h/?api_key={REDACTED}"
    assert line["password"] == REDACTED and line["n"] == 1
    assert exc_line["level"] == "error"
    assert "RuntimeError: token=[REDACTED]" in exc_line["exception"]
    assert "abc123" not in exc_line["exception"]


# -- redaction in the chain -------------------------------------------------------------------


def test_every_event_is_redacted() -> None:
    with capture_logs() as logs:
        get_logger("t").info(
            "sending Bearer sk-abcdef123456",
            api_key="secret",
            headers={"Authorization": "Bearer sk-abc123", "Accept": "json"},
            prompt="Hello",
            client=type("Client", (), {"__str__": lambda self: "Client(token='abc')"})(),
        )
    (event,) = logs
    assert event["event"] == "sending Bearer [REDACTED]"
    assert event["api_key"] == REDACTED
    assert event["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert event["prompt"] == "[NOT CAPTURED: 5 chars]"
    assert event["client"] == "Client(token=[REDACTED])"


def test_bound_context_is_redacted_too() -> None:
    bind_context(access_token="t0k")
    with capture_logs() as logs:
        get_logger("t", password="p").info("x")
    assert logs[0]["access_token"] == REDACTED and logs[0]["password"] == REDACTED


def test_redaction_policy_changes_apply_without_reconfiguring() -> None:
    logger = get_logger("t")
    configure_redaction(extra_keys=["tenant"], capture_content=True)
    with capture_logs() as logs:
        logger.info("x", tenant="acme", prompt="Hello")
    assert logs[0]["tenant"] == REDACTED and logs[0]["prompt"] == "Hello"


def test_exc_info_renders_a_redacted_traceback(tmp_path: Path) -> None:
    log_file = tmp_path / "app.log"
    configure_logging(log_format="json", log_file=log_file)
    logger = get_logger("t")
    try:
        raise ValueError("bad password=hunter2")
    except ValueError as e:
        logger.error("operation_failed", error=str(e), exc_info=True)
    (line,) = json_lines(log_file)
    assert line["error"] == "bad password=[REDACTED]"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad password=[REDACTED]" in line["exception"]
    assert "hunter2" not in log_file.read_text()


# -- levels, formats, files -------------------------------------------------------------------


def test_below_level_is_not_written_and_level_changes_reach_existing_loggers() -> None:
    logger = get_logger("t")
    child = logger.bind(k=1)
    with capture_logs() as logs:
        logger.debug("hidden")
        child.debug("hidden")
        logger.info("shown")
    assert [e["event"] for e in logs] == ["shown"]
    configure_logging(log_level="DeBuG")
    with capture_logs() as logs:
        logger.debug("now_shown")
        child.debug("child_shown")
    assert [e["event"] for e in logs] == ["now_shown", "child_shown"]
    assert logs[1]["k"] == 1 and logs[1]["level"] == "debug"
    configure_logging(log_level="error")
    with capture_logs() as logs:
        child.warning("hidden")
        child.exception("shown_as_error")
        child.critical("shown")
    assert [(e["event"], e["level"]) for e in logs] == [
        ("shown_as_error", "error"),
        ("shown", "critical"),
    ]
    assert get_logging_state()["level"] == "ERROR"


def test_level_method_names_are_normalised() -> None:
    with capture_logs() as logs:
        logger = get_logger("t")
        logger.warn("a")
        logger.msg("b")
        logger.log(logging.WARNING, "c %s", "d")
    assert [(e["event"], e["level"]) for e in logs] == [
        ("a", "warning"),
        ("b", "info"),
        ("c d", "warning"),
    ]


@pytest.mark.parametrize("bad", ["verbose", "", 10, "notset"])
def test_bad_level_lists_the_valid_ones(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"log_level=.*debug, info, warning, error, critical"):
        configure_logging(log_level=bad)


@pytest.mark.parametrize("bad", ["xml", "JSONL", 1])
def test_bad_format_lists_both(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"log_format=.*console, json"):
        configure_logging(log_format=bad)
    assert LOG_FORMATS == ("console", "json")
    assert LOG_LEVELS == ("debug", "info", "warning", "error", "critical")


def test_env_vars_are_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_LOG_LEVEL, "debug")
    monkeypatch.setenv(ENV_LOG_FORMAT, "JSON")
    monkeypatch.setenv(ENV_LOG_FILE, str(tmp_path / "env.log"))
    configure_logging()
    get_logger("t").debug("from_env")
    assert json_lines(tmp_path / "env.log")[0]["event"] == "from_env"
    state = get_logging_state()
    assert (state["level"], state["format"]) == ("DEBUG", "json")
    # An argument beats the environment.
    configure_logging(log_level="info", log_format="console", log_file=tmp_path / "arg.log")
    assert get_logging_state()["file"] == str(tmp_path / "arg.log")
    monkeypatch.setenv(ENV_LOG_LEVEL, "loud")
    with pytest.raises(ValueError, match=f"{ENV_LOG_LEVEL}='loud'"):
        configure_logging()


def test_env_at_reset_applies_and_a_bad_value_falls_back_without_raising(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinyllm.logging import _pipeline

    monkeypatch.setenv(ENV_LOG_FORMAT, "json")
    monkeypatch.setenv(ENV_LOG_LEVEL, "warning")
    reset_logging()
    state = get_logging_state()
    assert (state["format"], state["level"], state["configured"]) == ("json", "WARNING", False)
    _pipeline._reported.discard(f"env:{ENV_LOG_FORMAT}")
    monkeypatch.setenv(ENV_LOG_FORMAT, "yaml")
    reset_logging()
    assert get_logging_state()["format"] == "console"
    assert f"{ENV_LOG_FORMAT}='yaml' is not valid" in capsys.readouterr().err


def test_unopenable_log_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=re.escape(str(blocker / "app.log"))):
        configure_logging(log_file=blocker / "app.log")
    with pytest.raises(ValueError, match="cannot be opened"):
        configure_logging(log_file=tmp_path)  # a directory
    with pytest.raises(TypeError, match="log_file must be a path"):
        configure_logging(log_file=3)  # type: ignore[arg-type]
    assert get_logging_state()["configured"] is False  # a failed call changes nothing


def test_logs_go_to_stderr_never_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    get_logger("t").info("unconfigured_line", n=1)
    configure_logging(log_format="json")
    get_logger("t").info("json_line")
    logging.getLogger("lib").warning("lib_line")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert "unconfigured_line" in lines[0] and "n=1" in lines[0]
    assert json.loads(lines[1])["event"] == "json_line"
    assert json.loads(lines[2])["event"] == "lib_line"


def test_console_is_readable_and_coloured_only_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    plain, tty = io.StringIO(), Tty()
    monkeypatch.setattr(sys, "stderr", plain)
    configure_logging(log_format="console")
    get_logger("demo").info("task_started", task_id="abc123", api_key="k")
    monkeypatch.setattr(sys, "stderr", tty)
    configure_logging(log_format="console")
    get_logger("demo").info("task_started", task_id="abc123")
    line = plain.getvalue()
    assert ANSI not in line
    assert re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[info\s*\] task_started\s+\[demo\]", line)
    assert "task_id=abc123" in line and "api_key=[REDACTED]" in line
    assert "app=" not in line and "version=" not in line
    assert ANSI in tty.getvalue() and "task_started" in tty.getvalue()


def test_unconfigured_defaults_and_state() -> None:
    state = get_logging_state()
    assert state == {
        "configured": False,
        "level": "INFO",
        "format": "console",
        "file": None,
        "processors": [
            "merge_context",
            "format_exc_info",
            "redact_event",
            "add_log_level",
            "add_timestamp",
            "add_app_info",
            "add_trace_ids",
            "render_console",
        ],
        "sampling": None,
    }
    assert not any(isinstance(h, logging.Handler) and type(h).__name__ == "_StdlibHandler"
                   for h in logging.getLogger().handlers)


def test_configure_installs_one_root_handler_and_reset_removes_it(tmp_path: Path) -> None:
    root = logging.getLogger()
    before_level, before = root.level, list(root.handlers)
    configure_logging(log_level="debug", log_file=tmp_path / "a.log")
    configure_logging(log_level="warning", log_file=tmp_path / "b.log")
    added = [h for h in root.handlers if h not in before]
    assert len(added) == 1 and root.level == logging.WARNING
    logging.getLogger("lib").warning("to_b")
    assert "to_b" not in (tmp_path / "a.log").read_text()
    assert "to_b" in (tmp_path / "b.log").read_text()
    reset_logging()
    assert root.handlers == before and root.level == before_level


def test_get_logger_defaults_to_the_callers_module() -> None:
    with capture_logs() as logs:
        get_logger().info("x")
    assert logs[0]["logger"] == __name__
    with pytest.raises(TypeError, match="name must be a str"):
        get_logger(42)  # type: ignore[arg-type]


# -- never break the host ---------------------------------------------------------------------


def test_a_failing_sink_is_reported_once_counted_and_swallowed(
    tmp_path: Path, default_collector: MetricsCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinyllm.logging import _pipeline

    _pipeline._reported.discard("write:" + str(tmp_path / "app.log"))
    configure_logging(log_file=tmp_path / "app.log")
    from tinyllm.logging._config import _SINK_LOGGER

    assert _SINK_LOGGER.sink.file is not None
    _SINK_LOGGER.sink.file.close()  # the disk went away
    logger = get_logger("t")
    logger.info("a")
    logger.info("b")
    assert dropped(default_collector, "write_failed") == 2
    assert capsys.readouterr().err.count("cannot write log lines") == 1


def test_objects_whose_str_raises_do_not_break_logging() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with capture_logs() as logs:
        get_logger("t").info("x", obj=Bad())
    assert logs[0]["obj"] == "<unprintable Bad>"


# -- context ----------------------------------------------------------------------------------


def test_bind_unbind_clear() -> None:
    logger = get_logger("t")
    bind_context(request_id="req-123", user_id="user-456")
    with capture_logs() as logs:
        logger.info("processing_request")
        unbind_context("request_id", "user_id", "never_bound")
        logger.info("after_unbind")
        bind_context(a=1)
        logger.info("call_site_wins", a=2)
        clear_context()
        logger.info("after_clear")
    assert logs[0]["request_id"] == "req-123" and logs[0]["user_id"] == "user-456"
    assert "request_id" not in logs[1] and "user_id" not in logs[1]
    assert logs[2]["a"] == 2
    assert "a" not in logs[3]


def test_context_is_per_thread() -> None:
    barrier = threading.Barrier(4)
    logger = get_logger("t")
    bind_context(owner="main")

    def work(i: int) -> None:
        bind_context(worker=i)
        barrier.wait()  # all threads have bound before any logs
        logger.info("tick")

    with capture_logs() as logs:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        logger.info("main_after")
    ticks = [e for e in logs if e["event"] == "tick"]
    assert sorted(e["worker"] for e in ticks) == [0, 1, 2, 3]
    assert all("owner" not in e for e in ticks)  # a new thread starts empty
    assert logs[-1]["owner"] == "main" and "worker" not in logs[-1]


def test_context_is_per_asyncio_task() -> None:
    logger = get_logger("t")

    async def handle(i: int) -> None:
        bind_context(request_id=f"req-{i}")
        await asyncio.sleep(0)  # interleave the tasks
        logger.info("handled")
        await asyncio.sleep(0)
        logger.info("handled_again")

    async def main() -> None:
        bind_context(service="api")
        await asyncio.gather(*(handle(i) for i in range(5)))
        logger.info("parent_after")

    with capture_logs() as logs:
        asyncio.run(main())
    by_req: dict[str, int] = {}
    for e in logs[:-1]:
        assert e["service"] == "api"  # a task starts with its creator's context
        by_req[e["request_id"]] = by_req.get(e["request_id"], 0) + 1
    assert by_req == {f"req-{i}": 2 for i in range(5)}
    assert "request_id" not in logs[-1]  # what a task binds stays in the task


# -- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sample_rate": 0}, ValueError, r"sample_rate must be in \(0, 1\]"),
        ({"sample_rate": 1.5}, ValueError, r"sample_rate must be in \(0, 1\]"),
        ({"sample_rate": -0.1}, ValueError, "sample_rate"),
        ({"sample_rate": "0.5"}, TypeError, "sample_rate must be a number"),
        ({"sample_rate": True}, TypeError, "sample_rate must be a number"),
        ({"max_per_second": 0}, ValueError, "max_per_second must be a positive int"),
        ({"max_per_second": 2.5}, TypeError, "max_per_second must be a positive int"),
        ({"hash_based": 1}, TypeError, "hash_based must be True or False"),
    ],
)
def test_bad_sampling_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        configure_log_sampling(**kwargs)
    assert get_logging_state()["sampling"] is None


def test_sampling_off_means_no_sampling_processor() -> None:
    configure_log_sampling(sample_rate=0.5)
    state = get_logging_state()
    assert state["processors"][:2] == ["merge_context", "sample"]
    assert state["sampling"] == {"sample_rate": 0.5, "max_per_second": None, "hash_based": False}
    configure_log_sampling()
    assert "sample" not in get_logging_state()["processors"]
    assert get_logging_state()["sampling"] is None


def test_random_sampling_keeps_about_the_rate_and_counts_drops(
    default_collector: MetricsCollector,
) -> None:
    configure_log_sampling(sample_rate=0.1)
    logger = get_logger("t")
    with capture_logs() as logs:
        for i in range(5000):
            logger.info("tick", i=i)
        for _ in range(50):
            logger.warning("always")
            logger.error("always")
    kept = sum(1 for e in logs if e["event"] == "tick")
    assert 300 < kept < 700  # 500 expected; the bounds are > 7 standard deviations away
    assert sum(1 for e in logs if e["event"] == "always") == 100
    assert dropped(default_collector, "sampled") == 5000 - kept


def test_hash_based_sampling_is_consistent_per_request(default_collector: MetricsCollector) -> None:
    configure_log_sampling(sample_rate=0.5, hash_based=True)
    logger = get_logger("t")

    def run() -> set[str]:
        with capture_logs() as logs:
            for i in range(400):
                bind_context(request_id=f"req-{i}")
                logger.info("step")
        clear_context()
        return {e["request_id"] for e in logs}

    first, second = run(), run()
    assert first == second
    assert 120 < len(first) < 280  # about half of 400 requests
    assert dropped(default_collector, "sampled") == 2 * (400 - len(first))


def test_hash_based_sampling_uses_the_trace_id(tracer: trace.Tracer) -> None:
    configure_log_sampling(sample_rate=0.5, hash_based=True)
    logger = get_logger("t")
    decisions = []
    for _ in range(200):
        with tracer.start_as_current_span("op"), capture_logs() as logs:
            logger.info("a")
            logger.info("a")
        assert len(logs) in (0, 2)  # both lines of one trace share a fate
        decisions.append(bool(logs))
    assert 40 < sum(decisions) < 160


def test_rate_limit_caps_lines_per_second(default_collector: MetricsCollector) -> None:
    configure_log_sampling(max_per_second=5)
    logger = get_logger("t")
    with capture_logs() as logs:
        for _ in range(50):
            logger.info("burst")
        logger.error("never_limited")
    kept = sum(1 for e in logs if e["event"] == "burst")
    assert 5 <= kept <= 10  # 10 if the loop happened to straddle a second boundary
    assert logs[-1]["event"] == "never_limited"
    assert dropped(default_collector, "rate_limited") == 50 - kept


def test_stdlib_records_are_sampled_too(
    tmp_path: Path, default_collector: MetricsCollector
) -> None:
    configure_logging(log_format="json", log_file=tmp_path / "app.log")
    configure_log_sampling(max_per_second=3)
    lib = logging.getLogger("lib")
    for _ in range(20):
        lib.info("x")
    lib.warning("kept")
    lines = json_lines(tmp_path / "app.log")
    assert 3 <= len(lines) - 1 <= 6 and lines[-1]["event"] == "kept"
    assert dropped(default_collector, "rate_limited") == 20 - (len(lines) - 1)


def test_rate_limit_window_with_a_clock(default_collector: MetricsCollector) -> None:
    now = [100.0]
    sampler = LogSampler(1.0, 2, False, clock=lambda: now[0])
    keep = []
    for t in (100.0, 100.1, 100.2, 100.9, 101.0, 101.5, 101.6, 103.0):
        now[0] = t
        try:
            sampler(None, "info", {"event": "e"})
            keep.append(True)
        except DropEvent:
            keep.append(False)
    assert keep == [True, True, False, False, True, True, False, True]


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=1.0),
    method=st.sampled_from(["debug", "info", "warning", "warn", "error", "exception", "critical"]),
    event=st.text(max_size=20),
    request_id=st.one_of(st.none(), st.text(max_size=10)),
)
def test_sampling_properties(rate: float, method: str, event: str, request_id: str | None) -> None:
    sampler = LogSampler(rate, None, True)
    event_dict = {"event": event, "request_id": request_id}

    def keeps() -> bool:
        try:
            sampler(None, method, dict(event_dict))
            return True
        except DropEvent:
            return False

    first = keeps()
    assert all(keeps() == first for _ in range(3))  # hash-based: always the same answer
    if method in ("warning", "warn", "error", "exception", "critical") or rate == 1.0:
        assert first


# -- capture_logs and the request logger --------------------------------------------------------


def test_capture_logs_nests_and_restores(tmp_path: Path) -> None:
    configure_logging(log_format="json", log_file=tmp_path / "app.log")
    logger = get_logger("t")
    with capture_logs() as outer:
        logger.info("one")
        with capture_logs() as inner:
            logger.info("two")
            logging.getLogger("lib").warning("three")
        logger.info("four")
    logger.info("five")
    assert [e["event"] for e in outer] == ["one", "four"]
    assert [e["event"] for e in inner] == ["two", "three"]
    assert inner[1]["logger"] == "lib"
    assert [e["event"] for e in json_lines(tmp_path / "app.log")] == ["five"]
    assert get_logging_state()["processors"][-1] == "render_json"


def test_reconfiguring_inside_capture_keeps_capturing() -> None:
    with capture_logs() as logs:
        configure_logging(log_format="json", log_level="debug")
        get_logger("t").debug("still_captured")
    assert [e["event"] for e in logs] == ["still_captured"]
    assert get_logging_state()["processors"][-1] == "render_json"


def test_seed_request_logger_example() -> None:
    req_logger = get_request_logger()
    assert isinstance(req_logger, RequestLogger) and req_logger is get_request_logger()
    with capture_logs() as logs:
        req_logger.log_request(
            request_id="req-123",
            method="POST",
            path="/api/generate",
            headers={"Authorization": "Bearer sk-abc123"},
            body={"prompt": "Hello", "api_key": "secret"},
        )
    (event,) = logs
    assert event["event"] == "http_request" and event["logger"] == "tinyllm.http"
    assert (event["request_id"], event["method"]) == ("req-123", "POST")
    assert event["path"] == "/api/generate"
    assert event["headers"] == {"Authorization": REDACTED}
    assert event["body"] == {"prompt": "[NOT CAPTURED: 5 chars]", "api_key": REDACTED}
    assert "sk-abc123" not in json.dumps(logs)


def test_request_logger_positional_call_and_body_kinds() -> None:
    req_logger = RequestLogger()
    with capture_logs() as logs:
        req_logger.log_request(
            "r1",
            "GET",
            "/cb?code=1&access_token=abc",
            [("Cookie", "a=1"), ("X-Via", "p"), ("X-Via", "q")],
        )
        req_logger.log_request("r2", "POST", "/", body=b'{"messages": [1, 2], "password": "p"}')
        req_logger.log_request("r3", "POST", "/", body="user=ann&password=hunter2")
        req_logger.log_request("r4", "POST", "/", body="x" * 5000)
    assert logs[0]["path"] == "/cb?code=1&access_token=[REDACTED]"
    assert logs[0]["headers"] == {"Cookie": REDACTED, "X-Via": "p, q"}
    assert logs[1]["body"] == {"messages": "[NOT CAPTURED: 2 items]", "password": REDACTED}
    assert logs[2]["body"] == "user=ann&password=[REDACTED]"
    assert logs[3]["body"].endswith("...[truncated 904 chars]")


def test_request_logger_responses() -> None:
    req_logger = RequestLogger()
    with capture_logs() as logs:
        req_logger.log_response("r1", 200, duration_ms=12.5, headers={"Set-Cookie": "s=1"})
        req_logger.log_response("r2", 404)
        req_logger.log_response("r3", 503, body={"completion": "text"})
    assert [(e["status_code"], e["level"]) for e in logs] == [
        (200, "info"),
        (404, "warning"),
        (503, "error"),
    ]
    assert logs[0]["duration_ms"] == 12.5 and logs[0]["headers"] == {"Set-Cookie": REDACTED}
    assert logs[2]["body"] == {"completion": "[NOT CAPTURED: 4 chars]"}
    with pytest.raises(ValueError, match="status_code must be between 100 and 599"):
        req_logger.log_response("r", 99)
    with pytest.raises(TypeError, match="status_code must be an int"):
        req_logger.log_response("r", "200")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duration_ms"):
        req_logger.log_response("r", 200, duration_ms=-1)
    with pytest.raises(TypeError, match="headers must be a mapping"):
        req_logger.log_request("r", "GET", "/", headers=[1, 2])  # type: ignore[list-item]


def test_facade_all_is_sorted_and_complete() -> None:
    public = {n for n in vars(tlog) if not n.startswith("_") and not isinstance(
        getattr(tlog, n), type(tlog))}
    assert public <= set(tlog.__all__)
    assert all(hasattr(tlog, n) for n in tlog.__all__)
    consts = [n for n in tlog.__all__ if n.isupper()]
    classes = [n for n in tlog.__all__ if not n.isupper() and n[0].isupper()]
    rest = [n for n in tlog.__all__ if n[0].islower()]
    assert tlog.__all__ == sorted(consts) + sorted(classes) + sorted(rest)


def test_capture_logs_level_captures_below_the_configured_level() -> None:
    from tinyllm.logging import capture_logs, configure_logging, get_logger

    configure_logging(log_level="error", log_format="json")
    log = get_logger("probe")
    with capture_logs() as plain:
        log.info("filtered")
    with capture_logs(level="debug") as everything:
        log.info("kept")
    with capture_logs() as after:
        log.info("filtered again")
    assert plain == [] and after == []
    assert [e["event"] for e in everything] == ["kept"]
    with pytest.raises(ValueError, match="level"), capture_logs(level="loud"):
        pass


# -- the request log line (RequestLogObserver) -----------------------------------------


def _lifecycle_with_log_line() -> Any:
    from prometheus_client import CollectorRegistry

    from tinyllm.lifecycle import RequestLifecycle
    from tinyllm.logging import RequestLogObserver

    lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
    lc.add_observer(RequestLogObserver())
    return lc


def test_one_line_per_request_and_a_warning_per_failure() -> None:
    lc = _lifecycle_with_log_line()
    with capture_logs() as logs:
        with lc.start("m", "g", "stream", provider="ollama") as req:
            req.token(3)
        with pytest.raises(TimeoutError), lc.start("m"):
            raise TimeoutError("no answer")
    ok, failed = logs
    assert ok["event"] == "llm_request" and ok["level"] == "info"
    assert {k: ok[k] for k in ("model", "graph", "provider", "request_type", "status",
                               "output_tokens")} == {
        "model": "m", "graph": "g", "provider": "ollama", "request_type": "stream",
        "status": "success", "output_tokens": 3}
    assert failed["event"] == "llm_request_failed" and failed["level"] == "warning"
    assert failed["error_type"] == "timeout" and failed["error"] == "TimeoutError: no answer"


class _Untouchable:
    """A request whose fields must not be read: reading any raises."""

    error = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the filtered line read request.{name}")


def test_below_the_level_the_line_costs_no_field_building() -> None:
    from tinyllm.logging import RequestLogObserver

    configure_logging(log_level="warning", log_format="json")
    observer = RequestLogObserver()
    observer.on_end(_Untouchable())  # type: ignore[arg-type]
    lc = _lifecycle_with_log_line()
    with capture_logs() as logs:
        with lc.start("m"):
            pass
        with pytest.raises(ValueError), lc.start("m"):
            raise ValueError("bad")
    assert [entry["event"] for entry in logs] == ["llm_request_failed"]


def test_json_lines_take_what_orjson_refuses() -> None:
    # orjson renders most lines; the standard library takes ints past 64 bits, and
    # tuple keys are skipped rather than losing the line.
    from tinyllm.logging._pipeline import dumps

    assert json.loads(dumps({"event": "e", "n": 2**70, 1: "one"})) == {
        "event": "e", "n": 2**70, "1": "one"}
    assert json.loads(dumps({"event": "e", "d": {(1, 2): "x", "k": {1, 2}}})) == {
        "event": "e", "d": {"k": [1, 2]}}
    assert json.loads(dumps({"event": "é", "nan": float("nan")})) == {"event": "é",
                                                                      "nan": None}
