"""What tracing costs: tinyllm.telemetry against raw OpenTelemetry, side by side.

Run with ``make bench`` (or ``python benchmarks/bench_tracing.py``). Three cases:

1. Tracing OFF: ``with trace_span("x")`` against OpenTelemetry's ``NoOpTracer``
   ``start_as_current_span`` and a bare ``contextlib.nullcontext()``; a ``@traced``
   call against the undecorated function. Goal: ours < 1 µs per ``with``.
2. Tracing ON (SDK TracerProvider + BatchSpanProcessor to an exporter that does
   nothing): ``with trace_span("x")`` against the raw SDK tracer's
   ``start_as_current_span``, without and with two attributes (ours redacts them).
   Goal: ours <= 1.1x raw.
3. One lifecycle request of 100 streamed tokens: tracing off (the Prometheus path alone)
   vs tracing on (GenAI span + exemplars) vs tracing on + GenAI OTel metrics (an
   in-memory reader: the SDK's aggregation on each record, no export).

Method as bench_metrics.py: ``timeit.Timer`` loops (garbage collector off while one
runs), each side timed ``--repeats`` times over N iterations (N chosen so one timing
lasts about ``--target-ms``), the sides' repeats interleaved and rotated so drift on a
noisy machine hits all alike; the MEDIAN per-call time is reported, in µs. Where sides
need different telemetry configurations (case 3), each timing is preceded by
``configure_telemetry`` for its side, outside the timed loop.

The script reports; it never fails on a missed goal (exit status 0).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracer
from prometheus_client import CollectorRegistry

from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.telemetry import (
    TelemetryConfig,
    configure_telemetry,
    get_current_trace_id,
    shutdown_telemetry,
    trace_span,
    traced,
)

TOKENS = 100


class NullExporter(SpanExporter):
    """Accepts every batch and does nothing: the export itself is not what is timed."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass
class Side:
    """One way of doing a case's work: a timeit statement, its names, and the
    telemetry configuration it needs (applied before each of its timings)."""

    stmt: str
    names: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[], None] | None = None

    def timer(self) -> timeit.Timer:
        return timeit.Timer(self.stmt, globals=self.names)


def calibrate(timer: timeit.Timer, target_s: float) -> int:
    n = 1
    while True:
        elapsed = timer.timeit(n)
        if elapsed >= target_s / 10 or n >= 10_000_000:
            return max(1, int(n * target_s / max(elapsed, 1e-9)))
        n *= 10


def measure(sides: dict[str, Side], repeats: int, target_s: float) -> dict[str, float]:
    """Median seconds per call for each side, repeats interleaved across the sides."""
    timers = {k: s.timer() for k, s in sides.items()}
    n = None
    for k, t in timers.items():
        if sides[k].setup is not None:
            sides[k].setup()  # type: ignore[misc]
        t.timeit(10)  # warm up
        found = calibrate(t, target_s)
        n = found if n is None else min(n, found)
    assert n is not None
    keys = list(timers)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            setup = sides[k].setup
            if setup is not None:
                setup()
            samples[k].append(timers[k].timeit(n) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.3f}"


def tracing_on(lifecycle: RequestLifecycle | None = None, metrics: bool = False) -> None:
    """Our tracing on: SDK + BatchSpanProcessor to NullExporter (+ GenAI metrics)."""
    configure_telemetry(
        TelemetryConfig(enable_tracing=True, exporter="none", enable_metrics=metrics),
        span_processors=[BatchSpanProcessor(NullExporter())],
        metric_readers=[InMemoryMetricReader()] if metrics else (),
        lifecycle=lifecycle,
    )


def case_off(repeats: int, target_s: float) -> dict[str, float]:
    configure_telemetry(TelemetryConfig())  # tracing off
    noop = NoOpTracer()

    @traced("f")
    def decorated() -> int:
        return 1

    def bare() -> int:
        return 1

    sides = {
        "ours: with trace_span": Side("with trace_span('x'):\n    pass",
                                      {"trace_span": trace_span}),
        "OTel NoOpTracer start_as_current_span": Side(
            "with T.start_as_current_span('x'):\n    pass", {"T": noop}),
        "contextlib.nullcontext()": Side("with nullcontext():\n    pass",
                                         {"nullcontext": contextlib.nullcontext}),
        "ours: @traced call": Side("f()", {"f": decorated}),
        "undecorated call": Side("f()", {"f": bare}),
        "ours: get_current_trace_id()": Side("g()", {"g": get_current_trace_id}),
    }
    return measure(sides, repeats, target_s)


