"""Per-call cost of emitting an event, by handler set, next to what it is made of.

Run with ``make bench`` (or ``python benchmarks/bench_events.py``). Cases:

* ``emit_event``, default handlers (LogEventHandler + MetricEventHandler), the log line
  written (JSON, to /dev/null so the terminal is not measured);
* the same with the log level above the event's severity (the line is filtered out,
  the counter still counts);
* ``emit_event`` with only a ``BufferedEventHandler`` (ring buffer, full, so every
  append also evicts);
* ``emit_event`` with no handler: argument checks, redaction of ``data``, the trace
  context lookup and building the ``Event``;
* ``Event(...)`` built directly (id, timestamp, dataclass);
* for reference, the same log line (a fresh event id each time, like an event's)
  written directly with ``tinyllm.logging``.

Every ``emit_event`` call is the observability guide's example: category EXECUTION, severity INFO,
``data={"node_id": "entry", "duration_ms": 123}``, two tags; no span is active.

Method: timeit loops (the garbage collector off while one runs); each case is timed
``--repeats`` times (default 7) over N calls, N chosen so one timing lasts about
``--target-ms``; the cases' repeats are interleaved (rotated each round) so machine
drift hits them alike, and the MEDIAN per-call time is reported in microseconds. The
script only reports; it exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import timeit
from dataclasses import dataclass
from importlib.metadata import version
from random import getrandbits
from time import perf_counter
from typing import Any

from tinyllm.events import (
    BufferedEventHandler,
    Event,
    EventCategory,
    EventSeverity,
    emit_event,
    get_event_emitter,
    reset_event_emitter,
)
from tinyllm.logging import configure_logging, get_logger, reset_logging
from tinyllm.metrics import reset_metrics_collector

EMIT = (
    "emit_event('node.execution.completed', EXECUTION, INFO, "
    "'Node execution completed successfully', data=DATA, tags=TAGS)"
)


@dataclass
class Case:
    name: str
    stmt: str
    setup: str = "pass"


def build_names() -> dict[str, Any]:
    reset_metrics_collector()
    reset_event_emitter()
    emitter = get_event_emitter()
    buffer = BufferedEventHandler(max_size=1000)
    logger = get_logger("tinyllm.events")

    def use(handlers: list[Any], level: str | None) -> None:
        # Runs in each timing's setup: the cases share the process-wide emitter and
        # logging configuration, so each puts back what it needs before it is timed.
        emitter.handlers[:] = handlers
        if level is not None:
            configure_logging(log_level=level, log_format="json", log_file=os.devnull)

    return {
        "emit_event": emit_event,
        "Event": Event,
        "EXECUTION": EventCategory.EXECUTION,
        "INFO": EventSeverity.INFO,
        "DATA": {"node_id": "entry", "duration_ms": 123},
        "TAGS": ["execution", "success"],
        "DEFAULT": list(emitter.handlers),
        "BUFFER": [buffer],
        "NONE": [],
        "use": use,
        "logger": logger,
        "getrandbits": getrandbits,
    }


CASES = [
    Case("emit_event, Log + Metric handlers, line written", EMIT, "use(DEFAULT, 'info')"),
    Case("emit_event, Log + Metric handlers, below log level", EMIT,
         "use(DEFAULT, 'warning')"),
    Case("emit_event, BufferedEventHandler only", EMIT, "use(BUFFER, None)"),
    Case("emit_event, no handlers", EMIT, "use(NONE, None)"),
    Case("Event(...) alone",
         "Event('node.execution.completed', EXECUTION, INFO, 'Node execution completed', "
         "DATA, TAGS)"),
    Case("reference: the same log line via tinyllm.logging",
         "logger.info('Node execution completed successfully', "
         "event_type='node.execution.completed', category='execution', "
         "event_id=format(getrandbits(128), '032x'), data=DATA, tags=TAGS)",
         "use(NONE, 'info')"),
]


def calibrate(timer: timeit.Timer, target_s: float) -> int:
    n = 1
    while True:
        elapsed = timer.timeit(n)
        if elapsed >= target_s / 10 or n >= 1_000_000:
            return max(1, int(n * target_s / max(elapsed, 1e-9)))
        n *= 10


def measure(cases: list[Case], names: dict[str, Any], repeats: int,
            target_s: float) -> dict[str, float]:
    timers = {c.name: timeit.Timer(c.stmt, c.setup, globals=names) for c in cases}
    counts = {}
    for name, t in timers.items():
        t.timeit(100)  # warm up: first children, caches
        counts[name] = calibrate(t, target_s)
    keys = list(timers)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            samples[k].append(timers[k].timeit(counts[k]) / counts[k])
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="timings per case (median taken)")
    p.add_argument("--target-ms", type=float, default=40.0, help="length of one timing")
    args = p.parse_args(argv)
    began = perf_counter()
    names = build_names()
    try:
        results = measure(CASES, names, args.repeats, args.target_ms / 1e3)
    finally:
        reset_logging()
        reset_event_emitter()
    print(f"tinyllm events: median of {args.repeats} interleaved timings, µs per call")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"structlog {version('structlog')}, prometheus_client {version('prometheus_client')}")
    width = max(len(c.name) for c in CASES)
    for case in CASES:
        print(f"  {case.name:<{width}}  {results[case.name] * 1e6:8.2f}")
    print(f"({perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
