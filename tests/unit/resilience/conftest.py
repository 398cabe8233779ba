"""Fresh process-wide state per test, a fake clock, and a fresh collector to read metrics from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tinyllm.events import BufferedEventHandler, get_event_emitter, reset_event_emitter
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import reset_circuit_breakers, reset_rate_limiters


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def fresh_state(default_collector: MetricsCollector) -> Iterator[None]:
    """No breaker, limiter or event handler survives from another test."""
    reset_circuit_breakers()
    reset_rate_limiters()
    reset_event_emitter()
    yield
    reset_circuit_breakers()
    reset_rate_limiters()
    reset_event_emitter()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> BufferedEventHandler:
    """A buffer on the process-wide emitter: every event emitted in the test."""
    handler = BufferedEventHandler()
    get_event_emitter().add_handler(handler)
    return handler
