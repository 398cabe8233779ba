"""``RequestQueue``: a bounded priority queue of requests served by N worker threads.

Priorities are ``high`` > ``normal`` > ``low``; within one priority, first in, first
out. A full queue refuses a request at once with ``QueueFullError`` rather than making
the caller wait (back-pressure the caller can see and retry). The queue feeds the
``tinyllm_queue_*`` families: size per priority, wait time per priority, accepted and
rejected requests per priority, and busy workers.

Example:
    >>> from tinyllm.queue import RequestQueue
    >>> with RequestQueue(max_size=10, workers=2) as queue:
    ...     future = queue.submit(lambda: 2 + 2, priority="high")
    ...     future.result(timeout=5)
    4
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tinyllm.errors import TinyLLMError

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector

__all__ = ["PRIORITIES", "QueueFullError", "RequestQueue"]

T = TypeVar("T")

#: Priorities, highest first.
PRIORITIES = ("high", "normal", "low")


class QueueFullError(TinyLLMError):
    """The queue already holds ``max_size`` waiting requests; nothing was queued.

    ``error_type`` is ``rate_limited`` (what ``classify_error`` reports): like a 429, it
    says "too much at once, retry later".

    Example:
        >>> err = QueueFullError(size=100, max_size=100, priority="low", name="default")
        >>> err.size, err.max_size
        (100, 100)
    """

    error_type = "rate_limited"

    def __init__(self, *, size: int, max_size: int, priority: str, name: str) -> None:
        super().__init__(
            f"request queue {name!r} is full: size={size}, max_size={max_size}; "
            f"{priority!r} request rejected (retry later, or raise max_size)"
        )
        self.size = size
        self.max_size = max_size
        self.priority = priority
        self.name = name


def _check_priority(priority: Any) -> str:
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise ValueError(f"priority={priority!r} is not valid; use one of: {', '.join(PRIORITIES)}")
    return priority


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class _Gauges:
    """Process-wide totals behind the size and active-worker gauges.

    The gauges have no queue label, so two queues in one process share each series;
    each queue reports its changes here and the gauge is set to the sum, which keeps
    it exact however many queues there are.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # id(FamilySet) -> (a weak reference to it, totals by priority or "active");
        # the reference tells a reused id from the same family set.
        self._by_set: dict[int, tuple[weakref.ref[Any], dict[str, int]]] = {}

    def _totals(self, collector: MetricsCollector) -> dict[str, int]:
        families = collector.families
        entry = self._by_set.get(id(families))
        if entry is None or entry[0]() is not families:
            entry = self._by_set[id(families)] = (weakref.ref(families), {})
        return entry[1]

    def add_size(self, collector: MetricsCollector, priority: str, delta: int) -> None:
        with self.lock:
            totals = self._totals(collector)
            total = totals[priority] = totals.get(priority, 0) + delta
            # Set under the lock so that two updates cannot land in the wrong order.
            collector.set_queue_size(total, priority)

    def add_active(self, collector: MetricsCollector, delta: int) -> None:
        with self.lock:
            totals = self._totals(collector)
            total = totals[" active"] = totals.get(" active", 0) + delta
            collector.set_queue_active_workers(total)


_GAUGES = _Gauges()


@dataclass(slots=True)
class _Item(Generic[T]):
    fn: Callable[[], T]
    future: Future[T]
    priority: str
    enqueued: float


