"""Configuration: the processor chain, the level, the sink, stdlib routing, test seams.

Everything is decided here, at configuration time. The chain is one list shared by every
logger (replaced in place on reconfiguration), and the level lives in the methods of one
logger class (swapped on reconfiguration): a call below the level is structlog's own
``return None``, and loggers created before ``configure_logging`` follow every change.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from structlog import make_filtering_bound_logger
from structlog._base import BoundLoggerBase
from structlog.exceptions import DropEvent
from structlog.processors import format_exc_info
from structlog.stdlib import ProcessorFormatter
from structlog.typing import FilteringBoundLogger, Processor

from tinyllm.logging._context import merge_context
from tinyllm.logging._pipeline import (
    Capture,
    ConsoleLineRenderer,
    Sink,
    SinkLogger,
    add_app_info,
    add_log_level,
    add_timestamp,
    add_trace_ids,
    processor_name,
    redact_event,
    render_json,
    report_once,
    stdlib_record_info,
)
from tinyllm.logging._sampling import LogSampler, make_sampler
from tinyllm.settings import ENV_LOG_FILE, ENV_LOG_FORMAT, ENV_LOG_LEVEL

#: Accepted ``log_format`` values.
LOG_FORMATS = ("console", "json")
#: Accepted ``log_level`` names (any case).
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _BoundLogger(BoundLoggerBase):
    """structlog's filtering bound logger, with its level methods installed at configure time.

    ``bind()`` returns ``self.__class__(...)``, so loggers derived by binding follow level
    changes too.
    """


def _install_level(level: int) -> None:
    # Copy the methods of structlog's pre-built class for this level: below-level methods
    # are its `_nop`, so a filtered call costs exactly what structlog's own does.
    for name, member in vars(make_filtering_bound_logger(level)).items():
        if not name.startswith("__"):
            setattr(_BoundLogger, name, member)


# The chains, shared by reference with every logger and the stdlib formatter.
_PROCESSORS: list[Processor] = []
_FOREIGN_PRE_CHAIN: list[Processor] = []
_STDLIB_PROCESSORS: list[Processor] = []
_SINK_LOGGER = SinkLogger(Sink())
_lock = threading.RLock()


class _State:
    configured = False
    level = "INFO"
    format = "console"
    file: str | None = None
    sampler: LogSampler | None = None
    renderer: Processor = render_json
    handler: _StdlibHandler | None = None
    saved_root_level: int | None = None
    captures: list[Capture] = []  # noqa: RUF012 - one process-wide state object


_guard = threading.local()


class _StdlibHandler(logging.Handler):
    """Root handler: stdlib records (uvicorn, httpx, ...) through the same chain and sink."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(
            ProcessorFormatter(
                foreign_pre_chain=_FOREIGN_PRE_CHAIN,
                processors=_STDLIB_PROCESSORS,
            )
        )

    def emit(self, record: logging.LogRecord) -> None:
        # A library that logs from inside our own chain (say, while we read the current
        # span) would otherwise recurse into it.
        if getattr(_guard, "active", False):
            return
        _guard.active = True
        try:
            line = self.format(record)
        except DropEvent:
            return
        except Exception as exc:
            report_once("stdlib", f"cannot format a record of {record.name!r} ({exc!r})")
            return
        finally:
            _guard.active = False
        _SINK_LOGGER.msg(line)


def _check_choice(value: Any, valid: tuple[str, ...], source: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in valid:
        raise ValueError(f"{source}={value!r} is not valid; use one of: {', '.join(valid)}")
    return value.strip().lower()


def _resolve(
    value: Any, env: str, default: str, valid: tuple[str, ...], arg: str, strict: bool,
    report: bool = True,
) -> str:
    if value is not None:
        return _check_choice(value, valid, arg)
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        return _check_choice(raw, valid, env)
    except ValueError as exc:
        if strict:
            raise
        if report:
            report_once(f"env:{env}", f"{exc}; using {default!r}")
        return default


def _open_sink(path: str | os.PathLike[str] | None) -> Sink:
    if path is None:
        return Sink()
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"log_file must be a path (str or os.PathLike) or None, got {path!r}")
    target = Path(path).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = open(target, "a", encoding="utf-8")  # noqa: SIM115 - owned by the Sink
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValueError(
            f"log_file={str(target)!r} cannot be opened for writing: {reason}"
        ) from exc
    return Sink(stream, str(target))


