"""The processors every log line goes through, the renderers, and where lines are written.

Each processor has structlog's signature ``(logger, method_name, event_dict) -> event_dict``
and must not block or raise: a failure inside one (an exporter's context API, a user
object whose ``__str__`` raises) must never turn a log call into an exception in the
host application.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson
from opentelemetry.trace import get_current_span
from structlog.dev import ConsoleRenderer
from structlog.exceptions import DropEvent
from structlog.processors import format_exc_info
from structlog.typing import EventDict, Processor, WrappedLogger

from tinyllm._version import __version__
from tinyllm.redaction import get_redaction_policy

APP_NAME = "tinyllm"

# structlog method names -> the level written out.
_LEVEL_NAMES = {
    "warn": "warning",
    "exception": "error",
    "fatal": "critical",
    "msg": "info",
    "failure": "error",
    "err": "error",
}


# -- reporting our own failures ------------------------------------------------------------

_reported: set[str] = set()
_count_fn: list[Callable[[str], None]] = []


def report_once(key: str, message: str) -> None:
    """Write ``message`` to stderr the first time ``key`` is seen.

    Not through the pipeline: the pipeline is what failed.
    """
    if key in _reported:
        return
    _reported.add(key)
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.write(f"tinyllm.logging: {message}\n")
                stream.flush()
                return
        except Exception:  # try the process's original stderr, then give up
            continue


def count_dropped(reason: str) -> None:
    """Count one log record left out (``log_records_dropped_total{reason}``)."""
    try:
        if not _count_fn:
            # Imported on first use: tinyllm.metrics may itself log, and importing it at
            # module level would make the two packages import each other.
            from tinyllm.metrics.collector import get_metrics_collector

            _count_fn.append(
                lambda r: get_metrics_collector().increment_log_records_dropped(r)
            )
        _count_fn[0](reason)
    except Exception as exc:
        report_once("count", f"cannot count dropped log records ({exc!r}); carrying on")


# -- processors ------------------------------------------------------------------------------


def add_log_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``level``: the method's level name (``warn`` -> ``warning``, ``exception`` -> ``error``)."""
    event_dict["level"] = _LEVEL_NAMES.get(method_name, method_name)
    return event_dict


_ts_cache: tuple[int, str] = (-1, "")


