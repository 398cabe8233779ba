"""What happened between two looks at the metrics: rates and quantiles over a window.

A ``Snapshot`` is one exposition's samples at one time (read from a registry in this
process, or from a scraped ``/metrics`` text); ``window(before, after)`` turns two of
them into the figures a live view shows: requests/s, error rate, latency, TTFT and
inter-token quantiles, tokens/s, active requests, queue depth, cache hit rate, spend
(USD/s, and requests whose model has no price), goodput (requests/s meeting every SLO
objective, beside all judged requests/s), totals and per model. Counters and
histograms are differenced (a counter that went down was reset: its new value is the
increase); quantiles come from the window's bucket counts with Prometheus' own
``histogram_quantile`` interpolation, so a figure here equals
``histogram_quantile(q, sum by (le) (increase(x_bucket[window])))``. Gauges are read
as they are at the end.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.metrics import MetricsCollector
    >>> reg = CollectorRegistry()
    >>> c = MetricsCollector(registry=reg)
    >>> before = Snapshot.from_registry(reg, t=0.0)
    >>> c.increment_request_count(model="m")
    >>> window(before, Snapshot.from_registry(reg, t=2.0))["totals"]["requests_per_s"]
    0.5
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.registry import RestrictedRegistry

from tinyllm.metrics.stats import Samples, histogram_quantile
from tinyllm.settings import DEFAULT_NAMESPACE

__all__ = ["BREAKERS", "FAMILIES", "Snapshot", "window"]

#: Circuit-breaker gauge values and what they mean.
BREAKERS = {0.0: "closed", 1.0: "half-open", 2.0: "open"}
_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


#: The families ``window`` reads: a snapshot of these alone is all it needs.
FAMILIES = ("requests_total", "errors_total", "cache_hits_total", "cache_misses_total",
            "request_latency_seconds", "inference_ttft_seconds",
            "inference_inter_token_latency_seconds", "tokens_input_total",
            "tokens_output_total", "active_requests", "queue_size", "circuit_breaker_state",
            "cost_usd_total", "unpriced_requests_total", "slo_requests_total",
            "slo_target_ratio")
#: The SLO outcome that counts towards goodput: meeting every objective that applies.
_GOOD = {"objective": "all", "outcome": "met"}
_JUDGED = {"objective": "all"}


class Snapshot:
    """The samples of one exposition at time ``t`` (monotonic-ish seconds)."""

    __slots__ = ("samples", "t")

    def __init__(self, samples: Samples, t: float) -> None:
        self.samples = samples
        self.t = t

    @classmethod
    def from_text(cls, text: str, namespace: str = DEFAULT_NAMESPACE,
                  t: float | None = None) -> Snapshot:
        return cls(Samples(text, namespace), time.time() if t is None else t)

    @classmethod
    def from_registry(cls, registry: CollectorRegistry, namespace: str = DEFAULT_NAMESPACE,
                      t: float | None = None,
                      families: Iterable[str] | None = None) -> Snapshot:
        """What ``registry`` holds now; only ``families`` (unprefixed names, e.g.
        ``FAMILIES``) when given, which spares collecting the rest."""
        source: CollectorRegistry | RestrictedRegistry = registry
        if families is not None:
            source = registry.restricted_registry(
                f"{namespace}_{family}{suffix}" for family in families
                for suffix in ("", "_bucket", "_count", "_sum"))
        return cls(Samples.from_registry(source, namespace), time.time() if t is None else t)

    # -- reading -----------------------------------------------------------------------
    def values(self, name: str, by: str | None = None,
               where: Mapping[str, str] | None = None) -> dict[str, float]:
        """``name``'s samples summed per value of label ``by`` (``""``: all together),
        of those whose labels match ``where`` when given."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.samples.get(name, ()):
            if where and any(labels.get(k) != v for k, v in where.items()):
                continue
            out[labels.get(by, "") if by else ""] += value
        return dict(out)

    def buckets(self, name: str, by: str | None = None) -> dict[str, dict[float, float]]:
        """``name``'s cumulative buckets (upper bound -> count) per value of ``by``."""
        out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for labels, value in self.samples.samples.get(name + "_bucket", ()):
            out[labels.get(by, "") if by else ""][float(labels["le"])] += value
        return {k: dict(v) for k, v in out.items()}


