"""``RequestQueue``: priority order, rejection when full, the queue metrics, shutdown.

Real worker threads; a worker is held inside a request by an Event so that the order
and the counts are checked at known moments, never by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.errors import TinyLLMError, classify_error
from tinyllm.metrics import MetricsCollector
from tinyllm.queue import PRIORITIES, QueueFullError, RequestQueue

WAIT = 10  # seconds a test waits on an event before it fails (a hang, not a timing check)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Blocker:
    """A request that holds its worker until ``release()``."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        if not self.go.wait(WAIT):
            raise TimeoutError("blocker never released")
        return "unblocked"

    def release(self) -> None:
        self.go.set()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def queues(collector: MetricsCollector) -> Iterator[Callable[..., RequestQueue]]:
    made: list[RequestQueue] = []

    def make(**kwargs: object) -> RequestQueue:
        queue = RequestQueue(collector=collector, **kwargs)  # type: ignore[arg-type]
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.shutdown(wait=True, cancel_pending=True)


def hold_worker(queue: RequestQueue, priority: str = "normal") -> tuple[Blocker, Future[str]]:
    blocker = Blocker()
    future = queue.submit(blocker, priority=priority)
    assert blocker.started.wait(WAIT), "the worker never picked the blocker up"
    return blocker, future


def test_higher_priorities_run_first_fifo_within_one(queues: Callable[..., RequestQueue]) -> None:
    queue = queues(workers=1)
    blocker, _ = hold_worker(queue)
    ran: list[str] = []
    futures = [queue.submit(lambda name=name: ran.append(name), priority=name.split("-")[0])
               for name in ("low-1", "normal-1", "high-1", "low-2", "normal-2", "high-2")]
    blocker.release()
    for f in futures:
        f.result(WAIT)
    assert ran == ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]


def test_full_queue_rejects_at_once_and_counts(queues: Callable[..., RequestQueue],
                                               registry: CollectorRegistry) -> None:
    queue = queues(max_size=2, workers=1, name="tiny")
    blocker, _ = hold_worker(queue, "high")  # running, so not counted against max_size
    queue.submit(lambda: None, priority="low")
    queue.submit(lambda: None, priority="high")
    with pytest.raises(QueueFullError) as caught:
        queue.submit(lambda: None, priority="normal")
    err = caught.value
    assert (err.size, err.max_size, err.priority) == (2, 2, "normal")
    assert "size=2" in str(err) and "max_size=2" in str(err) and "'tiny'" in str(err)
    assert sample(registry, "tinyllm_queue_requests_rejected_total", priority="normal") == 1
    assert sample(registry, "tinyllm_queue_requests_total", priority="high") == 2
    assert sample(registry, "tinyllm_queue_requests_total", priority="low") == 1
    assert sample(registry, "tinyllm_queue_requests_total", priority="normal") == 0
    assert [sample(registry, "tinyllm_queue_size", priority=p) for p in PRIORITIES] == [1, 0, 1]
    assert queue.sizes() == {"high": 1, "normal": 0, "low": 1} and queue.size == 2
    blocker.release()
    queue.shutdown(wait=True)
    assert [sample(registry, "tinyllm_queue_size", priority=p) for p in PRIORITIES] == [0, 0, 0]


def test_queue_full_error_is_ours_and_reads_as_rate_limited() -> None:
    err = QueueFullError(size=1, max_size=1, priority="low", name="q")
    assert isinstance(err, TinyLLMError)
    assert classify_error(err) == "rate_limited"


def test_wait_time_is_observed_when_a_worker_picks_the_request_up(
    queues: Callable[..., RequestQueue], registry: CollectorRegistry
) -> None:
    clock = FakeClock()
    queue = queues(workers=1, clock=clock)
    blocker, _ = hold_worker(queue, "high")  # waited 0 s
    waiting = [queue.submit(lambda: None, priority="low") for _ in range(3)]
    clock.now += 2.5
    blocker.release()
    for f in waiting:
        f.result(WAIT)
    name = "tinyllm_queue_wait_time_seconds"
    assert sample(registry, f"{name}_count", priority="low") == 3
    assert sample(registry, f"{name}_sum", priority="low") == 7.5
    assert sample(registry, f"{name}_count", priority="high") == 1
    assert sample(registry, f"{name}_sum", priority="high") == 0
    assert sample(registry, f"{name}_bucket", priority="low", le="2.5") == 3
    assert sample(registry, f"{name}_bucket", priority="low", le="1.0") == 0


def test_active_workers_counts_busy_workers_and_ends_at_zero(
    queues: Callable[..., RequestQueue], registry: CollectorRegistry
) -> None:
    queue = queues(workers=3)
    first, _ = hold_worker(queue)
    second, _ = hold_worker(queue)
    assert sample(registry, "tinyllm_queue_active_workers") == 2 == queue.active_workers
    first.release()
    second.release()
    queue.shutdown(wait=True)
    assert sample(registry, "tinyllm_queue_active_workers") == 0 == queue.active_workers


