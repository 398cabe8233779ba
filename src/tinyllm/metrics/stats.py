"""Summarise a Prometheus exposition into the figures ``tinyllm stats`` prints.

Works on text scraped from any tinyllm metrics endpoint (or the local registry), so a
CLI process can report on a server running elsewhere.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from tinyllm.metrics import MetricsCollector
    >>> reg = CollectorRegistry()
    >>> MetricsCollector(registry=reg).increment_request_count(model="m")
    >>> summarize(generate_latest(reg).decode())["requests"]["total"]
    1.0
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import RestrictedRegistry

from tinyllm.settings import DEFAULT_NAMESPACE

__all__ = ["Samples", "StatsUnavailable", "fetch_exposition", "histogram_quantile", "summarize"]


class StatsUnavailable(Exception):
    """The metrics endpoint could not be read; the message names the URL."""


def fetch_exposition(url: str, timeout: float = 5.0) -> str:
    """GET ``url`` and return the exposition text (raises StatsUnavailable)."""
    if not url.startswith(("http://", "https://")):
        raise StatsUnavailable(f"--url must start with http:// or https://, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise StatsUnavailable(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatsUnavailable(f"cannot reach {url}: {reason}") from None
    return body.decode("utf-8", "replace")


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative (upper bound, count) pairs."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


class Samples:
    """Samples of one exposition, looked up by unprefixed family and sample name."""

    def __init__(self, text: str, namespace: str,
                 families: Iterable[Metric] | None = None) -> None:
        self.prefix = namespace + "_"
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text) if families is None else families:
            for sample in family.samples:
                if sample.name.startswith(self.prefix):
                    name = sample.name[len(self.prefix):]
                    self.samples[name].append((dict(sample.labels), float(sample.value)))

    @classmethod
    def from_registry(cls, registry: CollectorRegistry | RestrictedRegistry,
                      namespace: str) -> Samples:
        """The samples ``registry`` would expose, read from its collectors directly
        (no text to format and parse back: several times cheaper)."""
        return cls("", namespace, registry.collect())

    def total(self, name: str) -> float:
        return sum(v for _, v in self.samples.get(name, ()))

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, ()):
            out[labels.get(label, "")] += value
        return dict(out)

    def quantile(self, q: float, histogram: str) -> float | None:
        per_bound: dict[float, float] = defaultdict(float)
        for labels, value in self.samples.get(histogram + "_bucket", ()):
            per_bound[float(labels["le"])] += value
        return histogram_quantile(q, per_bound.items())

    def mean(self, histogram: str) -> float | None:
        count = self.total(histogram + "_count")
        return self.total(histogram + "_sum") / count if count else None


def summarize(text: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The headline figures of an exposition, as a JSON-ready dict."""
    f = Samples(text, namespace)
    requests = f.total("requests_total")
    errors = f.total("errors_total")
    hits, misses = f.total("cache_hits_total"), f.total("cache_misses_total")
    breaker_names = {0.0: "closed", 1.0: "half-open", 2.0: "open"}
    gpus: list[dict[str, Any]] = [
        {
            "model": labels.get("model", ""),
            "gpu_id": labels.get("gpu_id", ""),
            "used_bytes": value,
        }
        for labels, value in f.samples.get("gpu_memory_used_bytes", ())
    ]
    util = {(lb.get("model", ""), lb.get("gpu_id", "")): v
            for lb, v in f.samples.get("gpu_utilization_percent", ())}
    reserved = {(lb.get("model", ""), lb.get("gpu_id", "")): v
                for lb, v in f.samples.get("gpu_memory_reserved_bytes", ())}
    for gpu in gpus:
        key = (str(gpu["model"]), str(gpu["gpu_id"]))
        gpu["reserved_bytes"] = reserved.get(key)
        gpu["utilization_percent"] = util.get(key)
    return {
        "namespace": namespace,
        "requests": {
            "total": requests,
            "by_model": f.by("requests_total", "model"),
            "active": f.total("active_requests"),
            "errors": errors,
            "error_rate": errors / requests if requests else None,
        },
        "latency_seconds": {
            "mean": f.mean("request_latency_seconds"),
            "p50": f.quantile(0.5, "request_latency_seconds"),
            "p95": f.quantile(0.95, "request_latency_seconds"),
        },
        "ttft_seconds": {
            "p50": f.quantile(0.5, "inference_ttft_seconds"),
            "p95": f.quantile(0.95, "inference_ttft_seconds"),
        },
        "inter_token_latency_seconds": {
            "p50": f.quantile(0.5, "inference_inter_token_latency_seconds"),
            "p95": f.quantile(0.95, "inference_inter_token_latency_seconds"),
        },
        "tokens": {
            "input": f.total("tokens_input_total"),
            "output": f.total("tokens_output_total"),
            "per_second_by_model": f.by("tokens_per_second", "model"),
        },
        "errors_by_type": f.by("errors_total", "error_type"),
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None,
        },
        "circuit_breakers": {
            model: breaker_names.get(value, str(value))
            for model, value in f.by("circuit_breaker_state", "model").items()
        },
        "gpus": gpus,
    }
