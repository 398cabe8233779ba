"""``MemoryCache``: LRU order, TTL, the size bound, metrics, thread safety (fake clock)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from tinyllm.cache import CachedResponse, MemoryCache
from tinyllm.metrics import MetricsCollector


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(text: str) -> CachedResponse:
    return CachedResponse(text=text, model="m", input_tokens=1, output_tokens=1,
                          finish_reason="stop", created=0.0)


def counts(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    labels = {"cache_type": "memory"}
    return (registry.get_sample_value("tinyllm_cache_hits_total", labels),
            registry.get_sample_value("tinyllm_cache_misses_total", labels))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_get_returns_what_set_stored(collector: MetricsCollector) -> None:
    cache = MemoryCache(collector=collector)
    cache.set("k", response("4"))
    hit = cache.get("k")
    assert hit is not None and hit.text == "4"


def test_hits_and_misses_feed_the_metrics(collector: MetricsCollector,
                                          registry: CollectorRegistry) -> None:
    cache = MemoryCache(collector=collector)
    assert cache.get("k") is None
    cache.set("k", response("4"))
    cache.get("k")
    cache.get("k")
    assert counts(registry) == (2.0, 1.0)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 1, 2 / 3)


def test_size_bound_evicts_the_least_recently_used(collector: MetricsCollector) -> None:
    cache = MemoryCache(max_entries=2, ttl=None, collector=collector)
    cache.set("a", response("a"))
    cache.set("b", response("b"))
    assert cache.get("a") is not None  # a is now more recent than b
    cache.set("c", response("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    stats = cache.stats()
    assert (stats["entries"], stats["max_entries"], stats["evictions"]) == (2, 2, 1)


def test_setting_an_existing_key_refreshes_it(collector: MetricsCollector,
                                              clock: FakeClock) -> None:
    cache = MemoryCache(max_entries=2, ttl=10, collector=collector, clock=clock)
    cache.set("a", response("old"))
    cache.set("b", response("b"))
    clock.now += 8
    cache.set("a", response("new"))  # new value, new expiry, most recent
    cache.set("c", response("c"))  # evicts b, not a
    clock.now += 8  # 16 s after the first set of a, 8 after the second
    hit = cache.get("a")
    assert hit is not None and hit.text == "new"
    assert cache.get("b") is None


def test_entries_expire_after_ttl(collector: MetricsCollector, registry: CollectorRegistry,
                                  clock: FakeClock) -> None:
    cache = MemoryCache(ttl=60, collector=collector, clock=clock)
    cache.set("k", response("4"))
    clock.now += 59.9
    assert cache.get("k") is not None
    clock.now += 0.1  # expiry is ttl after set, not after the last read
    assert cache.get("k") is None
    assert counts(registry) == (1.0, 1.0)
    assert cache.stats()["expirations"] == 1


def test_stats_purges_expired_entries(collector: MetricsCollector, clock: FakeClock) -> None:
    cache = MemoryCache(ttl=5, collector=collector, clock=clock)
    for key in "abc":
        cache.set(key, response(key))
    clock.now += 5
    cache.set("d", response("d"))
    stats = cache.stats()
    assert (stats["entries"], stats["expirations"], stats["ttl"]) == (1, 3, 5.0)


def test_no_ttl_means_no_expiry(collector: MetricsCollector, clock: FakeClock) -> None:
    cache = MemoryCache(ttl=None, collector=collector, clock=clock)
    cache.set("k", response("4"))
    clock.now += 10**9
    assert cache.get("k") is not None


def test_clear_keeps_the_counts(collector: MetricsCollector) -> None:
    cache = MemoryCache(collector=collector)
    cache.set("k", response("4"))
    cache.get("k")
    cache.clear()
    assert cache.get("k") is None
    stats = cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"]) == (0, 1, 1)


def test_fresh_cache_stats_have_no_hit_rate(collector: MetricsCollector) -> None:
    stats = MemoryCache(max_entries=7, ttl=30, collector=collector).stats()
    assert stats == {"cache_type": "memory", "entries": 0, "max_entries": 7, "ttl": 30.0,
                     "hits": 0, "misses": 0, "hit_rate": None, "errors": 0, "evictions": 0,
                     "expirations": 0}


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"max_entries": 0}, ValueError, "max_entries"),
        ({"max_entries": 1.5}, TypeError, "max_entries"),
        ({"max_entries": True}, TypeError, "max_entries"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": float("inf")}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"clock": 5}, TypeError, "clock"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception],
                                 name: str, collector: MetricsCollector) -> None:
    with pytest.raises(error, match=name):
        MemoryCache(collector=collector, **kwargs)


def test_bad_keys_and_values_are_named(collector: MetricsCollector) -> None:
    cache = MemoryCache(collector=collector)
    with pytest.raises(TypeError, match="key"):
        cache.get(b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        cache.set("", response("x"))
    with pytest.raises(TypeError, match="CachedResponse"):
        cache.set("k", {"text": "x"})  # type: ignore[arg-type]


def test_threads_share_one_cache_safely(collector: MetricsCollector,
                                        registry: CollectorRegistry) -> None:
    cache = MemoryCache(max_entries=16, ttl=None, collector=collector)
    rounds, threads = 400, 4

    def work(n: int) -> None:
        for i in range(rounds):
            key = f"k{(i + n) % 32}"
            if cache.get(key) is None:
                cache.set(key, response(key))

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    stats = cache.stats()
    assert stats["entries"] <= 16
    assert stats["hits"] + stats["misses"] == rounds * threads
    hits, misses = counts(registry)
    assert (hits or 0) + (misses or 0) == rounds * threads


# -- a model-based check: the cache against an ordered dict with expiry times -----------

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


class CacheMachine(RuleBasedStateMachine):
    """Every get agrees with a simple model of an LRU with a TTL and a bound of 3."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.cache = MemoryCache(max_entries=3, ttl=10.0, clock=self.clock,
                                 collector=MetricsCollector(registry=self.registry))
        self.model: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.hits = self.misses = 0

    @rule(key=KEYS, text=st.text(max_size=3))
    def set(self, key: str, text: str) -> None:
        self.cache.set(key, response(text))
        self.model[key] = (text, self.clock.now + 10.0)
        self.model.move_to_end(key)
        while len(self.model) > 3:
            self.model.popitem(last=False)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        found = self.cache.get(key)
        entry = self.model.get(key)
        if entry is not None and self.clock.now >= entry[1]:
            del self.model[key]
            entry = None
        if entry is None:
            assert found is None
            self.misses += 1
        else:
            assert found is not None and found.text == entry[0]
            self.model.move_to_end(key)
            self.hits += 1

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.99, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def bounded_and_counted(self) -> None:
        assert len(self.cache) <= 3
        assert counts(self.registry) == (self.hits or None, self.misses or None)

    def teardown(self) -> None:
        live = sum(1 for _, expires in self.model.values() if self.clock.now < expires)
        assert self.cache.stats()["entries"] == live


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
