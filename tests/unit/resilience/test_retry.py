"""Retries: which errors, how many attempts, how long between them, the deadline, the count."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tests.unit.resilience.conftest import FakeClock
from tinyllm.errors import CircuitOpenError, ModelError
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import (
    RETRYABLE_ERROR_TYPES,
    Deadline,
    RetryPolicy,
    aretry_call,
    is_retryable,
    retry_call,
)

NO_JITTER = RetryPolicy(max_attempts=3, base_delay=0.25, max_delay=8.0, jitter=False)


def retries(collector: MetricsCollector, model: str = "m") -> float:
    value = collector.registry.get_sample_value("tinyllm_inference_retries_total",
                                                {"model": model})
    return value or 0.0


class Flaky:
    """Raises the given errors in turn, then returns "ok"; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def server_error() -> ModelError:
    return ModelError("502 bad gateway", error_type="server_error", status_code=502)


# -- which errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ModelError("429", error_type="rate_limited", status_code=429), True),
        (ModelError("503", error_type="server_error", status_code=503), True),
        (ModelError("400", error_type="bad_request", status_code=400), False),
        (CircuitOpenError("open"), False),
        (asyncio.CancelledError(), False),
        (ValueError("bug"), False),
        (MemoryError(), False),
    ],
)
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_the_retryable_types_are_the_documented_ones() -> None:
    assert frozenset({"connection", "timeout", "rate_limited", "server_error"}) == \
        RETRYABLE_ERROR_TYPES


# -- attempts and the count -----------------------------------------------------------------


def test_retries_until_success_counting_each_retry(collector: MetricsCollector) -> None:
    fn, slept = Flaky(server_error(), ConnectionResetError()), []
    assert retry_call(fn, NO_JITTER, model="m", collector=collector, sleep=slept.append) == "ok"
    assert fn.calls == 3 and slept == [0.25, 0.5]
    assert retries(collector) == 2


def test_attempts_are_exactly_max_attempts_then_the_last_error(
    collector: MetricsCollector,
) -> None:
    errors = [TimeoutError(f"attempt {n}") for n in range(1, 6)]
    fn, slept = Flaky(*errors), []
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=3.0, jitter=False)
    with pytest.raises(TimeoutError) as info:
        retry_call(fn, policy, model="m", collector=collector, sleep=slept.append)
    assert fn.calls == 4 and info.value is errors[3]
    assert info.value.__context__ is None  # earlier attempts are not chained onto it
    assert slept == [1.0, 2.0, 3.0]  # exponential, capped at max_delay
    assert retries(collector) == 3


def test_one_attempt_means_no_retry(collector: MetricsCollector) -> None:
    fn = Flaky(ConnectionRefusedError())
    with pytest.raises(ConnectionRefusedError):
        retry_call(fn, RetryPolicy(max_attempts=1), model="m", collector=collector,
                   sleep=pytest.fail)
    assert fn.calls == 1 and retries(collector) == 0


@pytest.mark.parametrize(
    "error",
    [ModelError("400", error_type="bad_request", status_code=400), CircuitOpenError("open"),
     ValueError("bug"), KeyboardInterrupt(), asyncio.CancelledError()],
)
def test_non_retryable_errors_propagate_at_once(
    collector: MetricsCollector, error: BaseException
) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        retry_call(fn, NO_JITTER, model="m", collector=collector, sleep=pytest.fail)
    assert info.value is error and fn.calls == 1 and retries(collector) == 0


def test_on_retry_sees_attempt_error_and_delay(collector: MetricsCollector) -> None:
    first, second = server_error(), TimeoutError()
    seen: list[tuple[int, BaseException, float]] = []
    retry_call(Flaky(first, second), NO_JITTER, model="m", collector=collector,
               sleep=lambda s: None, on_retry=lambda *a: seen.append(a))
    assert seen == [(1, first, 0.25), (2, second, 0.5)]


