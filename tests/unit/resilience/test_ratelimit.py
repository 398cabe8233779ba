"""The token bucket: burst, refill, waits, timeouts, threads, the wait histogram."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.unit.resilience.conftest import FakeClock
from tinyllm.errors import ModelError, classify_error
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import RateLimiter, get_rate_limiter, reset_rate_limiters


def waits(collector: MetricsCollector, model: str = "m") -> tuple[float, float]:
    """(count, sum) of the rate-limit wait histogram."""
    reg = collector.registry
    count = reg.get_sample_value("tinyllm_rate_limit_wait_seconds_count", {"model": model})
    total = reg.get_sample_value("tinyllm_rate_limit_wait_seconds_sum", {"model": model})
    return count or 0.0, total or 0.0


def make(collector: MetricsCollector, clock: FakeClock, rate: float = 2.0,
         burst: int | None = 1, slept: list[float] | None = None) -> RateLimiter:
    sink: list[float] = [] if slept is None else slept
    return RateLimiter(rate, burst, model="m", collector=collector, clock=clock,
                       sleep=sink.append)


def test_a_full_bucket_admits_a_burst_at_once(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    slept: list[float] = []
    limiter = make(collector, clock, rate=2.0, burst=3, slept=slept)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() == pytest.approx(0.5)
    assert slept == [pytest.approx(0.5)]


def test_default_burst_is_ceil_rate_and_at_least_one() -> None:
    assert RateLimiter(0.2, model="m").burst == 1
    assert RateLimiter(2.5, model="m").burst == 3
    assert RateLimiter(10, model="m").burst == 10


def test_refill_at_rate_up_to_burst(collector: MetricsCollector, clock: FakeClock) -> None:
    limiter = make(collector, clock, rate=4.0, burst=4)
    limiter.acquire(4)
    assert limiter.available == 0.0
    clock.advance(0.5)
    assert limiter.available == pytest.approx(2.0)
    clock.advance(100.0)
    assert limiter.available == 4.0  # never more than the bucket holds


def test_waiting_callers_queue_one_interval_apart(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    slept: list[float] = []
    limiter = make(collector, clock, rate=2.0, burst=1, slept=slept)
    got = [limiter.acquire() for _ in range(4)]  # the clock never moves: reservations stack
    assert got == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert limiter.available == pytest.approx(-3.0)
    clock.advance(2.0)
    assert limiter.available == pytest.approx(1.0)


def test_fractional_and_multiple_tokens(collector: MetricsCollector, clock: FakeClock) -> None:
    limiter = make(collector, clock, rate=10.0, burst=10)
    assert limiter.acquire(2.5) == 0.0
    assert limiter.acquire(7.5) == 0.0
    assert limiter.acquire(5) == pytest.approx(0.5)


def test_timeout_raises_at_once_without_waiting_or_consuming(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    slept: list[float] = []
    limiter = make(collector, clock, rate=2.0, burst=1, slept=slept)
    limiter.acquire()
    before = limiter.available
    with pytest.raises(ModelError) as info:
        limiter.acquire(timeout=0.4)
    error = info.value
    assert classify_error(error) == "rate_limited" and error.retry_after == pytest.approx(0.5)
    assert "'m'" in str(error) and "timeout of 0.4s" in str(error)
    assert slept == [] and limiter.available == before
    assert waits(collector) == (1.0, 0.0)  # only the admission is recorded
    assert limiter.acquire(timeout=0.5) == pytest.approx(0.5)  # a wait equal to it is fine


def test_try_acquire_never_waits(collector: MetricsCollector, clock: FakeClock) -> None:
    limiter = make(collector, clock, rate=1.0, burst=2)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]
    clock.advance(1.0)
    assert limiter.try_acquire() and not limiter.try_acquire()
    assert waits(collector) == (3.0, 0.0)


def test_wait_histogram_counts_every_admission_and_sums_the_waits(clock: FakeClock) -> None:
    collector = MetricsCollector(registry=CollectorRegistry())
    limiter = make(collector, clock, rate=4.0, burst=2)
    for _ in range(5):
        limiter.acquire()
    limiter.try_acquire()  # refused: not an admission
    count, total = waits(collector)
    assert count == 5.0 and total == pytest.approx(0.0 + 0.0 + 0.25 + 0.5 + 0.75)


def test_an_interrupted_wait_gives_its_tokens_back(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    limiter = RateLimiter(1.0, 1, model="m", collector=collector, clock=clock,
                          sleep=interrupted)
    limiter.acquire()
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire()
    assert limiter.available == 0.0 and waits(collector) == (1.0, 0.0)


def test_async_acquire_waits_with_the_async_sleep_and_refunds_when_cancelled(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def cancelled(seconds: float) -> None:
        raise asyncio.CancelledError

    limiter = RateLimiter(2.0, 1, model="m", collector=collector, clock=clock,
                          sleep=pytest.fail, async_sleep=record)

    async def scenario() -> None:
        assert await limiter.aacquire() == 0.0
        assert await limiter.aacquire() == pytest.approx(0.5)
        with pytest.raises(ModelError, match="rate limit"):
            await limiter.aacquire(timeout=0.1)

    asyncio.run(scenario())
    assert slept == [pytest.approx(0.5)] and waits(collector)[0] == 2.0
    limiter._async_sleep = cancelled
    before = limiter.available
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(limiter.aacquire())
    assert limiter.available == pytest.approx(before) and waits(collector)[0] == 2.0


def test_threads_are_admitted_no_faster_than_the_rate(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    rate, burst, n = 10.0, 2, 24
    lock = threading.Lock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        with lock:
            slept.append(seconds)

    limiter = RateLimiter(rate, burst, model="m", collector=collector, clock=clock, sleep=sleep)
    barrier = threading.Barrier(n)
    admitted_at: list[float] = []

    def worker() -> None:
        barrier.wait()
        start = clock()
        waited = limiter.acquire()
        with lock:
            admitted_at.append(start + waited)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = sorted(admitted_at)
    # The burst goes at once; after it, one admission per 1/rate seconds, none sooner.
    expected = [0.0] * burst + [(k + 1) / rate for k in range(n - burst)]
    assert [t - clock() for t in times] == pytest.approx(expected)
    assert sorted(slept) == pytest.approx(expected[burst:])
    assert waits(collector) == (float(n), pytest.approx(sum(expected)))


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(0.5, 20), burst=st.integers(1, 5),
    steps=st.lists(st.tuples(st.floats(0, 2), st.floats(0.1, 1)), min_size=1, max_size=30),
)
def test_property_admissions_conform_to_the_bucket(
    rate: float, burst: int, steps: list[tuple[float, float]]
) -> None:
    """Over any window, tokens admitted <= burst + rate * window length."""
    clock = FakeClock(0.0)
    limiter = RateLimiter(rate, burst, model="m",
                          collector=MetricsCollector(registry=CollectorRegistry()),
                          clock=clock, sleep=lambda s: None)
    admitted: list[tuple[float, float]] = []
    for gap, fraction in steps:
        clock.advance(gap)
        tokens = fraction * burst
        admitted.append((clock() + limiter.acquire(tokens), tokens))
    admitted.sort()
    for i in range(len(admitted)):
        total = 0.0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            window = admitted[j][0] - admitted[i][0]
            assert total <= burst + rate * window + 1e-6


def test_registry_one_limiter_per_model() -> None:
    first = get_rate_limiter("llama3", 5.0)
    assert get_rate_limiter("llama3", 5.0) is first
    assert get_rate_limiter("llama3", 5.0, burst=5) is first  # the default burst, spelt out
    assert get_rate_limiter("gemma", 5.0) is not first
    with pytest.raises(ValueError, match=r"rate=5.0.*rate=2.0"):
        get_rate_limiter("llama3", 2.0)
    with pytest.raises(ValueError, match="burst"):
        get_rate_limiter("llama3", 5.0, burst=1)
    reset_rate_limiters()
    assert get_rate_limiter("llama3", 2.0) is not first


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "argument"),
    [
        ((0,), {}, ValueError, "rate"),
        ((float("inf"),), {}, ValueError, "rate"),
        (("5",), {}, TypeError, "rate"),
        ((5, 0), {}, ValueError, "burst"),
        ((5, 2.0), {}, TypeError, "burst"),
        ((5,), {"model": ""}, ValueError, "model"),
        ((5,), {"collector": 1}, TypeError, "collector"),
        ((5,), {"clock": None}, TypeError, "clock"),
        ((5,), {"sleep": None}, TypeError, "sleep"),
    ],
)
def test_constructor_validation_names_the_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception], argument: str
) -> None:
    kwargs.setdefault("model", "m")
    with pytest.raises(exc, match=argument):
        RateLimiter(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"tokens": 0}, ValueError, "tokens"),
        ({"tokens": float("nan")}, ValueError, "tokens"),
        ({"tokens": 3}, ValueError, r"tokens must be <= burst \(2\)"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
    ],
)
def test_acquire_validation_names_the_argument(
    collector: MetricsCollector, clock: FakeClock, kwargs: dict[str, Any],
    exc: type[Exception], match: str,
) -> None:
    limiter = make(collector, clock, burst=2)
    with pytest.raises(exc, match=match):
        limiter.acquire(**kwargs)
    assert limiter.available == 2.0 and waits(collector) == (0.0, 0.0)
