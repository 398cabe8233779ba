"""Per-call cost of tinyllm's metrics against raw prometheus_client doing the same work.

Run with ``make bench`` (or ``python benchmarks/bench_metrics.py``). For every case it
times our call and the equivalent raw prometheus_client code, written two ways:

* raw naive: ``family.labels(...)`` on every call, as most code is written;
* raw tuned: the labelled children resolved once, before the timed loop.

Method: timeit-style loops (``timeit.Timer``, so the garbage collector is off while a
loop runs). Each side of a case is timed ``--repeats`` times (default 7) over N
iterations, N chosen so one timing lasts about ``--target-ms``; the sides' repeats are
interleaved (ours, naive, tuned, then rotated) so that drift on a noisy machine hits
all of them alike, and the MEDIAN per-call time is reported. Every case builds fresh
``CollectorRegistry`` objects, one for ours and one for raw, with the names, labels
and buckets of ``tinyllm.metrics.catalog.CATALOG``.

The script reports; it never fails on a missed goal (exit status 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import timeit
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import tinyllm
from tinyllm.lifecycle import RequestLifecycle, get_lifecycle
from tinyllm.logging import configure_logging
from tinyllm.metrics import (
    InferenceContext,
    MetricsCollector,
    get_metrics_collector,
    reset_metrics_collector,
    track_token_generation,
)
from tinyllm.metrics.catalog import CATALOG, Kind

NS = "tinyllm"
TOKENS = 100  # tokens per streamed request (case 2)

# -- building the raw side ----------------------------------------------------------


def raw_family(name: str, registry: CollectorRegistry) -> Any:
    """The raw prometheus_client family for catalog entry ``name``, as ours builds it."""
    spec = CATALOG[name]
    full = f"{NS}_{spec.name}"
    if spec.kind is Kind.COUNTER:
        return Counter(full, spec.help, spec.labels, registry=registry)
    if spec.kind is Kind.HISTOGRAM:
        return Histogram(
            full, spec.help, spec.labels, registry=registry, buckets=spec.buckets or ()
        )
    return Gauge(
        full,
        spec.help,
        spec.labels,
        registry=registry,
        multiprocess_mode=spec.multiprocess_mode or "all",
    )


def ours_collector() -> MetricsCollector:
    return MetricsCollector(registry=CollectorRegistry(), namespace=NS)


# -- timing --------------------------------------------------------------------------


@dataclass
class Side:
    """One way of doing a case's work: a timeit statement and the names it uses."""

    stmt: str
    names: dict[str, Any] = field(default_factory=dict)

    def timer(self) -> timeit.Timer:
        return timeit.Timer(self.stmt, globals=self.names)


def calibrate(timer: timeit.Timer, target_s: float) -> int:
    """Iterations for one timing of about ``target_s`` (like timeit's autorange)."""
    n = 1
    while True:
        elapsed = timer.timeit(n)
        if elapsed >= target_s / 10 or n >= 10_000_000:
            return max(1, int(n * target_s / max(elapsed, 1e-9)))
        n *= 10


