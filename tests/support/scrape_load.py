"""What the scrape-under-load tests share: paced instrumented traffic, scrape timing, and
counting the series of an exposition.

``Traffic`` runs lifecycle requests at a steady rate on a thread of its own (the
instrumented application); ``time_scrapes`` times sequential ``GET /metrics`` the way a
Prometheus scraper does; ``series_by_family`` counts the label sets of each family
(histogram buckets and summary quantiles are one series, as Prometheus counts them
for a family's budget).
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tinyllm.lifecycle import RequestLifecycle

__all__ = ["Traffic", "percentile", "series_by_family", "time_scrapes"]

# Sample labels that split one series into several lines.
_SPLIT = frozenset({"le", "quantile"})


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def series_by_family(text: str) -> dict[str, int]:
    """Family name -> number of distinct label sets in a text exposition."""
    seen: dict[str, set[tuple[tuple[str, str], ...]]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in _SPLIT))
            seen[family.name].add(key)
    return {name: len(keys) for name, keys in seen.items()}


def time_scrapes(url: str, count: int, timeout: float = 30.0) -> list[float]:
    """Seconds each of ``count`` sequential scrapes of ``url`` took, body read whole."""
    took = []
    with httpx.Client(timeout=timeout) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.get(url)
            response.read()
            took.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text[:200]
    return took


class Traffic:
    """Lifecycle requests at ``rate`` per second over ``models``, on a thread, until
    ``stop()``; ``achieved`` is the rate it kept up."""

    def __init__(self, lifecycle: RequestLifecycle, models: list[str], rate: float) -> None:
        self.lifecycle, self.models, self.rate = lifecycle, models, rate
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._started = 0.0
        self._ended = 0.0

    def __enter__(self) -> Traffic:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._ended = time.perf_counter()

    @property
    def achieved(self) -> float:
        end = self._ended or time.perf_counter()
        return self.done / max(end - self._started, 1e-9)

    def _run(self) -> None:
        gap = 1.0 / self.rate
        due = time.perf_counter()
        models, n = self.models, len(self.models)
        while not self._stop.is_set():
            with self.lifecycle.start(models[self.done % n], "default", "chat") as req:
                req.usage(input_tokens=12, output_tokens=3)
                req.token()
                req.token()
            self.done += 1
            due += gap
            wait = due - time.perf_counter()
            if wait > 0:
                self._stop.wait(wait)