K = TypeVar("K")


def _increase(after: dict[K, float], before: dict[K, float] | None) -> dict[K, float]:
    if before is None:
        return dict(after)
    out = {}
    for key, value in after.items():
        old = before.get(key, 0.0)
        out[key] = value - old if value >= old else value  # a reset: all of it is new
    return out


def _quantiles(buckets: dict[float, float], which: tuple[str, ...]) -> dict[str, float | None]:
    return {name: histogram_quantile(_QUANTILES[name], buckets.items()) for name in which}


class _Window:
    def __init__(self, before: Snapshot | None, after: Snapshot) -> None:
        self.before, self.after = before, after
        self.seconds = after.t - before.t if before is not None else 0.0

    def increase(self, name: str, by: str | None = None,
                 where: Mapping[str, str] | None = None) -> dict[str, float]:
        return _increase(self.after.values(name, by, where),
                         self.before.values(name, by, where) if self.before is not None
                         else None)

    def rate(self, name: str, by: str | None = None,
             where: Mapping[str, str] | None = None) -> dict[str, float]:
        if self.seconds <= 0:
            return {}
        return {k: v / self.seconds for k, v in self.increase(name, by, where).items()}

    def per_s(self, value: float) -> float | None:
        """``value`` (an increase over the window) per second; None without a window."""
        return value / self.seconds if self.seconds > 0 else None

    def quantiles(self, name: str, which: tuple[str, ...],
                  by: str | None = None) -> dict[str, dict[str, float | None]]:
        after = self.after.buckets(name, by)
        before = self.before.buckets(name, by) if self.before is not None else {}
        return {key: _quantiles(_increase(bounds, before.get(key) if self.before else None),
                                which)
                for key, bounds in after.items()}


def window(before: Snapshot | None, after: Snapshot) -> dict[str, Any]:
    """The figures between ``before`` and ``after`` (``before`` None: since the start,
    with no rates). See the module docstring for how each is computed."""
    w = _Window(before, after)
    requests = w.increase("requests_total").get("", 0.0)
    errors = w.increase("errors_total").get("", 0.0)
    hits = w.increase("cache_hits_total").get("", 0.0)
    misses = w.increase("cache_misses_total").get("", 0.0)
    totals: dict[str, Any] = {
        "requests": requests,
        "requests_per_s": w.rate("requests_total").get("", 0.0 if w.seconds > 0 else None),
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "errors_per_s_by_type": w.rate("errors_total", "error_type"),
        "latency_seconds": w.quantiles("request_latency_seconds",
                                       ("p50", "p95", "p99")).get("", _empty("p50", "p95",
                                                                             "p99")),
        "ttft_seconds": w.quantiles("inference_ttft_seconds", ("p50", "p95")).get(
            "", _empty("p50", "p95")),
        "inter_token_latency_seconds": w.quantiles(
            "inference_inter_token_latency_seconds", ("p50", "p95")).get(
            "", _empty("p50", "p95")),
        "tokens_per_s": {
            "input": w.rate("tokens_input_total").get("", 0.0) if w.seconds > 0 else None,
            "output": w.rate("tokens_output_total").get("", 0.0) if w.seconds > 0 else None,
        },
        "active_requests": after.values("active_requests").get("", 0.0),
        "queue_size": after.values("queue_size").get("", 0.0),
        "cache_hit_rate": hits / (hits + misses) if hits + misses else None,
        **_spend_and_goodput(w, None)(""),
        "cost_usd_per_s_by_model": {
            model: usd for model, usd in w.rate("cost_usd_total", "model").items()
            if model not in _unpriced(after, "model")},
    }
    return {"seconds": w.seconds, "totals": totals, "models": _models(w)}


