"""Summarise a Prometheus exposition into the figures ``tinyllm stats`` prints.

Works on text scraped from any tinyllm metrics endpoint (or the local registry), so a
CLI process can report on a server running elsewhere. Besides traffic, latency, tokens,
cache, breakers and GPUs, the summary carries spend (``cost``: USD in total, by model and
by gateway key; a model with no price is listed as unpriced, never as spending 0) and
the SLOs (``slo``: per model and objective, met, missed and the ratio against the
target; the goodput gauges).

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
from tinyllm.slo import OBJECTIVES

__all__ = ["Samples", "StatsUnavailable", "fetch_exposition", "histogram_quantile", "summarize",
           "summarize_cost", "summarize_slo"]


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

    def by(self, name: str, label: str, **where: str) -> dict[str, float]:
        """``name``'s samples summed per value of ``label``, of those whose labels
        match ``where`` (e.g. ``outcome="met"``)."""
        out: dict[str, float] = defaultdict(float)
        for labels, value in self.samples.get(name, ()):
            if all(labels.get(k) == v for k, v in where.items()):
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
        "cost": summarize_cost(f),
        "slo": summarize_slo(f),
    }


def summarize_cost(f: Samples) -> dict[str, Any]:
    """Spend so far (``summarize``'s ``cost``): in total, by model, by gateway key, and
    each key's budget left. A model whose requests had no price is listed under
    ``unpriced_by_model`` (its cost is unknown), never as spending 0 (its counter of
    0 is left out of ``by_model_usd`` unless some of its requests were priced).

    Example:
        >>> f = Samples('tinyllm_cost_usd_total{model="a"} 0.5\\n'
        ...             'tinyllm_cost_usd_total{model="b"} 0\\n'
        ...             'tinyllm_unpriced_requests_total{model="b"} 3\\n', "tinyllm")
        >>> cost = summarize_cost(f)
        >>> cost["total_usd"], cost["by_model_usd"], cost["unpriced_by_model"]
        (0.5, {'a': 0.5}, {'b': 3.0})
    """
    spent = f.by("cost_usd_total", "model")
    unpriced = {m: n for m, n in f.by("unpriced_requests_total", "model").items() if n}
    return {
        "total_usd": sum(spent.values()),
        "by_model_usd": {m: usd for m, usd in sorted(spent.items())
                         if usd or m not in unpriced},
        "unpriced_requests": sum(unpriced.values()),
        "unpriced_by_model": dict(sorted(unpriced.items())),
        "by_key_usd": dict(sorted(f.by("gateway_key_cost_usd_total", "key").items())),
        "budget_remaining_usd_by_key": dict(sorted(
            f.by("gateway_key_budget_remaining_usd", "key").items())),
    }


def summarize_slo(f: Samples) -> dict[str, Any]:
    """The SLO figures so far (``summarize``'s ``slo``): every model together, and per
    model its target, each objective's threshold, met / missed / ratio (and whether the
    ratio meets the target), the goodput gauges. ``by_model`` is empty without an SLO.

    Example:
        >>> slo = 'tinyllm_slo_requests_total{model="m",objective="all",outcome='
        >>> f = Samples(slo + '"met"} 9\\n' + slo + '"missed"} 1\\n'
        ...             'tinyllm_slo_target_ratio{model="m"} 0.95\\n', "tinyllm")
        >>> summarize_slo(f)["by_model"]["m"]["objectives"]["all"]
        {'threshold_seconds': None, 'met': 9.0, 'missed': 1.0, 'ratio': 0.9, 'meets_target': False}
    """
    met: dict[str, dict[str, float]] = defaultdict(dict)
    missed: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in f.samples.get("slo_requests_total", ()):
        model, objective = labels.get("model", ""), labels.get("objective", "")
        into = met if labels.get("outcome") == "met" else missed
        into[model][objective] = into[model].get(objective, 0.0) + value
    thresholds: dict[str, dict[str, float]] = defaultdict(dict)
    for labels, value in f.samples.get("slo_objective_seconds", ()):
        thresholds[labels.get("model", "")][labels.get("objective", "")] = value
    targets = f.by("slo_target_ratio", "model")
    good_requests = f.by("goodput_requests_per_second", "model")
    good_tokens = f.by("goodput_tokens_per_second", "model")
    models = sorted(set(met) | set(missed) | set(targets) | set(thresholds))
    all_met = sum(met[m].get("all", 0.0) for m in models)
    all_judged = all_met + sum(missed[m].get("all", 0.0) for m in models)
    by_model: dict[str, Any] = {}
    for model in models:
        target = targets.get(model)
        names = [*(o for o in OBJECTIVES if o in thresholds[model]
                   or o in met[model] or o in missed[model]), "all"]
        objectives: dict[str, dict[str, Any]] = {}
        for name in names:
            n_met, n_missed = met[model].get(name, 0.0), missed[model].get(name, 0.0)
            judged = n_met + n_missed
            ratio = n_met / judged if judged else None
            objectives[name] = {
                "threshold_seconds": thresholds[model].get(name),
                "met": n_met, "missed": n_missed, "ratio": ratio,
                "meets_target": None if ratio is None or target is None else ratio >= target,
            }
        by_model[model] = {
            "target_ratio": target,
            "objectives": objectives,
            "goodput_requests_per_second": good_requests.get(model),
            "goodput_tokens_per_second": good_tokens.get(model),
        }
    return {
        # Every model together, on every objective that applies ("all").
        "requests": {"met": all_met, "missed": all_judged - all_met,
                     "ratio": all_met / all_judged if all_judged else None},
        "goodput_requests_per_second": sum(good_requests.values()) if good_requests else None,
        "by_model": by_model,
    }