def _rebuild() -> None:
    """Rebuild the chains in place from ``_State`` (call with ``_lock`` held)."""
    sampling: list[Processor] = [_State.sampler] if _State.sampler is not None else []
    renderer: Processor = _State.captures[-1] if _State.captures else _State.renderer
    _PROCESSORS[:] = [
        merge_context,
        *sampling,
        format_exc_info,
        redact_event,
        add_log_level,
        add_timestamp,
        add_app_info,
        add_trace_ids,
        renderer,
    ]
    _FOREIGN_PRE_CHAIN[:] = [stdlib_record_info, merge_context, *sampling]
    _STDLIB_PROCESSORS[:] = [format_exc_info, redact_event, add_app_info, add_trace_ids, renderer]


def _apply(level: str, fmt: str, sink: Sink, *, configured: bool) -> None:
    old_sink = _SINK_LOGGER.sink
    _State.level, _State.format, _State.file = level.upper(), fmt, sink.path
    _State.renderer = render_json if fmt == "json" else ConsoleLineRenderer(colors=sink.isatty())
    _rebuild()
    _install_level(_LEVEL_NUMBERS[level])
    _SINK_LOGGER.sink = sink
    if old_sink is not sink:
        old_sink.close()
    root = logging.getLogger()
    if configured:
        if _State.handler is None:
            _State.handler = _StdlibHandler()
            _State.saved_root_level = root.level
            root.addHandler(_State.handler)
        root.setLevel(_LEVEL_NUMBERS[level])
    elif _State.handler is not None:
        root.removeHandler(_State.handler)
        if _State.saved_root_level is not None:
            root.setLevel(_State.saved_root_level)
        _State.handler = None
        _State.saved_root_level = None
    _State.configured = configured


def configure_logging(
    log_level: str | None = None,
    log_format: str | None = None,
    log_file: str | os.PathLike[str] | None = None,
) -> None:
    """Configure tinyllm's logging, and route the stdlib ``logging`` root through it.

    Args:
        log_level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``, any case;
            default ``$TINYLLM_LOG_LEVEL`` or ``INFO``.
        log_format: ``console`` (readable; coloured only on a TTY) or ``json`` (one object
            per line); default ``$TINYLLM_LOG_FORMAT`` or ``console``.
        log_file: append lines to this file (parent directories are created) instead of
            stderr; default ``$TINYLLM_LOG_FILE``, else stderr. stdout is never used: it
            belongs to command output.

    Raises ValueError naming a bad level or format (with the valid ones) or a file that
    cannot be opened. Calling it again replaces the configuration; loggers already
    created follow.

    Example:
        >>> configure_logging(log_level="INFO", log_format="json")
        >>> get_logger(__name__, component="executor").debug("not written")
        >>> reset_logging()
    """
    level = _resolve(log_level, ENV_LOG_LEVEL, "info", LOG_LEVELS, "log_level", strict=True)
    fmt = _resolve(log_format, ENV_LOG_FORMAT, "console", LOG_FORMATS, "log_format", strict=True)
    if log_file is None:
        log_file = os.environ.get(ENV_LOG_FILE, "").strip() or None
    sink = _open_sink(log_file)
    with _lock:
        _apply(level, fmt, sink, configured=True)