class RequestQueue:
    """Bounded priority queue with ``workers`` threads running the submitted callables.

    Args:
        max_size: how many requests may wait (running ones not included); one more is
            rejected with ``QueueFullError``.
        workers: worker threads; each runs one request at a time.
        collector: where the queue metrics go (default: the process-wide collector).
        name: for thread names, messages and logs.
        clock: monotonic seconds, for the wait-time histogram; tests pass a fake one.

    Workers start on ``start()``, on entering ``with``, or on the first ``submit``.
    An exception raised by a request goes to its future; the worker carries on.

    Example:
        >>> queue = RequestQueue(max_size=2, workers=1)
        >>> queue.submit(lambda: "done").result(timeout=5)
        'done'
        >>> queue.shutdown()
    """

    def __init__(
        self,
        max_size: int = 100,
        workers: int = 2,
        *,
        collector: MetricsCollector | None = None,
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_size = _check_count("max_size", max_size)
        self.workers = _check_count("workers", workers)
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        if collector is None:
            from tinyllm.metrics.collector import get_metrics_collector

            collector = get_metrics_collector()
        self.name = name
        self._collector = collector
        self._clock = clock
        self._queues: dict[str, deque[_Item[Any]]] = {p: deque() for p in PRIORITIES}
        self._size = 0
        self._active = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        self._seq = itertools.count(1)
        for priority in PRIORITIES:  # every series exists from the start, at 0
            _GAUGES.add_size(collector, priority, 0)
        _GAUGES.add_active(collector, 0)

    # -- introspection ---------------------------------------------------------------
    @property
    def size(self) -> int:
        """Requests waiting (not yet picked up by a worker)."""
        return self._size

    def sizes(self) -> dict[str, int]:
        """Waiting requests per priority.

        Example:
            >>> RequestQueue().sizes()
            {'high': 0, 'normal': 0, 'low': 0}
        """
        with self._cond:
            return {p: len(q) for p, q in self._queues.items()}

    @property
    def active_workers(self) -> int:
        """Workers running a request right now."""
        return self._active

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker threads (idempotent). Raises RuntimeError after ``shutdown``."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"request queue {self.name!r} is shut down")
            if self._started:
                return
            self._started = True
            for i in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"tinyllm-queue-{self.name}-{i}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def shutdown(self, wait: bool = True, cancel_pending: bool = False) -> None:
        """Stop accepting requests; workers finish what is queued (or, with
        ``cancel_pending``, the waiting requests' futures are cancelled), then exit.
        With ``wait``, return once every worker has exited.

        Example:
            >>> q = RequestQueue()
            >>> q.shutdown(cancel_pending=True)
        """
        cancelled: list[_Item[Any]] = []
        with self._cond:
            self._closed = True
            if cancel_pending:
                for priority, items in self._queues.items():
                    if items:
                        _GAUGES.add_size(self._collector, priority, -len(items))
                    cancelled.extend(items)
                    items.clear()
                self._size = 0
            self._cond.notify_all()
            threads = list(self._threads)
        for item in cancelled:
            item.future.cancel()
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def __enter__(self) -> RequestQueue:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=True)

    # -- submitting --------------------------------------------------------------------
    def submit(self, fn: Callable[[], T], priority: str = "normal") -> Future[T]:
        """Queue ``fn`` (called with no arguments) and return its future.

        Raises ``QueueFullError`` at once when ``max_size`` requests already wait
        (counted in ``queue_requests_rejected_total``), ValueError for an unknown
        priority, RuntimeError after ``shutdown``.

        Example:
            >>> with RequestQueue() as q:
            ...     q.submit(lambda: 1 / 0).exception(timeout=5)
            ZeroDivisionError('division by zero')
        """
        if not callable(fn):
            raise TypeError(f"fn must be a callable taking no arguments, got {fn!r}")
        _check_priority(priority)
        if not self._started:
            self.start()
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"request queue {self.name!r} is shut down")
            size = self._size
            full = size >= self.max_size
            if not full:
                self._queues[priority].append(_Item(fn, future, priority, self._clock()))
                self._size = size + 1
                _GAUGES.add_size(self._collector, priority, 1)
                self._cond.notify()
        if full:
            self._collector.increment_queue_rejections(priority)
            raise QueueFullError(size=size, max_size=self.max_size, priority=priority,
                                 name=self.name)
        self._collector.increment_queue_requests(priority)
        return future

    async def asubmit(self, fn: Callable[[], T], priority: str = "normal") -> T:
        """``submit`` for asyncio code: await the result without blocking the loop.

        Cancelling the awaiting task cancels the request if it is still waiting.

        Example:
            >>> import asyncio
            >>> async def main():
            ...     with RequestQueue() as q:
            ...         return await q.asubmit(lambda: 42, priority="low")
            >>> asyncio.run(main())
            42
        """
        return await asyncio.wrap_future(self.submit(fn, priority))

    # -- the workers -------------------------------------------------------------------
    def _take(self) -> _Item[Any] | None:
        """The next item, highest priority first; None once shut down and drained."""
        with self._cond:
            while self._size == 0:
                if self._closed:
                    return None
                self._cond.wait()
            item = next(q for q in self._queues.values() if q).popleft()  # high first
            self._size -= 1
            _GAUGES.add_size(self._collector, item.priority, -1)
            self._active += 1
            _GAUGES.add_active(self._collector, 1)
            return item

    def _work(self) -> None:
        while True:
            item = self._take()
            if item is None:
                return
            try:
                # False when the caller cancelled the future while it waited.
                if item.future.set_running_or_notify_cancel():
                    self._collector.record_queue_wait_time(
                        max(0.0, self._clock() - item.enqueued), item.priority)
                    try:
                        result = item.fn()
                    except BaseException as exc:  # to the caller, as ThreadPoolExecutor does
                        item.future.set_exception(exc)
                    else:
                        item.future.set_result(result)
            finally:
                with self._cond:
                    self._active -= 1
                    _GAUGES.add_active(self._collector, -1)
                del item  # drop the result's last reference before waiting again

    def __repr__(self) -> str:
        return (f"RequestQueue(name={self.name!r}, max_size={self.max_size}, "
                f"workers={self.workers}, size={self._size}, active={self._active})")
