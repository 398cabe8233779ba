"""The built-in dashboard: ``/dashboard`` (a page) and ``/dashboard/data`` (its JSON).

A sampler thread looks at the metrics every ``INTERVAL`` seconds and keeps the last
``WINDOW`` seconds of figures in a ring buffer (so a page opened late still shows the
history): requests/s, error rate by type, latency p50/p95/p99, TTFT and inter-token
p50/p95, tokens/s in and out, active requests and queue depth, cache hit rate, spend
(USD/h, in total and per model) and goodput (requests/s meeting every SLO objective,
all judged requests/s, the share attained and the target). Each point covers one
interval; quantiles come from that interval's histogram buckets with
Prometheus' ``histogram_quantile`` interpolation (``tinyllm.metrics.window``). The data
also carries a per-model table over the last minute, the GPUs (or why there are none),
the pipeline's drop counters when non-zero, and, with a store, its recent requests and
quantiles; the spend panel (spent since start and USD/h per model, a model with no
price shown as unpriced, never as $0; per gateway key) and the SLO panel (per model:
target, the last minute's attainment and goodput, each objective since start). The
page is self-contained: uPlot (vendored, MIT) is served from the package,
nothing is fetched from outside.

``/dashboard/data`` fields (stable, ``version`` 1): ``version``, ``interval_seconds``,
``window_seconds``, ``now``, ``series`` (``t`` and one list per figure, aligned),
``models`` (rows), ``totals`` (since the server started), ``gpu`` (``gpus`` and
``reason``), ``drops`` (name -> count, non-zero only), ``store`` (null without one, else
``target``, ``recent`` and ``percentiles``), ``cost`` (``total_usd``,
``unpriced_requests``, ``models``, ``keys``), ``slo`` (``models``), ``notes``.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> routes = dashboard_routes(CollectorRegistry())
    >>> sorted(routes)
    ['/dashboard', '/dashboard/data', '/dashboard/uplot.css', '/dashboard/uplot.js']
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry

from tinyllm.http.routing import Response, Route
from tinyllm.metrics.exposition import exposition_registry
from tinyllm.metrics.stats import summarize_cost, summarize_slo
from tinyllm.metrics.window import FAMILIES, Snapshot, window
from tinyllm.settings import DEFAULT_NAMESPACE

__all__ = ["INTERVAL", "SAMPLED", "WINDOW", "History", "dashboard_routes", "history_for",
           "reset_histories"]

log = logging.getLogger("tinyllm.http")

#: The most of a core the sampler thread may take: when one read of the metrics takes
#: longer than this share of the interval, the next read waits longer.
SAMPLER_CPU_SHARE = 0.1

#: Seconds between two looks at the metrics (and between two refreshes of the page).
INTERVAL = 2.0
#: Seconds of history kept and charted.
WINDOW = 900.0
_MINUTE = 60.0
# The series the page charts, each from window()'s totals.
_SERIES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "requests_per_s": lambda t: t["requests_per_s"],
    "error_rate": lambda t: t["error_rate"],
    "latency_p50": lambda t: t["latency_seconds"]["p50"],
    "latency_p95": lambda t: t["latency_seconds"]["p95"],
    "latency_p99": lambda t: t["latency_seconds"]["p99"],
    "ttft_p50": lambda t: t["ttft_seconds"]["p50"],
    "ttft_p95": lambda t: t["ttft_seconds"]["p95"],
    "itl_p50": lambda t: t["inter_token_latency_seconds"]["p50"],
    "itl_p95": lambda t: t["inter_token_latency_seconds"]["p95"],
    "tokens_in_per_s": lambda t: t["tokens_per_s"]["input"],
    "tokens_out_per_s": lambda t: t["tokens_per_s"]["output"],
    "active_requests": lambda t: t["active_requests"],
    "queue_size": lambda t: t["queue_size"],
    "cache_hit_rate": lambda t: t["cache_hit_rate"],
    "cost_usd_per_h": lambda t: _per_hour(t["cost_usd_per_s"]),
    "good_per_s": lambda t: t["good_per_s"],
    "judged_per_s": lambda t: t["judged_per_s"],
    "slo_attainment": lambda t: t["good_share"],
    "slo_target": lambda t: t["slo_target"],
}
_DROPS = ("store_events_dropped_total", "log_records_dropped_total",
          "telemetry_export_failures_total", "event_handler_errors_total",
          "http_disconnects_total", "gateway_limit_backend_errors_total")
_GPU = ("gpu_memory_used_bytes", "gpu_utilization_percent")
# What the spend and SLO panels read besides window()'s families (summarize_cost/_slo).
_MONEY = ("gateway_key_cost_usd_total", "gateway_key_budget_remaining_usd",
          "slo_objective_seconds", "goodput_requests_per_second", "goodput_tokens_per_second")
#: Every family the dashboard reads: a sample collects these alone.
SAMPLED = (*FAMILIES, *_DROPS, *_GPU, *_MONEY)


def _per_hour(per_s: float | None) -> float | None:
    return None if per_s is None else per_s * 3600.0


class History:
    """The ring buffer behind the dashboard, filled by a daemon thread.

    ``source`` gives the registry to read each time (in multiprocess mode a fresh
    aggregate of every worker's files).
    """

    def __init__(self, source: Callable[[], CollectorRegistry],
                 namespace: str = DEFAULT_NAMESPACE, interval: float | None = None,
                 window_seconds: float | None = None) -> None:
        self._source = source
        self.namespace = namespace
        # None: the module's figures as they are now (tests shorten the interval).
        self.interval = INTERVAL if interval is None else interval
        self.window_seconds = WINDOW if window_seconds is None else window_seconds
        size = int(self.window_seconds / self.interval) + 1
        self._points: deque[tuple[float, dict[str, Any]]] = deque(maxlen=size)
        self._recent: deque[Snapshot] = deque(maxlen=int(_MINUTE / self.interval) + 1)
        self._first: Snapshot | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.errors = 0

    def start(self) -> History:
        """Start sampling (idempotent); the first sample is taken at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tinyllm-dashboard",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        while True:
            started = time.perf_counter()
            self.sample()
            took = time.perf_counter() - started
            # A read that costs more than its share of a core stretches the wait: the
            # aggregate of four workers' files with 10k series takes a second or more,
            # and read every 2 s it took most of a core from the scrapes it competes with.
            if self._stopping.wait(max(self.interval, took / SAMPLER_CPU_SHARE - took)):
                return

    def sample(self, t: float | None = None) -> None:
        """Take one look at the metrics (the thread does this every interval)."""
        try:
            snapshot = Snapshot.from_registry(self._source(), self.namespace,
                                              time.time() if t is None else t, SAMPLED)
        except Exception as exc:  # a broken collector must not end the history
            self.errors += 1
            if self.errors == 1:
                log.warning("dashboard: reading the metrics failed: %s", exc)
            return
        with self._lock:
            previous = self._recent[-1] if self._recent else None
            self._recent.append(snapshot)
            if self._first is None:
                self._first = snapshot
            if previous is not None:
                self._points.append((snapshot.t, window(previous, snapshot)["totals"]))

    def data(self) -> dict[str, Any]:
        """What ``/dashboard/data`` answers (see the module docstring)."""
        with self._lock:
            points = list(self._points)
            recent = list(self._recent)
            first = self._first
        series: dict[str, Any] = {"t": [round(t, 3) for t, _ in points]}
        for name, pick in _SERIES.items():
            series[name] = [pick(p) for _, p in points]
        types = sorted({k for _, p in points for k in p["errors_per_s_by_type"]})
        series["errors_per_s_by_type"] = {
            k: [p["errors_per_s_by_type"].get(k, 0.0) for _, p in points] for k in types}
        spenders = sorted({k for _, p in points for k in p["cost_usd_per_s_by_model"]})
        series["cost_usd_per_h_by_model"] = {
            k: [p["cost_usd_per_s_by_model"].get(k, 0.0) * 3600.0 for _, p in points]
            for k in spenders}
        latest = recent[-1] if recent else None
        models: list[dict[str, Any]] = []
        totals: dict[str, Any] = {}
        since_start: dict[str, Any] = {}
        if latest is not None:
            minute = window(recent[0] if len(recent) > 1 else None, latest)
            models = [{"model": name, **row} for name, row in minute["models"].items()]
            if first is not None:
                since_start = window(None, latest)
                totals = since_start["totals"]
        return {
            "version": 1,
            "interval_seconds": self.interval,
            "window_seconds": self.window_seconds,
            "now": time.time(),
            "series": series,
            "models": models,
            "totals": _totals(totals),
            "gpu": _gpu(latest),
            "drops": _drops(latest),
            "store": _store(),
            "cost": _cost(latest, models, since_start),
            "slo": _slo(latest, models),
            "notes": {
                "quantiles": "computed from the histograms' buckets over each interval, "
                             "as Prometheus' histogram_quantile does",
                "models": "over the last minute",
                "cost": "USD; null where the model has no price (unknown, not free)",
                "goodput": "requests meeting every SLO objective, from "
                           "slo_requests_total{objective=\"all\", outcome=\"met\"}",
            },
        }


def _totals(totals: dict[str, Any]) -> dict[str, Any]:
    if not totals:
        return {"requests": 0.0, "errors": 0.0, "error_rate": None}
    return {k: totals[k] for k in ("requests", "errors", "error_rate")}


def _cost(latest: Snapshot | None, minute: list[dict[str, Any]],
          since_start: dict[str, Any]) -> dict[str, Any]:
    """The spend panel: spent since start (None when every model is unpriced) and the
    unpriced requests; per model, spent since start and USD/h over the last minute
    (both None for a model with no price); per gateway key, spent and budget left."""
    totals = since_start.get("totals", {})
    out: dict[str, Any] = {"total_usd": totals.get("cost_usd", 0.0),
                           "unpriced_requests": totals.get("unpriced_requests", 0.0),
                           "models": [], "keys": []}
    if latest is None:
        return out
    now = {row["model"]: row for row in minute}
    # The models the lifecycle accounted for (a series of either family); a model only
    # counted through the collector's primitives has no cost at all, not a cost of 0.
    accounted = set(latest.values("cost_usd_total", "model")) | set(
        latest.values("unpriced_requests_total", "model"))
    models = []
    for name, row in since_start.get("models", {}).items():
        if name not in accounted:
            continue
        models.append({
            "model": name, "usd": row["cost_usd"], "unpriced": row["unpriced"],
            "unpriced_requests": row["unpriced_requests"],
            "usd_per_h": _per_hour(now[name]["cost_usd_per_s"]) if name in now else None,
        })
    keys = summarize_cost(latest.samples)
    return {**out, "models": models, "keys": [
        {"key": key, "usd": usd, "budget_remaining_usd":
         keys["budget_remaining_usd_by_key"].get(key)}
        for key, usd in keys["by_key_usd"].items()] + [
        {"key": key, "usd": None, "budget_remaining_usd": left}
        for key, left in keys["budget_remaining_usd_by_key"].items()
        if key not in keys["by_key_usd"]]}


def _slo(latest: Snapshot | None, minute: list[dict[str, Any]]) -> dict[str, Any]:
    """The goodput panel: per model with an SLO, its target, the last minute's goodput
    and attainment, and each objective since start (threshold, met, missed, ratio)."""
    if latest is None:
        return {"models": []}
    now = {row["model"]: row for row in minute}
    rows = []
    for name, found in summarize_slo(latest.samples)["by_model"].items():
        last = now.get(name, {})
        rows.append({
            "model": name, "target": found["target_ratio"],
            "good_per_s": last.get("good_per_s"), "judged_per_s": last.get("judged_per_s"),
            "attainment": last.get("good_share"),
            "objectives": found["objectives"],
        })
    return {"models": rows}


def _gpu(latest: Snapshot | None) -> dict[str, Any]:
    from tinyllm.metrics.gpu import gpu_status

    gpus = []
    if latest is not None:
        used = latest.values("gpu_memory_used_bytes", "gpu_id")
        util = latest.values("gpu_utilization_percent", "gpu_id")
        gpus = [{"gpu_id": gid, "used_bytes": used[gid], "utilization_percent": util.get(gid)}
                for gid in sorted(used)]
    return {"gpus": gpus, "reason": None if gpus else gpu_status().reason}


def _drops(latest: Snapshot | None) -> dict[str, float]:
    if latest is None:
        return {}
    out = {}
    for name in _DROPS:
        total = sum(latest.values(name).values())
        if total:
            out[name.removesuffix("_total")] = total
    return out


def _store() -> dict[str, Any] | None:
    from tinyllm.store.config import get_store

    db = get_store()
    if db is None:
        return None
    try:
        summary = db.get_summary(since=time.time() - WINDOW)
    except Exception as exc:  # a store that is down: the rest of the page still works
        return {"target": db.url, "error": str(exc)[:200], "recent": [], "percentiles": {}}
    recent = [{"time": e["timestamp"], "model": e["model_id"], "type": e["event_type"],
               "duration_seconds": e["duration"], "tokens": e["metadata"].get("token_count"),
               "status": _status(e["metadata"])} for e in summary["recent_events"][:20]]
    return {"target": db.url, "recent": recent,
            "percentiles": summary["overall"].get("percentiles", {}),
            "requests": summary["overall"].get("total_requests")}


def _status(metadata: Mapping[str, Any]) -> str:
    if metadata.get("status") == "cancelled":
        return "cancelled"
    if metadata.get("success") is False or metadata.get("error_type"):
        return str(metadata.get("error_type") or "error")
    return "success"


_histories: dict[int, History] = {}
_histories_lock = threading.Lock()


def history_for(registry: CollectorRegistry | None) -> History:
    """The one history of ``registry`` (None: what ``/metrics`` exposes by default),
    started on first use."""
    key = id(registry) if registry is not None else 0
    with _histories_lock:
        found = _histories.get(key)
        if found is None:
            found = _histories[key] = History(lambda: exposition_registry(registry))
    return found.start()


def reset_histories() -> None:
    """Stop and forget every history (a test seam: the next dashboard starts afresh)."""
    with _histories_lock:
        for found in _histories.values():
            found.stop()
        _histories.clear()


@cache
def _asset(name: str) -> bytes:
    return resources.files("tinyllm.http").joinpath("static", name).read_bytes()


@cache
def _page() -> bytes:
    return resources.files("tinyllm.http").joinpath("static", "dashboard.html").read_bytes()


def dashboard_routes(registry: CollectorRegistry | None = None) -> dict[str, Route]:
    """``/dashboard``, its data and its assets, over ``registry`` (default: what
    ``/metrics`` exposes). The history starts when the first of them is asked for, or
    at once for the default registry (so a page opened late has history)."""
    started: list[History] = []

    def history() -> History:
        if not started:
            started.append(history_for(registry))
        return started[0]

    if registry is None:
        history()

    def page(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        history()
        return Response(200, _page(), "text/html; charset=utf-8",
                        {"Cache-Control": "no-cache"})

    def data(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        return Response.json(history().data())

    def script(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        return Response(200, _asset("uPlot.iife.min.js"), "text/javascript; charset=utf-8",
                        {"Cache-Control": "max-age=86400"})

    def style(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        return Response(200, _asset("uPlot.min.css"), "text/css; charset=utf-8",
                        {"Cache-Control": "max-age=86400"})

    return {"/dashboard": page, "/dashboard/data": data, "/dashboard/uplot.js": script,
            "/dashboard/uplot.css": style}