def test_each_retry_is_logged_at_debug(collector: MetricsCollector) -> None:
    with capture_logs(level="debug") as logs:
        retry_call(Flaky(server_error()), NO_JITTER, model="m", collector=collector,
                   sleep=lambda s: None)
    (line,) = [line for line in logs if line["event"] == "retrying model call"]
    assert line["level"] == "debug" and line["attempt"] == 1 and line["delay"] == 0.25
    assert line["error_type"] == "server_error" and line["model"] == "m"


# -- how long -------------------------------------------------------------------------------


def test_delay_without_jitter_is_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, multiplier=3.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 5)] == [0.5, 1.5, 3.0, 3.0]
    assert policy.delay(10_000) == 3.0  # no overflow far past the cap
    assert RetryPolicy(base_delay=0.0, jitter=False).delay(50) == 0.0


@settings(max_examples=200)
@given(attempt=st.integers(1, 40), base=st.floats(0, 5), spread=st.floats(0, 50),
       multiplier=st.floats(1, 10))
def test_full_jitter_stays_between_zero_and_the_backoff(
    attempt: int, base: float, spread: float, multiplier: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=base + spread, multiplier=multiplier)
    assert 0.0 <= policy.delay(attempt) <= policy.backoff(attempt) <= policy.max_delay


def test_retry_after_is_a_floor_even_above_max_delay() -> None:
    busy = ModelError("429", error_type="rate_limited", status_code=429, retry_after=20.0)
    assert RetryPolicy(max_delay=1.0).delay(1, busy) == 20.0
    quick = ModelError("503", error_type="server_error", status_code=503, retry_after=0.1)
    assert RetryPolicy(base_delay=2.0, jitter=False).delay(1, quick) == 2.0


@pytest.mark.parametrize("value", [float("nan"), -1.0, float("inf"), True, "5", None])
def test_a_broken_retry_after_is_ignored(value: Any) -> None:
    error = ModelError("429", error_type="rate_limited", status_code=429)
    error.retry_after = value
    assert RetryPolicy(base_delay=1.0, jitter=False).delay(1, error) == 1.0


def test_retry_call_honours_retry_after(collector: MetricsCollector) -> None:
    busy = ModelError("429", error_type="rate_limited", status_code=429, retry_after=12.0)
    slept: list[float] = []
    policy = RetryPolicy(max_delay=1.0)  # jitter on: the backoff is below Retry-After anyway
    assert retry_call(Flaky(busy), policy, model="m", collector=collector,
                      sleep=slept.append) == "ok"
    assert slept == [12.0]


def test_retry_after_beyond_max_retry_after_is_not_waited_for(
    collector: MetricsCollector,
) -> None:
    busy = ModelError("429", error_type="rate_limited", status_code=429, retry_after=3600.0)
    fn = Flaky(busy)
    with pytest.raises(ModelError) as info:
        retry_call(fn, RetryPolicy(), model="m", collector=collector, sleep=pytest.fail)
    assert info.value is busy and fn.calls == 1 and retries(collector) == 0
    unlimited = RetryPolicy(max_retry_after=None)
    slept: list[float] = []
    retry_call(Flaky(busy), unlimited, model="m", collector=collector, sleep=slept.append)
    assert slept == [3600.0]


# -- the deadline ---------------------------------------------------------------------------


def test_never_sleeps_past_the_deadline(collector: MetricsCollector, clock: FakeClock) -> None:
    deadline = Deadline(1.0, clock=clock)
    policy = RetryPolicy(max_attempts=10, base_delay=0.4, max_delay=10.0, jitter=False)
    fn, slept = Flaky(*[ConnectionResetError()] * 10), []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    with pytest.raises(ConnectionResetError):
        retry_call(fn, policy, model="m", collector=collector, deadline=deadline, sleep=sleep)
    # t=0 fails, waits 0.4 (0.6 left); t=0.4 fails, 0.8 would pass the deadline: re-raised.
    assert slept == [0.4] and fn.calls == 2 and retries(collector) == 1