def format_timestamp(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO 8601 UTC with milliseconds: ``...T06:45:00.123Z``."""
    global _ts_cache
    sec = int(t)
    cached = _ts_cache
    if cached[0] == sec:
        prefix = cached[1]
    else:
        # strftime is the expensive part and changes once a second.
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache = (sec, prefix)
    return f"{prefix}.{int((t - sec) * 1000):03d}Z"


def add_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: now, ISO 8601 UTC with milliseconds."""
    event_dict["timestamp"] = format_timestamp(time.time())
    return event_dict


def add_app_info(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``app`` and ``version``, unless the call site set its own."""
    if "app" not in event_dict:
        event_dict["app"] = APP_NAME
    if "version" not in event_dict:
        event_dict["version"] = __version__
    return event_dict


def add_trace_ids(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` (32 hex) and ``span_id`` (16 hex) of the current OpenTelemetry span."""
    try:
        ctx = get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict["trace_id"] = format(ctx.trace_id, "032x")
            event_dict["span_id"] = format(ctx.span_id, "016x")
    except Exception as exc:  # a broken context API must not break logging
        report_once("trace", f"cannot read the current span ({exc!r}); lines carry no trace ids")
    return event_dict


def redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Everything the call site and the bound context supplied, through the redaction policy."""
    try:
        return get_redaction_policy()._redact_event(event_dict)
    except Exception as exc:
        # Fail closed: a line we could not redact is not written as it was.
        report_once("redact", f"redaction failed ({exc!r}); such lines keep only their event")
        return {"event": "[REDACTION FAILED]"}


# Attributes every LogRecord has, plus those that formatters and uvicorn add on the way
# (another handler may have formatted the record first): not "extra" fields.
_RECORD_ATTRS = frozenset(logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


def stdlib_record_info(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """For stdlib records: ``extra=`` fields, and ``logger``/``level``/``timestamp`` from it."""
    record = event_dict.pop("_record")
    event_dict.pop("_from_structlog", None)
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRS and not key.startswith("_"):
            event_dict.setdefault(key, value)
    event_dict["logger"] = record.name
    event_dict["level"] = record.levelname.lower()
    event_dict["timestamp"] = format_timestamp(record.created)
    return event_dict


# -- renderers -------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return list(obj)
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__}>"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_LENIENT = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, default=_json_default, skipkeys=True
)


# Characters that end a line for ``str.splitlines`` (and many log viewers) but that JSON
# may carry raw inside a string (orjson escapes the C0 ones, \n \r \x0b \x0c \x1c-\x1e,
# already), and lone surrogates (the standard library's encoder writes them raw; they
# have no UTF-8 form, so the line could not be written at all). Outside strings a JSON
# document is ASCII, so escaping these wherever they stand is safe, and ``\ud800`` reads
# back as the same string.
_JSON_LINE_BREAKS = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


def _escape_code(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps(event_dict: EventDict) -> str:
    """One JSON object on one line; never raises.

    orjson first (~5x faster than the standard library's encoder: a request's log line
    is the gateway's largest per-request cost after the upstream call); the standard
    library where orjson refuses (an int past 64 bits) or reads differently.
    """
    line = _dumps(event_dict)
    if _JSON_LINE_BREAKS.search(line) is not None:
        line = _JSON_LINE_BREAKS.sub(_escape_code, line)
    return line


def _dumps(event_dict: EventDict) -> str:
    try:
        return orjson.dumps(event_dict, default=_json_default,
                            option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        pass
    try:
        return _ENCODER.encode(event_dict)
    except (TypeError, ValueError):
        # Keys that are not str/int/float/bool/None (a tuple key in some nested dict).
        try:
            return _LENIENT.encode(event_dict)
        except Exception as exc:
            fallback = {"event": str(event_dict.get("event")), "render_error": repr(exc)}
            return _ENCODER.encode(fallback)


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """Renderer: the event as one line of JSON."""
    return dumps(event_dict)


class _Shown:
    """A string value shown by the console renderer as ``repr`` shows it (quoted, every
    control and invisible character escaped)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


# What ends a line for ``str.splitlines``: escaped in the rendered line, the last guard
# (a traceback, a field name, an object's repr). Values are escaped before rendering,
# control characters a terminal would obey (ESC: colours, cursor moves) included.
_CONSOLE_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in
                                      "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


_SURROGATE = re.compile("[\ud800-\udfff]")


def _one_line(text: str) -> str:
    """``text`` with its non-printable characters escaped as ``repr`` escapes them."""
    return text if text.isprintable() else repr(text)[1:-1]


class ConsoleLineRenderer:
    """Renderer: structlog's readable console line, without the constant ``app``/``version``.

    One event is one line, whatever its message and fields hold: a string with a newline,
    a carriage return, an ANSI escape or another non-printable character is shown escaped
    (``model='a\\nb'``), and a traceback is written on the same line, its line breaks as
    ``\\n``, so no value can start a line that looks like an event of its own.
    """

    processor_name = "render_console"

    def __init__(self, colors: bool) -> None:
        self.colors = colors
        self._renderer = ConsoleRenderer(colors=colors)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        event_dict.pop("app", None)
        event_dict.pop("version", None)
        for key, value in event_dict.items():
            if isinstance(value, str) and not value.isprintable():
                if key == "event":
                    event_dict[key] = _one_line(value)
                elif key not in ("exception", "stack"):
                    event_dict[key] = _Shown(value)
        try:
            line = self._renderer(logger, method_name, event_dict)
        except Exception as exc:
            report_once("console", f"console rendering failed ({exc!r}); using JSON")
            return dumps(event_dict)
        # Left now: a traceback or stack after the line, or a repr of some object.
        if line.isprintable():
            return line
        line = line.translate(_CONSOLE_LINE_BREAKS)
        if _SURROGATE.search(line) is not None:  # unwritable to a UTF-8 stream
            line = _SURROGATE.sub(_escape_code, line)
        return line


class Capture:
    """Renderer stand-in for ``capture_logs``: keeps the final event dict, writes nothing."""

    processor_name = "capture"

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        self.entries.append(dict(event_dict))
        raise DropEvent


def processor_name(proc: Processor) -> str:
    """A processor's name for ``get_logging_state()``."""
    if proc is format_exc_info:  # an ExceptionRenderer instance, known by this name
        return "format_exc_info"
    name = getattr(proc, "processor_name", None) or getattr(proc, "__name__", None)
    return str(name) if name else type(proc).__name__


# -- where lines go ---------------------------------------------------------------------------


class Sink:
    """A file we opened, or (``file=None``) whatever ``sys.stderr`` is at write time.

    Resolving stderr per line means a test's captured stderr, or a stream the host swaps
    in later, is honoured; one lock per sink keeps lines from interleaving across threads.
    """

    def __init__(self, file: IO[str] | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        self._lock = threading.Lock()

    def isatty(self) -> bool:
        stream = self.file if self.file is not None else sys.stderr
        try:
            return bool(stream.isatty())
        except Exception:
            return False

    def write(self, line: str) -> None:
        stream = self.file if self.file is not None else sys.stderr
        try:
            with self._lock:
                stream.write(line + "\n")
                stream.flush()
        except Exception as exc:
            where = self.path or "stderr"
            report_once(f"write:{where}", f"cannot write log lines to {where} ({exc!r})")
            count_dropped("write_failed")

    def close(self) -> None:
        if self.file is not None:
            try:
                with self._lock:
                    self.file.close()
            except Exception as exc:
                report_once(f"close:{self.path}", f"cannot close {self.path} ({exc!r})")


class SinkLogger:
    """The wrapped logger structlog hands rendered lines to; every level writes to the sink.

    One instance lives for the whole process and only its ``sink`` changes on
    reconfiguration, so loggers created earlier write to the new destination.
    """

    __slots__ = ("sink",)

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def msg(self, message: str) -> None:
        self.sink.write(message)

    log = debug = info = warning = warn = error = err = critical = fatal = exception = msg
    failure = msg
