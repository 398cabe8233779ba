"""The circuit breaker: state machine, fail-fast errors, half-open probe, metrics, events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from tests.unit.resilience.conftest import FakeClock
from tinyllm.errors import CircuitOpenError, ModelError
from tinyllm.events import BufferedEventHandler
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import (
    BREAKER_FAILURE_TYPES,
    CircuitBreaker,
    counts_as_failure,
    get_circuit_breaker,
    is_retryable,
)

STATE_VALUES = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
CONNECTION = ConnectionRefusedError("connection refused")


def state_gauge(collector: MetricsCollector, name: str) -> float | None:
    return collector.registry.get_sample_value("tinyllm_circuit_breaker_state", {"model": name})


def failures(collector: MetricsCollector, name: str) -> float:
    value = collector.registry.get_sample_value(
        "tinyllm_circuit_breaker_failures_total", {"model": name})
    return value or 0.0


def transitions(collector: MetricsCollector, name: str, src: str, dst: str) -> float:
    value = collector.registry.get_sample_value(
        "tinyllm_circuit_breaker_transitions_total",
        {"model": name, "from_state": src, "to_state": dst})
    return value or 0.0


def make(
    collector: MetricsCollector, clock: FakeClock, threshold: int = 3, reset: float = 10.0
) -> CircuitBreaker:
    return CircuitBreaker("backend", failure_threshold=threshold, reset_timeout=reset,
                          collector=collector, clock=clock)


def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure(CONNECTION)
    assert breaker.state == "open"


# -- the state machine ------------------------------------------------------------------


def test_starts_closed_with_the_gauge_set(collector: MetricsCollector, clock: FakeClock) -> None:
    breaker = make(collector, clock)
    assert breaker.state == "closed" and breaker.failure_count == 0
    assert state_gauge(collector, "backend") == 0.0
    breaker.before_call()  # closed: lets calls through


def test_threshold_consecutive_failures_open_it(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=3)
    breaker.record_failure(CONNECTION)
    breaker.record_failure(TimeoutError())
    assert breaker.state == "closed" and failures(collector, "backend") == 2
    breaker.record_failure(ModelError("502", error_type="server_error", status_code=502))
    assert breaker.state == "open" and breaker.failure_count == 3
    assert state_gauge(collector, "backend") == 2.0
    assert failures(collector, "backend") == 3
    assert transitions(collector, "backend", "closed", "open") == 1


def test_a_success_resets_the_consecutive_count(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=3)
    for _ in range(5):
        breaker.record_failure(CONNECTION)
        breaker.record_failure(CONNECTION)
        breaker.record_success()
    assert breaker.state == "closed" and breaker.failure_count == 0
    assert failures(collector, "backend") == 10  # every counted failure, consecutive or not


def test_open_fails_fast_naming_breaker_failures_and_wait(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=3, reset=10.0)
    open_breaker(breaker)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_call()
    message = str(info.value)
    assert "'backend'" in message and "3 consecutive failures" in message
    assert "in 6.0s" in message
    assert info.value.retry_after == pytest.approx(6.0)
    assert info.value.error_type == "circuit_open" and not is_retryable(info.value)


def test_open_becomes_half_open_lazily_after_the_reset_timeout(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, reset=10.0)
    open_breaker(breaker)
    clock.advance(9.999)
    assert breaker.state == "open"
    assert state_gauge(collector, "backend") == 2.0
    clock.advance(0.001)
    assert state_gauge(collector, "backend") == 2.0  # nobody has looked yet
    assert breaker.state == "half-open" and breaker.state == "half-open"
    assert state_gauge(collector, "backend") == 1.0
    assert transitions(collector, "backend", "open", "half-open") == 1


def test_a_successful_probe_closes_it(collector: MetricsCollector, clock: FakeClock) -> None:
    breaker = make(collector, clock, reset=10.0)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.before_call()  # the probe
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failure_count == 0
    assert state_gauge(collector, "backend") == 0.0
    assert transitions(collector, "backend", "half-open", "closed") == 1
    breaker.before_call()


def test_a_failed_probe_reopens_it_with_a_new_timer(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=3, reset=10.0)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.before_call()
    clock.advance(2.0)
    breaker.record_failure(TimeoutError("read timed out"))
    assert breaker.state == "open" and breaker.failure_count == 4
    assert transitions(collector, "backend", "half-open", "open") == 1
    clock.advance(9.9)  # counted from the probe's failure, not from the first opening
    with pytest.raises(
            CircuitOpenError, match=r"4 consecutive failures; it will try again in 0\.1s"
    ):
        breaker.before_call()
    clock.advance(0.1)
    assert breaker.state == "half-open"


def test_reports_while_open_do_not_close_or_retime_it(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=2, reset=10.0)
    open_breaker(breaker)
    clock.advance(5.0)
    breaker.record_success()  # a slow call from before it opened
    breaker.record_failure(CONNECTION)
    assert breaker.state == "open" and breaker.failure_count == 3
    clock.advance(5.0)
    assert breaker.state == "half-open"  # still the first timer


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (None, True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ModelError("503", error_type="server_error", status_code=503), True),
        (ModelError("429", error_type="rate_limited", status_code=429, retry_after=1.0), False),
        (ModelError("400", error_type="bad_request", status_code=400), False),
        (asyncio.CancelledError(), False),
        (KeyboardInterrupt(), False),
        (CircuitOpenError("open"), False),
        (ValueError("a bug of ours"), False),
        (MemoryError(), False),
    ],
)
def test_which_errors_count(error: BaseException | None, counted: bool) -> None:
    assert counts_as_failure(error) is counted


def test_the_failure_types_are_the_documented_ones() -> None:
    assert frozenset({"connection", "timeout", "server_error"}) == BREAKER_FAILURE_TYPES


def test_failures_that_do_not_count_change_nothing(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=2)
    breaker.record_failure(CONNECTION)
    for _ in range(10):
        breaker.record_failure(ModelError("bad", error_type="bad_request", status_code=400))
        breaker.record_failure(asyncio.CancelledError())
    assert breaker.state == "closed" and breaker.failure_count == 1
    assert failures(collector, "backend") == 1
    breaker.record_failure(CONNECTION)  # still consecutive: the others were neutral
    assert breaker.state == "open"


# -- the half-open probe ----------------------------------------------------------------


def test_half_open_lets_exactly_one_probe_through_under_threads(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, reset=10.0)
    n = 16
    open_breaker(breaker)
    for _ in range(3):  # three rounds: the probes race, the winner fails, it opens again
        clock.advance(10.0)
        barrier = threading.Barrier(n)
        admitted: list[int] = []
        refused: list[CircuitOpenError] = []

        def attempt(
            i: int, barrier: threading.Barrier = barrier, admitted: list[int] = admitted,
            refused: list[CircuitOpenError] = refused,
        ) -> None:
            barrier.wait()
            try:
                breaker.before_call()
            except CircuitOpenError as exc:
                refused.append(exc)
            else:
                admitted.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(admitted) == 1 and len(refused) == n - 1
        assert all("probe call is testing the backend" in str(e) for e in refused)
        breaker.record_failure(CONNECTION)
        assert breaker.state == "open"
    clock.advance(10.0)
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"


def test_a_probe_that_never_reports_frees_its_slot_after_the_reset_timeout(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, reset=10.0)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.before_call()  # this probe's caller crashes without reporting
    clock.advance(9.0)
    with pytest.raises(CircuitOpenError, match=r"in at most 1.0s"):
        breaker.before_call()
    clock.advance(1.0)
    breaker.before_call()  # a new probe


def test_a_neutral_failure_of_the_probe_frees_the_slot(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, reset=10.0)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.before_call()
    breaker.record_failure(asyncio.CancelledError())  # the probe was cancelled: no verdict
    assert breaker.state == "half-open"
    breaker.before_call()  # the next probe


# -- conveniences -----------------------------------------------------------------------


def test_call_records_success_and_failure_and_reraises_unchanged(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=2)
    assert breaker.call(lambda a, b=0: a + b, 1, b=2) == 3

    def down() -> None:
        raise CONNECTION

    for _ in range(2):
        with pytest.raises(ConnectionRefusedError) as info:
            breaker.call(down)
        assert info.value is CONNECTION
    calls: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(calls.append, 1)
    assert calls == []  # failed fast: the backend was not called


def test_context_manager_and_async_variants(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    breaker = make(collector, clock, threshold=2)
    with breaker:
        pass
    with pytest.raises(TimeoutError), breaker:
        raise TimeoutError

    async def scenario() -> None:
        async def ok() -> int:
            return 7

        async def fails() -> None:
            raise TimeoutError

        assert await breaker.acall(ok) == 7  # resets the count
        with pytest.raises(TimeoutError):
            await breaker.acall(fails)
        with pytest.raises(TimeoutError):
            async with breaker:
                raise TimeoutError
        with pytest.raises(CircuitOpenError):
            async with breaker:
                pass

    asyncio.run(scenario())
    assert breaker.state == "open" and failures(collector, "backend") == 3


# -- metrics, logs, events ---------------------------------------------------------------


def test_full_cycle_metrics_from_a_fresh_registry(clock: FakeClock) -> None:
    collector = MetricsCollector(registry=CollectorRegistry())
    breaker = make(collector, clock, threshold=2, reset=5.0)
    seen = [state_gauge(collector, "backend")]
    open_breaker(breaker)
    seen.append(state_gauge(collector, "backend"))
    clock.advance(5.0)
    breaker.before_call()
    seen.append(state_gauge(collector, "backend"))
    breaker.record_failure(CONNECTION)
    clock.advance(5.0)
    breaker.before_call()
    breaker.record_success()
    seen.append(state_gauge(collector, "backend"))
    assert seen == [0.0, 2.0, 1.0, 0.0]
    assert failures(collector, "backend") == 3
    expected = {("closed", "open"): 1, ("open", "half-open"): 2, ("half-open", "open"): 1,
                ("half-open", "closed"): 1}
    for (src, dst), count in expected.items():
        assert transitions(collector, "backend", src, dst) == count, (src, dst)
    assert transitions(collector, "backend", "closed", "half-open") == 0


def test_each_transition_is_one_event_and_one_log_line(
    collector: MetricsCollector, clock: FakeClock, events: BufferedEventHandler
) -> None:
    breaker = make(collector, clock, threshold=2, reset=5.0)
    with capture_logs() as logs:
        open_breaker(breaker)
    assert [(e.event_type, e.category.value, e.severity.value) for e in events.get_events()] == [
        ("circuit_breaker.open", "model", "warning")]
    (line,) = logs
    assert line["level"] == "warning" and line["event_type"] == "circuit_breaker.open"
    assert "backend" in line["event"]
    data = events.get_events()[0].data
    assert data == {"breaker": "backend", "from_state": "closed", "to_state": "open",
                    "consecutive_failures": 2, "reset_timeout": 5.0}
    clock.advance(5.0)
    with capture_logs() as logs:
        breaker.before_call()
        breaker.record_success()
    assert [(line["event_type"], line["level"]) for line in logs] == [
        ("circuit_breaker.half_open", "info"), ("circuit_breaker.closed", "info")]
    assert [e.event_type for e in events.get_events()][1:] == [
        "circuit_breaker.half_open", "circuit_breaker.closed"]


def test_default_collector_is_the_process_wide_one(default_collector: MetricsCollector) -> None:
    breaker = CircuitBreaker("shared", failure_threshold=1)
    breaker.record_failure(CONNECTION)
    assert state_gauge(default_collector, "shared") == 2.0
    assert failures(default_collector, "shared") == 1


# -- the registry and validation ----------------------------------------------------------


def test_registry_one_breaker_per_name(clock: FakeClock) -> None:
    first = get_circuit_breaker("ollama", failure_threshold=2, clock=clock)
    assert get_circuit_breaker("ollama") is first
    assert get_circuit_breaker("ollama", failure_threshold=2) is first
    assert get_circuit_breaker("openai") is not first
    with pytest.raises(ValueError, match=r"failure_threshold=2.*failure_threshold=4"):
        get_circuit_breaker("ollama", failure_threshold=4)
    with pytest.raises(ValueError, match="clock"):
        get_circuit_breaker("ollama", clock=FakeClock())
    from tinyllm.resilience import reset_circuit_breakers

    reset_circuit_breakers()
    assert get_circuit_breaker("ollama") is not first


@pytest.mark.parametrize(
    ("kwargs", "exc", "argument"),
    [
        ({"name": ""}, ValueError, "name"),
        ({"name": 3}, TypeError, "name"),
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2.0}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"reset_timeout": 0}, ValueError, "reset_timeout"),
        ({"reset_timeout": float("nan")}, ValueError, "reset_timeout"),
        ({"reset_timeout": float("inf")}, ValueError, "reset_timeout"),
        ({"reset_timeout": "30"}, TypeError, "reset_timeout"),
        ({"collector": object()}, TypeError, "collector"),
        ({"clock": 1.0}, TypeError, "clock"),
    ],
)
def test_bad_arguments_name_themselves(
    kwargs: dict[str, Any], exc: type[Exception], argument: str
) -> None:
    args: dict[str, Any] = {"name": "b", **kwargs}
    with pytest.raises(exc, match=argument):
        CircuitBreaker(**args)


def test_record_failure_rejects_non_exceptions(
    collector: MetricsCollector, clock: FakeClock
) -> None:
    with pytest.raises(TypeError, match="error must be an exception"):
        make(collector, clock).record_failure("boom")  # type: ignore[arg-type]


# -- a stateful test against a simple model -------------------------------------------------

COUNTED = [ConnectionResetError("reset"), TimeoutError("slow"),
           ModelError("500", error_type="server_error", status_code=500)]
NEUTRAL = [ModelError("400", error_type="bad_request", status_code=400),
           ModelError("429", error_type="rate_limited", status_code=429),
           asyncio.CancelledError(), ValueError("bug")]
THRESHOLD, RESET = 3, 10.0


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a few lines of model; metrics checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.collector = MetricsCollector(registry=CollectorRegistry())
        self.breaker = CircuitBreaker("m", failure_threshold=THRESHOLD, reset_timeout=RESET,
                                      collector=self.collector, clock=self.clock)
        self.state, self.count, self.opened_at = "closed", 0, 0.0
        self.probe_at: float | None = None
        self.counted = 0
        self.moves: dict[tuple[str, str], int] = {}

    def _move(self, to: str) -> None:
        key = (self.state, to)
        self.moves[key] = self.moves.get(key, 0) + 1
        self.state = to

    def _tick(self) -> None:
        if self.state == "open" and self.clock.now >= self.opened_at + RESET:
            self._move("half-open")

    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 9.99, 10.0, 25.0]))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def call(self) -> None:
        self._tick()
        allowed = self.state == "closed" or (self.state == "half-open" and (
            self.probe_at is None or self.clock.now >= self.probe_at + RESET))
        if self.state == "half-open" and allowed:
            self.probe_at = self.clock.now
        try:
            self.breaker.before_call()
        except CircuitOpenError:
            assert not allowed
        else:
            assert allowed

    @rule()
    def success(self) -> None:
        self._tick()
        self.breaker.record_success()
        if self.state != "open":
            self.count, self.probe_at = 0, None
            if self.state == "half-open":
                self._move("closed")

    @rule(error=st.sampled_from(COUNTED))
    def counted_failure(self, error: BaseException) -> None:
        self._tick()
        self.breaker.record_failure(error)
        self.count += 1
        self.counted += 1
        if self.state == "half-open" or (self.state == "closed" and self.count >= THRESHOLD):
            self.opened_at, self.probe_at = self.clock.now, None
            self._move("open")

    @rule(error=st.sampled_from(NEUTRAL))
    def neutral_failure(self, error: BaseException) -> None:
        self._tick()
        self.breaker.record_failure(error)
        self.probe_at = None

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.breaker._state == self.state  # the raw state: reading .state would tick
        assert self.breaker.failure_count == self.count
        reg = self.collector.registry
        assert reg.get_sample_value("tinyllm_circuit_breaker_state", {"model": "m"}) == \
            STATE_VALUES[self.state]
        assert (reg.get_sample_value("tinyllm_circuit_breaker_failures_total", {"model": "m"})
                or 0.0) == self.counted
        for (src, dst), n in self.moves.items():
            assert reg.get_sample_value(
                "tinyllm_circuit_breaker_transitions_total",
                {"model": "m", "from_state": src, "to_state": dst}) == n


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                            deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
