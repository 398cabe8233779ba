"""Per-call cost of tinyllm's logging pipeline against bare structlog doing the same job.

Run with ``make bench`` (or ``python benchmarks/bench_logging.py``). Two cases:

1. **A JSON line.** Ours: ``configure_logging(log_format="json")``, a logger with bound
   context (``component``), ``bind_context(request_id=...)``, inside an OpenTelemetry SDK
   span, so the line carries trace ids and goes through redaction. Bare structlog: a
   filtering bound logger with structlog's own recommended production chain
   (``merge_contextvars``, ``add_log_level``, ``TimeStamper(fmt="iso", utc=True)``,
   ``JSONRenderer``), the same bound context (``bind_contextvars``), inside the same span,
   with the *same* JSON encoder as ours (stdlib ``json``, compact separators). Both write
   to the same ``/dev/null`` file object, flushing each line. Goal: ours <= 1.5x.
2. **A call below the level** (``debug`` while the level is INFO). Goal: ours <= 1.2x.

Method: each side is timed in loops of N calls (``timeit.Timer``, garbage collector off),
N chosen so one timing lasts about ``--target-ms``; the sides' repeats are interleaved
(ours, bare, then rotated) so that drift on a noisy machine hits both alike, and the
MEDIAN per-call time is reported. The script reports; it never fails on a missed goal
(exit status 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import structlog
from opentelemetry.sdk.trace import TracerProvider

from tinyllm.logging import _pipeline as pipeline
from tinyllm.logging import (
    bind_context,
    clear_context,
    configure_logging,
    get_logger,
    reset_logging,
)


def _calls_for(fn: Callable[[], Any], target_ms: float) -> int:
    n = 1
    while True:
        t = timeit.Timer(fn).timeit(n)
        if t * 1000 >= target_ms / 5 or n >= 10_000_000:
            return max(1, int(n * target_ms / max(t * 1000, 1e-6)))
        n *= 4


def compare(
    ours: Callable[[], Any], bare: Callable[[], Any], repeats: int, target_ms: float
) -> tuple[float, float]:
    """Median microseconds per call of ``ours`` and ``bare``, interleaved repeats."""
    n = _calls_for(ours, target_ms)
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    sides = [("ours", ours), ("bare", bare)]
    for r in range(repeats):
        for name, fn in sides[r % 2 :] + sides[: r % 2]:
            samples[name].append(timeit.Timer(fn).timeit(n) / n * 1e6)
    return statistics.median(samples["ours"]), statistics.median(samples["bare"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--target-ms", type=float, default=80.0)
    args = parser.parse_args()

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole run
    tracer = TracerProvider().get_tracer("bench")

    # Ours: the full pipeline, writing to the same file object as the bare logger.
    configure_logging(log_level="INFO", log_format="json")
    from tinyllm.logging._config import _SINK_LOGGER

    _SINK_LOGGER.sink = pipeline.Sink(sink, os.devnull)
    ours = get_logger("bench.executor", component="executor")
    bind_context(request_id="req-123")

    # Bare structlog: its recommended production chain, same encoder, same file.
    bare = structlog.wrap_logger(
        structlog.WriteLogger(sink),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=lambda obj, **kw: pipeline.dumps(obj)),
        ],
        wrapper_class=structlog.make_filtering_bound_logger("INFO"),
        context={"logger": "bench.executor", "component": "executor"},
    ).bind()  # the concrete logger, not the lazy proxy that re-binds on every call
    structlog.contextvars.bind_contextvars(request_id="req-123")

    def ours_line() -> None:
        ours.info("task_completed", task_id="abc123", duration_ms=123, tokens_used=45)

    def bare_line() -> None:
        bare.info("task_completed", task_id="abc123", duration_ms=123, tokens_used=45)

    def ours_filtered() -> None:
        ours.debug("task_completed", task_id="abc123")

    def bare_filtered() -> None:
        bare.debug("task_completed", task_id="abc123")

    print(f"tinyllm logging benchmark: Python {platform.python_version()}, "
          f"structlog {version('structlog')}, {platform.machine()}, "
          f"{args.repeats} interleaved repeats, median per call")
    rows = []
    with tracer.start_as_current_span("bench"):
        rows.append(("JSON line (context, trace ids, redaction)", 1.5,
                     *compare(ours_line, bare_line, args.repeats, args.target_ms)))
        rows.append(("call below the level", 1.2,
                     *compare(ours_filtered, bare_filtered, args.repeats, args.target_ms)))

    print(f"{'case':44} {'ours µs':>9} {'bare µs':>9} {'ratio':>7} {'goal':>6}  met")
    for name, goal, ours_us, bare_us in rows:
        ratio = ours_us / bare_us
        print(f"{name:44} {ours_us:9.3f} {bare_us:9.3f} {ratio:6.2f}x {goal:5.1f}x  "
              f"{'yes' if ratio <= goal else 'NO'}")

    clear_context()
    structlog.contextvars.clear_contextvars()
    reset_logging()
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