def case_on(repeats: int, target_s: float) -> dict[str, float]:
    tracing_on()
    raw_provider = TracerProvider(shutdown_on_exit=False)
    raw_provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    raw = raw_provider.get_tracer("raw")
    attrs = {"node_id": "entry", "node_type": "router"}
    sides = {
        "ours: with trace_span": Side("with trace_span('x'):\n    pass",
                                      {"trace_span": trace_span}),
        "raw SDK start_as_current_span": Side("with T.start_as_current_span('x'):\n    pass",
                                              {"T": raw}),
        "ours: trace_span + 2 attributes": Side(
            "with trace_span('x', attributes=A):\n    pass",
            {"trace_span": trace_span, "A": attrs}),
        "raw SDK + 2 attributes": Side(
            "with T.start_as_current_span('x', attributes=A):\n    pass", {"T": raw, "A": attrs}),
    }
    try:
        return measure(sides, repeats, target_s)
    finally:
        shutdown_telemetry()
        raw_provider.shutdown()


def case_request(repeats: int, target_s: float) -> dict[str, float]:
    lifecycle = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))

    def request() -> None:
        with lifecycle.start("gemma3", request_type="stream") as req:
            token = req.token
            for _ in range(TOKENS):
                token()
            req.usage(input_tokens=12)

    sides = {
        "tracing off (Prometheus path only)": Side(
            "r()", {"r": request}, lambda: configure_telemetry(TelemetryConfig(),
                                                              lifecycle=lifecycle)),
        "tracing on (GenAI span + exemplars)": Side(
            "r()", {"r": request}, lambda: tracing_on(lifecycle)),
        "tracing on + GenAI OTel metrics": Side(
            "r()", {"r": request}, lambda: tracing_on(lifecycle, metrics=True)),
    }
    try:
        return measure(sides, repeats, target_s)
    finally:
        shutdown_telemetry()


def table(title: str, results: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"{'side':44} {'µs/call':>8}")
    print("-" * 53)
    for name, seconds in results.items():
        print(f"{name:44} {us(seconds)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timings per side (median)")
    parser.add_argument("--target-ms", type=float, default=100.0, help="length of one timing")
    args = parser.parse_args(argv)
    target_s = args.target_ms / 1000
    started = time.perf_counter()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"opentelemetry-sdk {version('opentelemetry-sdk')}, "
          f"prometheus_client {version('prometheus_client')}; "
          f"medians of {args.repeats} interleaved timings")
    missed: list[str] = []

    off = case_off(args.repeats, target_s)
    table("1. Tracing OFF (goal: ours with trace_span < 1 µs)", off)
    ours_off = off["ours: with trace_span"]
    ratio = ours_off / off["OTel NoOpTracer start_as_current_span"]
    print(f"   ours/NoOpTracer = {ratio:.2f}; ours/nullcontext = "
          f"{ours_off / off['contextlib.nullcontext()']:.2f}; @traced overhead = "
          f"{(off['ours: @traced call'] - off['undecorated call']) * 1e6:.3f} µs")
    ok = ours_off < 1e-6
    print(f"   goal < 1 µs: {'yes' if ok else 'NO'}")
    if not ok:
        missed.append("tracing off < 1 µs")

    on = case_on(args.repeats, target_s)
    table("2. Tracing ON, SDK + BatchSpanProcessor -> null exporter (goal: ours <= 1.1x raw)",
          on)
    r1 = on["ours: with trace_span"] / on["raw SDK start_as_current_span"]
    r2 = on["ours: trace_span + 2 attributes"] / on["raw SDK + 2 attributes"]
    print(f"   ours/raw = {r1:.2f} (no attributes), {r2:.2f} (2 attributes, ours redacted)")
    for label, r in (("tracing on, no attributes", r1), ("tracing on, 2 attributes", r2)):
        if r > 1.1:
            missed.append(f"{label} <= 1.1x raw")
    print(f"   goal <= 1.1x raw: {'yes' if max(r1, r2) <= 1.1 else 'NO'}")

    req = case_request(args.repeats, target_s)
    table(f"3. One lifecycle request of {TOKENS} streamed tokens", req)
    prom = req["tracing off (Prometheus path only)"]
    span_cost = req["tracing on (GenAI span + exemplars)"] - prom
    otel_metrics = req["tracing on + GenAI OTel metrics"] - req[
        "tracing on (GenAI span + exemplars)"]
    print(f"   the Prometheus path (both metric vocabularies): {prom * 1e6:.1f} µs per request")
    print(f"   + GenAI span and exemplars: {span_cost * 1e6:+.1f} µs "
          f"({span_cost / prom:+.0%} of the Prometheus path)")
    print(f"   + GenAI OTel metrics (4 histograms): {otel_metrics * 1e6:+.1f} µs "
          f"({otel_metrics / prom:+.0%} of the Prometheus path); off by default")

    print(f"\ngoals missed: {', '.join(missed) if missed else 'none'}")
    print(f"total time: {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