def test_an_exception_goes_to_the_future_and_the_worker_carries_on(
    queues: Callable[..., RequestQueue],
) -> None:
    queue = queues(workers=1)

    def boom() -> None:
        raise ValueError("bad request")

    failed = queue.submit(boom)
    with pytest.raises(ValueError, match="bad request"):
        failed.result(WAIT)
    assert queue.submit(lambda: "still here").result(WAIT) == "still here"


def test_unknown_priority_lists_the_valid_ones(queues: Callable[..., RequestQueue]) -> None:
    queue = queues()
    with pytest.raises(ValueError, match="high, normal, low"):
        queue.submit(lambda: None, priority="urgent")
    with pytest.raises(ValueError, match="priority"):
        queue.submit(lambda: None, priority=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn"):
        queue.submit("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [({"max_size": 0}, ValueError, "max_size"), ({"workers": 0}, ValueError, "workers"),
     ({"workers": 1.5}, TypeError, "workers"), ({"name": ""}, TypeError, "name")],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], error: type[Exception], name: str,
                                 collector: MetricsCollector) -> None:
    with pytest.raises(error, match=name):
        RequestQueue(collector=collector, **kwargs)  # type: ignore[arg-type]


def test_shutdown_drains_by_default(queues: Callable[..., RequestQueue]) -> None:
    queue = queues(workers=1)
    blocker, _ = hold_worker(queue)
    waiting = [queue.submit(lambda i=i: i) for i in range(3)]
    blocker.release()
    queue.shutdown(wait=True)
    assert [f.result(0) for f in waiting] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="shut down"):
        queue.submit(lambda: None)


def test_shutdown_can_cancel_what_waits(queues: Callable[..., RequestQueue],
                                        registry: CollectorRegistry) -> None:
    queue = queues(workers=1)
    blocker, running = hold_worker(queue)
    waiting = [queue.submit(lambda: None, priority=p) for p in PRIORITIES]
    queue.shutdown(wait=False, cancel_pending=True)
    assert all(f.cancelled() for f in waiting)
    blocker.release()
    assert running.result(WAIT) == "unblocked"  # the running one finishes
    queue.shutdown(wait=True)
    assert [sample(registry, "tinyllm_queue_size", priority=p) for p in PRIORITIES] == [0, 0, 0]
    with pytest.raises(CancelledError):
        waiting[0].result(0)


def test_a_request_cancelled_while_waiting_never_runs(queues: Callable[..., RequestQueue],
                                                      registry: CollectorRegistry) -> None:
    queue = queues(workers=1)
    blocker, _ = hold_worker(queue)
    ran: list[int] = []
    doomed = queue.submit(lambda: ran.append(1))
    assert doomed.cancel()
    blocker.release()
    queue.shutdown(wait=True)
    assert ran == []
    # only the blocker was picked up to run
    assert sample(registry, "tinyllm_queue_wait_time_seconds_count", priority="normal") == 1


def test_two_queues_keep_the_shared_gauges_exact(queues: Callable[..., RequestQueue],
                                                 registry: CollectorRegistry) -> None:
    one, two = queues(workers=1, name="one"), queues(workers=1, name="two")
    blockers = [hold_worker(one)[0], hold_worker(two)[0]]
    one.submit(lambda: None)
    two.submit(lambda: None)
    assert sample(registry, "tinyllm_queue_size", priority="normal") == 2
    assert sample(registry, "tinyllm_queue_active_workers") == 2
    for b in blockers:
        b.release()
    one.shutdown()
    two.shutdown()
    assert sample(registry, "tinyllm_queue_size", priority="normal") == 0
    assert sample(registry, "tinyllm_queue_active_workers") == 0


def test_context_manager_starts_and_stops(collector: MetricsCollector) -> None:
    with RequestQueue(collector=collector, workers=2) as queue:
        assert queue.submit(lambda: 6 * 7).result(WAIT) == 42
    with pytest.raises(RuntimeError, match="shut down"):
        queue.start()


def test_asubmit_awaits_the_result_and_the_error(collector: MetricsCollector) -> None:
    async def main(queue: RequestQueue) -> tuple[int, BaseException | None]:
        value = await queue.asubmit(lambda: 42, priority="high")
        try:
            await queue.asubmit(lambda: 1 // 0)
        except ZeroDivisionError as exc:
            return value, exc
        return value, None

    with RequestQueue(collector=collector) as queue:
        value, error = asyncio.run(main(queue))
    assert value == 42 and isinstance(error, ZeroDivisionError)