def test_a_retry_after_past_the_deadline_reraises_at_once(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    busy = ModelError("503", error_type="server_error", status_code=503, retry_after=30.0)
    fn = Flaky(busy)
    with pytest.raises(ModelError) as info:
        retry_call(fn, RetryPolicy(), model="m", collector=collector,
                   deadline=Deadline(10.0, clock=clock), sleep=pytest.fail)
    assert info.value is busy and fn.calls == 1


@settings(max_examples=100, deadline=None)
@given(limit=st.floats(0.01, 20), attempts=st.integers(1, 12), base=st.floats(0, 3),
       retry_after=st.none() | st.floats(0, 10))
def test_property_total_sleep_stays_inside_the_deadline(
    limit: float, attempts: int, base: float, retry_after: float | None
) -> None:
    clock = FakeClock(0.0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    def fail() -> None:
        clock.advance(0.01)  # each attempt takes a little time too
        raise ModelError("503", error_type="server_error", retry_after=retry_after)

    collector = MetricsCollector(registry=CollectorRegistry())
    with pytest.raises(ModelError):
        retry_call(fail, RetryPolicy(max_attempts=attempts, base_delay=base, max_delay=base + 1),
                   model="m", collector=collector, deadline=Deadline(limit, clock=clock),
                   sleep=sleep)
    assert sum(slept) < limit
    assert len(slept) <= attempts - 1 and retries(collector) == len(slept)


# -- async ------------------------------------------------------------------------------------


def test_async_variant(collector: MetricsCollector) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    fn = Flaky(server_error(), TimeoutError())

    async def afn() -> str:
        await asyncio.sleep(0)
        return fn()

    async def bad() -> None:
        raise ModelError("400", error_type="bad_request", status_code=400)

    async def scenario() -> None:
        assert await aretry_call(afn, NO_JITTER, model="m", collector=collector,
                                 sleep=sleep) == "ok"
        with pytest.raises(ModelError, match="400"):
            await aretry_call(bad, NO_JITTER, model="m", collector=collector, sleep=sleep)

    asyncio.run(scenario())
    assert fn.calls == 3 and slept == [0.25, 0.5] and retries(collector) == 2


def test_async_variant_gives_up_after_max_attempts(collector: MetricsCollector) -> None:
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionRefusedError

    async def no_wait(seconds: float) -> None:
        return None

    with pytest.raises(ConnectionRefusedError):
        asyncio.run(aretry_call(down, RetryPolicy(max_attempts=5), model="m",
                                collector=collector, sleep=no_wait))
    assert len(calls) == 5 and retries(collector) == 4


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "argument"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 2.0}, TypeError, "max_attempts"),
        ({"base_delay": -1}, ValueError, "base_delay"),
        ({"base_delay": float("nan")}, ValueError, "base_delay"),
        ({"max_delay": 0.1}, ValueError, "max_delay"),
        ({"max_delay": float("inf")}, ValueError, "max_delay"),
        ({"multiplier": 0.5}, ValueError, "multiplier"),
        ({"jitter": 1}, TypeError, "jitter"),
        ({"max_retry_after": -1}, ValueError, "max_retry_after"),
    ],
)
def test_policy_validation_names_the_argument(
    kwargs: dict[str, Any], exc: type[Exception], argument: str
) -> None:
    with pytest.raises(exc, match=argument):
        RetryPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        NO_JITTER.max_attempts = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "exc", "argument"),
    [
        ({"fn": 3}, TypeError, "fn"),
        ({"policy": None}, TypeError, "policy"),
        ({"model": ""}, ValueError, "model"),
        ({"model": None}, TypeError, "model"),
        ({"collector": "c"}, TypeError, "collector"),
        ({"deadline": 5.0}, TypeError, "deadline"),
        ({"sleep": None}, TypeError, "sleep"),
        ({"on_retry": 1}, TypeError, "on_retry"),
    ],
)
def test_retry_call_validation_names_the_argument(
    kwargs: dict[str, Any], exc: type[Exception], argument: str
) -> None:
    args: dict[str, Any] = {"fn": lambda: 1, "policy": NO_JITTER, "model": "m", **kwargs}
    call: Callable[..., Any] = retry_call
    with pytest.raises(exc, match=argument):
        call(args.pop("fn"), args.pop("policy"), **args)


def test_delay_rejects_a_bad_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        NO_JITTER.delay(0)