def measure(sides: dict[str, Side], repeats: int, target_s: float) -> dict[str, float]:
    """Median seconds per call for each side, repeats interleaved across the sides."""
    timers = {k: s.timer() for k, s in sides.items()}
    for t in timers.values():  # warm up: first children, caches, branch history
        t.timeit(10)
    # One N for every side of a case: the slowest side's timing lasts about target_s.
    n = min(calibrate(t, target_s) for t in timers.values())
    keys = list(timers)
    samples: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(repeats):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]
        for k in order:
            samples[k].append(timers[k].timeit(n) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


# -- case 1: single calls ----------------------------------------------------------


def single_call_cases() -> list[tuple[str, dict[str, Side]]]:
    """(case name, sides) for every collector method against its raw call."""
    cases: list[tuple[str, dict[str, Side]]] = []

    def case(
        name: str, families: list[str], ours: str, naive: str, tuned_setup: str, tuned: str
    ) -> None:
        c = ours_collector()
        reg2 = CollectorRegistry()
        raw = {f"F{i}": raw_family(f, reg2) for i, f in enumerate(families)}
        raw["perf_counter"] = perf_counter
        tuned_names = dict(raw)
        # Resolve the children once, outside the loop. Into the globals, not timeit's
        # setup (which would make them fast locals): every side looks its names up alike.
        exec(tuned_setup, tuned_names)
        cases.append(
            (
                name,
                {
                    "ours": Side(ours, {"c": c}),
                    "naive": Side(naive, raw),
                    "tuned": Side(tuned, tuned_names),
                },
            )
        )

    case(
        "increment_request_count",
        ["requests_total"],
        "c.increment_request_count('model', 'graph', 'generate')",
        "F0.labels('model', 'graph', 'generate').inc()",
        "a = F0.labels('model', 'graph', 'generate')",
        "a.inc()",
    )
    case(
        "record_tokens (in+out)",
        ["tokens_input_total", "tokens_output_total"],
        "c.record_tokens(10, 20, 'model', 'graph')",
        "F0.labels('model', 'graph').inc(10); F1.labels('model', 'graph').inc(20)",
        "a = F0.labels('model', 'graph'); b = F1.labels('model', 'graph')",
        "a.inc(10); b.inc(20)",
    )
    case(
        "increment_error_count",
        ["errors_total"],
        "c.increment_error_count('timeout', 'model', 'graph')",
        "F0.labels('timeout', 'model', 'graph').inc()",
        "a = F0.labels('timeout', 'model', 'graph')",
        "a.inc()",
    )
    case(
        "update_circuit_breaker_state",
        ["circuit_breaker_state"],
        "c.update_circuit_breaker_state('open', 'model')",
        "F0.labels('model').set(2)",
        "a = F0.labels('model')",
        "a.set(2)",
    )
    case(
        "increment_circuit_breaker_failures",
        ["circuit_breaker_failures_total"],
        "c.increment_circuit_breaker_failures('model')",
        "F0.labels('model').inc()",
        "a = F0.labels('model')",
        "a.inc()",
    )
    case(
        "increment_cache_hit",
        ["cache_hits_total"],
        "c.increment_cache_hit('memory')",
        "F0.labels('memory').inc()",
        "a = F0.labels('memory')",
        "a.inc()",
    )
    case(
        "record_rate_limit_wait",
        ["rate_limit_wait_seconds"],
        "c.record_rate_limit_wait(0.02, 'model')",
        "F0.labels('model').observe(0.02)",
        "a = F0.labels('model')",
        "a.observe(0.02)",
    )
    case(
        "increment_memory_operation",
        ["memory_operations_total"],
        "c.increment_memory_operation('add')",
        "F0.labels('add').inc()",
        "a = F0.labels('add')",
        "a.inc()",
    )
    case(
        "with track_request_latency",
        ["active_requests", "request_latency_seconds"],
        "with c.track_request_latency('model', 'graph'):\n    pass",
        "F0.labels('model', 'graph').inc()\n"
        "s = perf_counter()\n"
        "F1.labels('model', 'graph').observe(perf_counter() - s)\n"
        "F0.labels('model', 'graph').dec()",
        "a = F0.labels('model', 'graph'); b = F1.labels('model', 'graph')",
        "a.inc()\ns = perf_counter()\nb.observe(perf_counter() - s)\na.dec()",
    )
    case(
        "with track_node_execution",
        ["node_executions_total", "node_execution_duration_seconds"],
        "with c.track_node_execution('node', 'graph'):\n    pass",
        "s = perf_counter()\n"
        "F0.labels('node', 'graph').inc()\n"
        "F1.labels('node', 'graph').observe(perf_counter() - s)",
        "a = F0.labels('node', 'graph'); b = F1.labels('node', 'graph')",
        "s = perf_counter()\na.inc()\nb.observe(perf_counter() - s)",
    )
    case(
        "with track_graph_execution",
        ["graph_executions_total", "graph_execution_duration_seconds"],
        "with c.track_graph_execution('graph'):\n    pass",
        "s = perf_counter()\n"
        "F0.labels('graph', 'success').inc()\n"
        "F1.labels('graph').observe(perf_counter() - s)",
        "a = F0.labels('graph', 'success'); b = F1.labels('graph')",
        "s = perf_counter()\na.inc()\nb.observe(perf_counter() - s)",
    )
    return cases


# -- case 2: one streamed request of TOKENS tokens ---------------------------------

_REQUEST_FAMILIES = (
    "requests_total",
    "active_requests",
    "inference_ttft_seconds",
    "inference_inter_token_latency_seconds",
    "inference_time_per_output_chunk_seconds",
    "request_latency_seconds",
    "tokens_output_total",
)


def raw_request_functions(
    tokens: int = TOKENS,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The raw calls of one streamed request: naive and hand-tuned. Each gap after the
    first token is observed per token and per chunk (one token a chunk here), as the
    catalog's two families (inter-token latency, time per output chunk) ask."""
    reg = CollectorRegistry()
    requests, active, ttft, itl, chunk, latency, tokens_out = (
        raw_family(f, reg) for f in _REQUEST_FAMILIES
    )
    m, g, t = "model", "graph", "stream"

    def naive() -> None:
        requests.labels(m, g, t).inc()
        active.labels(m, g).inc()
        start = last = perf_counter()
        for i in range(tokens):
            now = perf_counter()
            if i:
                itl.labels(m).observe(now - last)
                chunk.labels(m).observe(now - last)
            else:
                ttft.labels(m).observe(now - start)
            last = now
        latency.labels(m, g).observe(perf_counter() - start)
        active.labels(m, g).dec()
        tokens_out.labels(m, g).inc(tokens)

    # Children resolved once, before the loop of requests.
    c_req, c_act = requests.labels(m, g, t), active.labels(m, g)
    c_ttft, c_lat, c_out = ttft.labels(m), latency.labels(m, g), tokens_out.labels(m, g)
    itl_observe, chunk_observe = itl.labels(m).observe, chunk.labels(m).observe

    def tuned() -> None:
        c_req.inc()
        c_act.inc()
        start = last = perf_counter()
        for i in range(tokens):
            now = perf_counter()
            if i:
                itl_observe(now - last)
                chunk_observe(now - last)
            else:
                c_ttft.observe(now - start)
            last = now
        c_lat.observe(perf_counter() - start)
        c_act.dec()
        c_out.inc(tokens)

    return naive, tuned


def ours_request_functions(tokens: int = TOKENS) -> dict[str, Callable[[], None]]:
    """Our ways to observe the same request.

    ``lifecycle`` is a bare ``RequestLifecycle`` (no observers: metrics only).
    ``default``, ``decorator`` and ``context`` record into the process-wide collector
    (made fresh here, on prometheus_client's default REGISTRY) through the process-wide
    lifecycle, with its default observers: the request log line and the failure event.
    Whether the log line is written is the logging level's business (see run_request).
    """
    lc = RequestLifecycle(ours_collector())

    def lifecycle() -> None:
        with lc.start("model", "graph", "stream") as req:
            for _ in range(tokens):
                req.token()

    reset_metrics_collector()
    get_metrics_collector()
    default_lc = get_lifecycle()

    def default() -> None:
        with default_lc.start("model", "graph", "stream") as req:
            for _ in range(tokens):
                req.token()

    @track_token_generation(model="model", graph="graph", request_type="stream")
    def tracked() -> Any:
        for _ in range(tokens):
            yield "tok"

    def decorator() -> None:
        for _ in tracked():
            pass

    def bare() -> Any:  # the same generator, no metrics: what the decorator wraps
        for _ in range(tokens):
            yield "tok"

    def bare_generator() -> None:
        for _ in bare():
            pass

    def context() -> None:
        with InferenceContext(model="model", graph="graph", request_type="stream") as ctx:
            last = perf_counter()
            for i in range(1, tokens + 1):
                now = perf_counter()
                ctx.set_token_count(i)
                if i > 1:
                    ctx.record_inter_token_latency(now - last)
                last = now

    return {
        "lifecycle": lifecycle,
        "default": default,
        "decorator": decorator,
        "context": context,
        "bare_generator": bare_generator,
    }


# -- case 3: a scrape ------------------------------------------------------------------


def populated_registries(
    models: int, graphs: int
) -> tuple[CollectorRegistry, CollectorRegistry, int]:
    """Ours populated by real traffic; raw with the same families and label sets."""
    c = ours_collector()
    lc = RequestLifecycle(c)
    for i in range(models):
        model = f"model-{i:02d}"
        c.update_circuit_breaker_state("closed", model)
        c.record_rate_limit_wait(0.01, model)
        for j in range(graphs):
            graph = f"graph-{j}"
            c.increment_request_count(model, graph, "generate")
            with lc.start(model, graph, "stream") as req:
                req.usage(input_tokens=12)
                for _ in range(5):
                    req.token()
            with c.track_node_execution(f"node-{i % 10}", graph):
                pass
            with c.track_graph_execution(graph):
                pass
            c.increment_error_count("timeout", model, graph)
    for op in ("add", "get", "update", "delete"):
        c.increment_memory_operation(op)
    c.increment_cache_hit("memory")
    c.increment_cache_miss("memory")

    raw_reg = CollectorRegistry()
    series = 0
    for name, fam in c.families.items():
        raw = raw_family(name, raw_reg)
        for key in fam.children:
            series += 1
            child = raw.labels(*key) if key else raw
            kind = fam.spec.kind
            if kind is Kind.COUNTER:
                child.inc()
            elif kind is Kind.HISTOGRAM:
                child.observe(0.1)
            else:
                child.set(1)
    return c.registry, raw_reg, series


# -- report ----------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.3f}" if seconds < 1e-4 else f"{seconds * 1e6:9.1f}"


def verdict(ratio: float, limit: float) -> str:
    return "yes" if ratio <= limit else "NO"


HEADER = (
    f"{'case':<38} {'ours µs':>9} {'naive µs':>9} {'tuned µs':>9} "
    f"{'ours/naive':>10} {'ours/tuned':>10}  goal"
)


def machine() -> list[str]:
    return [
        f"machine:   {platform.platform()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({_cpu_model()})",
        f"python:    {platform.python_implementation()} {platform.python_version()}",
        f"packages:  prometheus_client {version('prometheus_client')}, "
        f"tinyllm {tinyllm.__version__}",
        f"date:      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_single_calls(repeats: int, target_s: float) -> list[str]:
    missed = []
    print("1. Single calls: each collector method against its raw call")
    print("   goal: ours <= 1.5x raw naive\n")
    print(HEADER)
    print("-" * len(HEADER))
    for name, sides in single_call_cases():
        try:
            t = measure(sides, repeats, target_s)
        except Exception:
            print(f"{name:<38} FAILED:\n{traceback.format_exc()}")
            continue
        rn, rt = t["ours"] / t["naive"], t["ours"] / t["tuned"]
        ok = verdict(rn, 1.5)
        if ok != "yes":
            missed.append(name)
        print(
            f"{name:<38} {us(t['ours'])} {us(t['naive'])} {us(t['tuned'])} "
            f"{rn:10.2f} {rt:10.2f}  <=1.5x naive: {ok}",
            flush=True,
        )
    return missed


def _log_line(on: bool) -> None:
    """The request log line written (INFO, JSON, to /dev/null) or filtered out (WARNING):
    either way nothing reaches the terminal, so the report stays readable."""
    configure_logging(log_level="info" if on else "warning", log_format="json",
                      log_file=os.devnull)


def run_request(repeats: int, target_s: float) -> list[str]:
    missed = []
    print(f"\n2. One streamed request of {TOKENS} tokens")
    print(f"   raw = {2 * TOKENS + 3} prometheus_client calls: requests inc, active inc, TTFT "
          f"observe, {TOKENS - 1} inter-token")
    print(f"   and {TOKENS - 1} chunk-gap observes (one token a chunk), latency observe, active "
          "dec, tokens_output")
    print("   inc(100) (naive: .labels() every call; tuned: children resolved once before the "
          "loop).")
    print("   NOTE: ours does MORE work than raw: each request also feeds the inference families")
    print("   inference_requests_total{status}, inference_request_duration_seconds, "
          "tokens_generated_total,")
    print("   tokens_per_request, tokens_per_second, average_tokens_per_minute, the per-request")
    print("   time per output token, and prices the request (cost_usd_total): 8 more updates and")
    print("   a 60 s window; the raw baseline leaves those out.")
    print("   Every path but the bare lifecycle runs the default observers: the request log line")
    print("   (tinyllm.requests, INFO) and the failure event. 'log line off': logging at WARNING,")
    print("   the line is filtered; 'log line on': INFO, one JSON line per request to /dev/null.")
    print("   goal: ours <= raw naive and ours <= 1.3x raw tuned (log line off)\n")
    naive, tuned = raw_request_functions()
    ours = ours_request_functions()
    sides = {"naive": Side("naive()", {"naive": naive}), "tuned": Side("tuned()", {"tuned": tuned})}
    for k, fn in ours.items():
        sides[k] = Side(f"{k}()", {k: fn})
    _log_line(False)
    t = measure(sides, repeats, target_s)
    _log_line(True)
    on = measure({k: sides[k] for k in ("default", "decorator", "context")}, repeats, target_s)
    _log_line(False)
    print(HEADER)
    print("-" * len(HEADER))
    rows = [
        ("lifecycle, no observers", t["lifecycle"], True),
        ("get_lifecycle(), log line off", t["default"], True),
        ("@track_token_generation, log line off", t["decorator"], True),
        ("InferenceContext, log line off", t["context"], True),
        ("get_lifecycle(), log line on", on["default"], False),
        ("@track_token_generation, log line on", on["decorator"], False),
        ("InferenceContext, log line on", on["context"], False),
    ]
    for label, ours_s, goal in rows:
        rn, rt = ours_s / t["naive"], ours_s / t["tuned"]
        ok = "yes" if rn <= 1.0 and rt <= 1.3 else "NO"
        if goal and ok != "yes":
            missed.append(label)
        verdict_text = f"<=1x naive, <=1.3x tuned: {ok}" if goal else "(no goal)"
        print(f"{label:<38} {us(ours_s)} {us(t['naive'])} {us(t['tuned'])} "
              f"{rn:10.2f} {rt:10.2f}  {verdict_text}")
    g = t["bare_generator"]
    print(f"{'  (bare generator, no metrics)':<38} {us(g)}")
    print(f"   the request log line costs {(on['default'] - t['default']) * 1e6:.1f} µs a "
          "request (structlog's JSON line: see bench_logging)")
    print(
        f"   decorator metrics overhead = decorated - bare generator = "
        f"{(t['decorator'] - g) * 1e6:.1f} µs (log line off)"
    )
    print("   InferenceContext is driven the inference-server API's way: per token the caller")
    print("   times the gap and calls set_token_count() and record_inter_token_latency().")
    missed += run_request_split(repeats, target_s)
    return missed


def run_request_split(repeats: int, target_s: float) -> list[str]:
    """Where the time goes: a request's fixed cost (0 tokens) and the cost of a token
    (the slope from 0 to TOKENS tokens), ours against raw tuned."""
    sides: dict[str, Side] = {}
    for n in (0, TOKENS):
        _, tuned = raw_request_functions(n)
        ours = ours_request_functions(n)
        sides[f"tuned{n}"] = Side("f()", {"f": tuned})
        for k in ("lifecycle", "decorator", "context"):
            sides[f"{k}{n}"] = Side("f()", {"f": ours[k]})
    t = measure(sides, repeats, target_s)
    print(f"\n   where the time goes (log line off): fixed = a request of 0 tokens, per token ="
          f" (request of {TOKENS} - fixed) / {TOKENS}")
    print(f"   {'path':<34} {'fixed µs':>9} {'per token ns':>13} {'vs tuned':>9}")
    base_fixed = t["tuned0"]
    base_token = (t[f"tuned{TOKENS}"] - base_fixed) / TOKENS
    print(f"   {'raw tuned':<34} {base_fixed * 1e6:9.2f} {base_token * 1e9:13.0f} {'1.00':>9}")
    for k, label in (("lifecycle", "lifecycle: req.token()"),
                     ("decorator", "@track_token_generation"),
                     ("context", "InferenceContext (2 calls a token)")):
        fixed = t[f"{k}0"]
        token = (t[f"{k}{TOKENS}"] - fixed) / TOKENS
        print(f"   {label:<34} {fixed * 1e6:9.2f} {token * 1e9:13.0f} "
              f"{token / base_token:9.2f}")
    print("   per token, raw tuned is one perf_counter() and two observe() on children (the gap")
    print("   per token and per chunk); ours adds only the call that carries them (req.token(),")
    print("   or the caller's two methods): the decorator's loop keeps its clock in local")
    print("   variables like the raw loop does. InferenceContext's caller-measured gaps are")
    print("   per-token figures only (no chunk): one observe() a token.")
    return []


def run_scrape(repeats: int, target_s: float, models: int, graphs: int) -> None:
    print(f"\n3. generate_latest(): our families populated with {models} models x {graphs} graphs")
    ours_reg, raw_reg, series = populated_registries(models, graphs)
    body_ours, body_raw = generate_latest(ours_reg), generate_latest(raw_reg)
    t = measure(
        {
            "ours": Side("g(r)", {"g": generate_latest, "r": ours_reg}),
            "raw": Side("g(r)", {"g": generate_latest, "r": raw_reg}),
        },
        max(3, repeats),
        target_s * 2,
    )
    print(
        f"   {series} labelled series; exposition ours {len(body_ours):,} bytes, "
        f"raw {len(body_raw):,} bytes (same families and label sets, built raw)"
    )
    print(
        f"   ours {t['ours'] * 1e3:.2f} ms, raw {t['raw'] * 1e3:.2f} ms, "
        f"ours/raw {t['ours'] / t['raw']:.2f} (no goal; shows the collector adds "
        "nothing at scrape time)"
    )
    from tinyllm.http.dashboard import INTERVAL, SAMPLED
    from tinyllm.metrics.window import Snapshot

    snap = measure(
        {
            "sampled": Side("s(r, families=f)", {"s": Snapshot.from_registry, "r": ours_reg,
                                                 "f": SAMPLED}),
            "direct": Side("s(r)", {"s": Snapshot.from_registry, "r": ours_reg}),
            "text": Side("s(g(r).decode())", {"s": Snapshot.from_text, "g": generate_latest,
                                               "r": ours_reg}),
        },
        max(3, repeats),
        target_s * 2,
    )
    print(
        f"   the dashboard's sample of the same registry: {snap['sampled'] * 1e3:.1f} ms, "
        f"{snap['sampled'] / INTERVAL * 100:.2f} % of a core at one every {INTERVAL:g} s\n"
        f"   (the families it reads only; all of them {snap['direct'] * 1e3:.1f} ms; "
        f"formatting the text and parsing it back {snap['text'] * 1e3:.1f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="timings per side (median taken)")
    p.add_argument("--target-ms", type=float, default=40.0, help="length of one timing")
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--graphs", type=int, default=4)
    args = p.parse_args(argv)
    target_s = args.target_ms / 1e3
    _log_line(False)  # a benchmark's output is its report: no log lines in between
    began = perf_counter()
    print("tinyllm metrics overhead vs raw prometheus_client")
    print("\n".join(machine()))
    print(
        f"method:    median of {args.repeats} interleaved repeats per side, "
        f"~{args.target_ms:g} ms each (timeit, GC off); fresh registries per case\n"
    )
    missed: list[str] = []
    steps: list[Callable[[], object]] = [
        lambda: missed.extend(run_single_calls(args.repeats, target_s)),
        lambda: missed.extend(run_request(args.repeats, target_s)),
        lambda: run_scrape(args.repeats, target_s, args.models, args.graphs),
    ]
    for step in steps:
        try:
            step()
        except Exception:  # report and go on: a benchmark never fails the build
            print(f"FAILED:\n{traceback.format_exc()}")
    print(f"\ngoals missed: {', '.join(missed) if missed else 'none'}")
    print(f"total time: {perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