def configure_log_sampling(
    sample_rate: float = 1.0,
    max_per_second: int | None = None,
    hash_based: bool = False,
) -> None:
    """Sample the lines below warning; warnings and above are always written.

    Args:
        sample_rate: fraction of lines kept, in (0, 1].
        max_per_second: at most this many lines per second (after ``sample_rate``), or None.
        hash_based: keep or drop by a hash of the event name and the bound ``request_id``
            (else the current trace id) instead of at random, so a given event of a given
            request is always kept or always dropped.

    What is dropped is counted in ``tinyllm_log_records_dropped_total{reason}``
    (``sampled``, ``rate_limited``). ``configure_log_sampling()`` with no arguments turns
    sampling off, and the chain then has no sampling step at all. Applies to stdlib
    records too.

    Example:
        >>> configure_log_sampling(sample_rate=0.5, max_per_second=500, hash_based=True)
        >>> configure_log_sampling()  # off again
    """
    sampler = make_sampler(sample_rate, max_per_second, hash_based)
    with _lock:
        _State.sampler = sampler
        _rebuild()


def get_logger(name: str | None = None, **bound: Any) -> FilteringBoundLogger:
    """A structlog logger named ``name`` (default: the caller's module), with ``bound`` context.

    Works before :func:`configure_logging` (console, INFO, stderr).

    Example:
        >>> logger = get_logger(__name__, component="executor")
        >>> logger.debug("task_started", task_id="abc123")  # below INFO: nearly free
    """
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__", "tinyllm")
    elif not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    logger = _BoundLogger(_SINK_LOGGER, _PROCESSORS, {"logger": name, **bound})
    return cast(FilteringBoundLogger, logger)


def get_logging_state() -> dict[str, Any]:
    """What is configured, for ``tinyllm debug inspect --component logs``.

    Example:
        >>> sorted(get_logging_state())
        ['configured', 'file', 'format', 'level', 'processors', 'sampling']
    """
    with _lock:
        return {
            "configured": _State.configured,
            "level": _State.level,
            "format": _State.format,
            "file": _State.file,
            "processors": [processor_name(p) for p in _PROCESSORS],
            "sampling": _State.sampler.describe() if _State.sampler is not None else None,
        }


@contextmanager
def capture_logs(level: str | None = None) -> Iterator[list[dict[str, Any]]]:
    """Collect the final event dicts (redacted, with trace ids) instead of writing them.

    Like ``structlog.testing.capture_logs`` but through tinyllm's chain, level and
    sampling included; stdlib records are captured too once :func:`configure_logging`
    has run. Process-wide: meant for tests and ``tinyllm debug test-trace``. With
    ``level`` (e.g. ``"debug"``), records down to that level are captured whatever the
    configured level is; nothing reaches the sink while capturing anyway.

    Example:
        >>> with capture_logs() as logs:
        ...     get_logger("demo").info("hello", api_key="k")
        >>> logs[0]["event"], logs[0]["api_key"], logs[0]["level"]
        ('hello', '[REDACTED]', 'info')
    """
    override = None if level is None else _check_choice(level, LOG_LEVELS, "level")
    entries: list[dict[str, Any]] = []
    capture = Capture(entries)
    with _lock:
        _State.captures.append(capture)
        _rebuild()
        if override is not None:
            _install_level(_LEVEL_NUMBERS[override])
    try:
        yield entries
    finally:
        with _lock:
            _State.captures.remove(capture)
            _rebuild()
            if override is not None:
                _install_level(_LEVEL_NUMBERS[_State.level.lower()])


def reset_logging(*, report: bool = True) -> None:
    """Back to the unconfigured defaults (tests): sampling off, root handler removed.

    Example:
        >>> reset_logging()
        >>> get_logging_state()["configured"]
        False
    """
    with _lock:
        _State.sampler = None
        level = _resolve(None, ENV_LOG_LEVEL, "info", LOG_LEVELS, "log_level", strict=False,
                         report=report)
        fmt = _resolve(None, ENV_LOG_FORMAT, "console", LOG_FORMATS, "log_format",
                       strict=False, report=report)
        _apply(level, fmt, Sink(), configured=False)


# At import a bad TINYLLM_LOG_* value falls back quietly: configure_logging() rejects it
# with a clear error (the CLI always calls it), so it is reported once, where it matters.
reset_logging(report=False)