def _empty(*names: str) -> dict[str, float | None]:
    return dict.fromkeys(names)


def _unpriced(snapshot: Snapshot, by: str | None) -> set[str]:
    """The values of ``by`` whose requests were all unpriced so far: some unpriced
    requests, no spend. Their cost is unknown, so they are never shown as spending 0."""
    spent = snapshot.values("cost_usd_total", by)
    return {key for key, n in snapshot.values("unpriced_requests_total", by).items()
            if n > 0 and not spent.get(key)}


def _spend_and_goodput(w: _Window, by: str | None) -> Callable[[str], dict[str, Any]]:
    """The spend and goodput figures of one value of ``by`` (None: everything).

    Goodput is the rate of ``slo_requests_total{objective="all", outcome="met"}`` over
    the window (requests meeting every objective), beside the rate of all judged
    requests; None where no SLO applies. ``slo_target`` is the model's target (for
    everything together: the strictest of them)."""
    cost = w.increase("cost_usd_total", by)
    unpriced = w.increase("unpriced_requests_total", by)
    unknown = _unpriced(w.after, by)
    good = w.increase("slo_requests_total", by, _GOOD)
    judged = w.increase("slo_requests_total", by, _JUDGED)
    targets = w.after.values("slo_target_ratio", "model")

    def row(key: str) -> dict[str, Any]:
        slo = key in judged
        n_good, n_judged = good.get(key, 0.0), judged.get(key, 0.0)
        target = targets.get(key) if by else max(targets.values(), default=None)
        # Everything together starts at 0 spent; a model with no cost series at all
        # (counted outside the request lifecycle) has no spend figure, not 0.
        spent = None if key in unknown else cost.get(key, 0.0 if by is None else None)
        return {
            # None: the model has no price (its cost is unknown), never 0.
            "cost_usd": spent,
            "cost_usd_per_s": None if spent is None else w.per_s(spent),
            "unpriced": key in unknown,
            "unpriced_requests": unpriced.get(key, 0.0),
            "good_requests": n_good if slo else None,
            "judged_requests": n_judged if slo else None,
            "good_per_s": w.per_s(n_good) if slo else None,
            "judged_per_s": w.per_s(n_judged) if slo else None,
            "good_share": n_good / n_judged if n_judged else None,
            "slo_target": target,
        }

    return row


def _models(w: _Window) -> dict[str, dict[str, Any]]:
    requests = w.increase("requests_total", "model")
    errors = w.increase("errors_total", "model")
    latency = w.quantiles("request_latency_seconds", ("p50", "p95"), "model")
    ttft = w.quantiles("inference_ttft_seconds", ("p95",), "model")
    tokens = w.rate("tokens_output_total", "model")
    active = w.after.values("active_requests", "model")
    breakers = w.after.values("circuit_breaker_state", "model")
    names = sorted(set(requests) | set(active) | set(breakers))
    money = _spend_and_goodput(w, "model")
    out = {}
    for model in names:
        n = requests.get(model, 0.0)
        out[model] = {
            "requests": n,
            "requests_per_s": n / w.seconds if w.seconds > 0 else None,
            "error_pct": 100.0 * errors.get(model, 0.0) / n if n else None,
            "latency_p50_seconds": latency.get(model, {}).get("p50"),
            "latency_p95_seconds": latency.get(model, {}).get("p95"),
            "ttft_p95_seconds": ttft.get(model, {}).get("p95"),
            "tokens_out_per_s": tokens.get(model, 0.0) if w.seconds > 0 else None,
            "active": active.get(model, 0.0),
            "breaker": BREAKERS.get(breakers[model], str(breakers[model]))
            if model in breakers else None,
            **money(model),
        }
    return out
