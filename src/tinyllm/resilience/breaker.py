"""A circuit breaker per backend: fail fast while the backend is down, probe it now and then.

::

    closed ──(failure_threshold consecutive failures)──> open
    open ──(reset_timeout passed; noticed on the next call or .state read)──> half-open
    half-open ──(the probe succeeds)──> closed
    half-open ──(the probe fails)──> open (a new reset_timeout)

While open, ``before_call`` raises ``CircuitOpenError`` without touching the backend;
half-open lets exactly one probe call through at a time and fails the others fast.
Only failures that say the backend is unhealthy count (``counts_as_failure``): a
connection error, a timeout, a 5xx. A bad request, a cancelled call or a 429 says
nothing about the backend's health and leaves the count alone.

Every transition sets ``tinyllm_circuit_breaker_state{model}`` (0 closed, 1 half-open,
2 open) and counts ``tinyllm_circuit_breaker_transitions_total{model,from_state,to_state}``
(both through ``MetricsCollector.update_circuit_breaker_state``) and emits one ``model``
event, ``circuit_breaker.open`` / ``.half_open`` / ``.closed`` (a warning when opening),
which the default emitter writes as the transition's one log line; each counted failure adds to
``tinyllm_circuit_breaker_failures_total{model}``. The breaker's name is the ``model`` label.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.metrics import MetricsCollector
    >>> breaker = CircuitBreaker("ollama", failure_threshold=2,
    ...                          collector=MetricsCollector(registry=CollectorRegistry()))
    >>> for _ in range(2):
    ...     breaker.record_failure(ConnectionRefusedError())
    >>> breaker.state
    'open'
    >>> breaker.before_call()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tinyllm.errors.CircuitOpenError: circuit breaker 'ollama' is open after 2 consecutive ...
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from tinyllm.errors import CircuitOpenError, classify_error
from tinyllm.events import EventCategory, EventSeverity, emit_event
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector
from tinyllm.resilience.timeouts import Clock, _check_callable, _check_positive

__all__ = [
    "BREAKER_FAILURE_TYPES",
    "CircuitBreaker",
    "counts_as_failure",
    "get_circuit_breaker",
    "reset_circuit_breakers",
]

P = ParamSpec("P")
T = TypeVar("T")

#: The ``classify_error`` types a breaker counts: the backend is unreachable, too slow or
#: broken. Not rate_limited (a 429 is a healthy backend pushing back; retries honour its
#: Retry-After), nor bad_request, cancelled, circuit_open, oom, cuda or unknown.
BREAKER_FAILURE_TYPES = frozenset({"connection", "timeout", "server_error"})

_CLOSED, _HALF_OPEN, _OPEN = "closed", "half-open", "open"

def counts_as_failure(error: BaseException | None) -> bool:
    """Whether ``error`` says the backend is unhealthy (its type is in ``BREAKER_FAILURE_TYPES``).

    ``None`` (a failure reported without an exception) counts.

    Example:
        >>> counts_as_failure(TimeoutError()), counts_as_failure(ValueError("bad prompt"))
        (True, False)
    """
    if error is None:
        return True
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception or None, got {type(error).__name__} {error!r}")
    return classify_error(error) in BREAKER_FAILURE_TYPES


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one backend; thread-safe.

    Args:
        name: the backend (a model or base URL); the ``model`` label of its metrics.
        failure_threshold: consecutive counted failures that open it (an int >= 1).
        reset_timeout: seconds it stays open before letting a probe through (> 0).
        collector: where to record; default the process-wide collector.
        clock: monotonic seconds; inject a fake in tests.

    Use ``before_call()`` / ``record_success()`` / ``record_failure(error)`` around a
    call, or let ``call(fn, ...)``, ``await acall(afn, ...)``, ``with breaker:`` or
    ``async with breaker:`` do it. ``record_*`` apply to the breaker's state at the time
    they are called: a success closes a half-open breaker and resets the count, a counted
    failure in half-open opens it again, and reports arriving while it is open (from calls
    that started before it opened) only add to the failure count.

    Example:
        >>> breaker = CircuitBreaker("openai:gpt-4o-mini", failure_threshold=3)
        >>> with breaker:
        ...     answer = "4"             # the backend call
        >>> breaker.call(len, "four")
        4
        >>> breaker.state, breaker.failure_count
        ('closed', 0)
    """

    __slots__ = (
        "_clock", "_collector", "_failures", "_lock", "_opened_at", "_probe_since", "_state",
        "failure_threshold", "name", "reset_timeout",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        collector: MetricsCollector | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError("name must not be empty")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        self.reset_timeout = _check_positive("reset_timeout", reset_timeout)
        if collector is not None and not isinstance(collector, MetricsCollector):
            raise TypeError(f"collector must be a MetricsCollector or None, got {collector!r}")
        _check_callable("clock", clock)
        self.name = name
        self.failure_threshold = failure_threshold
        self._collector = collector
        self._clock = clock
        self._state = _CLOSED
        self._failures = 0
        self._opened_at = 0.0
        # When the half-open probe was let through; None while no probe is out. A probe
        # whose outcome is never reported frees its slot after reset_timeout, so a lost
        # report cannot leave the breaker failing fast for ever.
        self._probe_since: float | None = None
        # Re-entrant: transitions emit events, and a handler may look at the breaker.
        self._lock = threading.RLock()
        self._metrics().update_circuit_breaker_state(_CLOSED, name)

    def _metrics(self) -> MetricsCollector:
        return self._collector or get_metrics_collector()

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (open past reset_timeout reads half-open)."""
        with self._lock:
            self._refresh(self._clock())
            return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive counted failures since the last success."""
        return self._failures

    def _refresh(self, now: float) -> None:
        if self._state == _OPEN and now - self._opened_at >= self.reset_timeout:
            self._transition(_HALF_OPEN)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_since = None
        self._transition(_OPEN)

    def _transition(self, to: str) -> None:
        previous, self._state = self._state, to
        # update_circuit_breaker_state sets the gauge and counts the transition itself.
        self._metrics().update_circuit_breaker_state(to, self.name)
        data: dict[str, Any] = {
            "breaker": self.name, "from_state": previous, "to_state": to,
            "consecutive_failures": self._failures,
        }
        if to == _OPEN:
            data["reset_timeout"] = self.reset_timeout
            message = "circuit breaker opened: calls fail fast until the reset timeout passes"
        elif to == _HALF_OPEN:
            message = "circuit breaker half-open: letting one probe call through"
        else:
            message = "circuit breaker closed: the backend answered again"
        # The event is the transition's one log line too: the default emitter's
        # LogEventHandler writes it (logger "tinyllm.events") at the event's severity, so
        # logging here as well would print every transition twice.
        emit_event(
            f"circuit_breaker.{to.replace('-', '_')}",
            EventCategory.MODEL,
            EventSeverity.WARNING if to == _OPEN else EventSeverity.INFO,
            f"{message} ({self.name})",
            data=data,
        )

    # -- the protocol --------------------------------------------------------------------
    def before_call(self) -> None:
        """Raise ``CircuitOpenError`` if the call must not go to the backend now.

        Closed: returns. Open: raises (the message names the breaker, the consecutive
        failures and the seconds until it tries again; ``retry_after`` holds those
        seconds). Half-open: lets one probe through and fails the others fast until the
        probe's outcome is recorded.
        """
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state == _CLOSED:
                return
            if self._state == _OPEN:
                wait = max(0.0, self._opened_at + self.reset_timeout - now)
                raise CircuitOpenError(
                    f"circuit breaker {self.name!r} is open after {self._failures} consecutive "
                    f"failures; it will try again in {wait:.1f}s",
                    retry_after=wait,
                )
            if self._probe_since is None or now - self._probe_since >= self.reset_timeout:
                self._probe_since = now
                return
            wait = max(0.0, self._probe_since + self.reset_timeout - now)
            raise CircuitOpenError(
                f"circuit breaker {self.name!r} is half-open after {self._failures} "
                f"consecutive failures and a probe call is testing the backend; it will try "
                f"again when the probe ends, in at most {wait:.1f}s",
                retry_after=wait,
            )

    def record_success(self) -> None:
        """A call succeeded: reset the count; a half-open breaker closes."""
        with self._lock:
            self._refresh(self._clock())
            if self._state == _OPEN:
                return  # a call from before it opened; the failures since are newer news
            self._failures = 0
            self._probe_since = None
            if self._state == _HALF_OPEN:
                self._transition(_CLOSED)

    def record_failure(self, error: BaseException | None = None) -> None:
        """A call failed with ``error``; counted only if ``counts_as_failure(error)``.

        The ``failure_threshold``-th consecutive counted failure opens a closed breaker;
        a counted failure in half-open opens it again with a new reset timeout. A failure
        that does not count frees the half-open probe slot and changes nothing else.
        """
        counted = counts_as_failure(error)
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if not counted:
                self._probe_since = None
                return
            self._failures += 1
            self._metrics().increment_circuit_breaker_failures(self.name)
            if self._state == _HALF_OPEN or (
                self._state == _CLOSED and self._failures >= self.failure_threshold
            ):
                self._open(now)

    # -- conveniences --------------------------------------------------------------------
    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` guarded by the breaker; its error is recorded and re-raised."""
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self.record_failure(error)
            raise
        self.record_success()
        return result

    async def acall(
        self, afn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await afn(*args, **kwargs)`` guarded by the breaker."""
        self.before_call()
        try:
            result = await afn(*args, **kwargs)
        except BaseException as error:
            self.record_failure(error)
            raise
        self.record_success()
        return result

    def __enter__(self) -> CircuitBreaker:
        self.before_call()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.record_success()
        else:
            self.record_failure(exc)

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        return (f"CircuitBreaker({self.name!r}, state={self._state!r}, "
                f"failures={self._failures}/{self.failure_threshold})")


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def get_circuit_breaker(
    name: str,
    *,
    failure_threshold: int | None = None,
    reset_timeout: float | None = None,
    collector: MetricsCollector | None = None,
    clock: Clock | None = None,
) -> CircuitBreaker:
    """The process-wide breaker of backend ``name``, created on first use.

    Settings left out take the ``CircuitBreaker`` defaults on creation and match anything
    later; a setting given that differs from the existing breaker's is a configuration
    error (ValueError), not a silent reuse.

    Example:
        >>> reset_circuit_breakers()
        >>> get_circuit_breaker("ollama", failure_threshold=3) is get_circuit_breaker("ollama")
        True
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    given: dict[str, Any] = {
        key: value for key, value in (
            ("failure_threshold", failure_threshold), ("reset_timeout", reset_timeout),
            ("collector", collector), ("clock", clock),
        ) if value is not None
    }
    with _breakers_lock:
        found = _breakers.get(name)
        if found is None:
            found = _breakers[name] = CircuitBreaker(name, **given)
            return found
    have = {"failure_threshold": found.failure_threshold, "reset_timeout": found.reset_timeout,
            "collector": found._collector, "clock": found._clock}
    for key, value in given.items():
        same = value is have[key] if key in ("collector", "clock") else value == have[key]
        if not same:
            raise ValueError(
                f"the circuit breaker {name!r} already exists with {key}={have[key]!r}; got "
                f"{key}={value!r} (reset_circuit_breakers() forgets it)"
            )
    return found


def reset_circuit_breakers() -> None:
    """Forget every process-wide breaker (tests); the next ``get_circuit_breaker`` builds afresh.

    Example:
        >>> reset_circuit_breakers()
    """
    with _breakers_lock:
        _breakers.clear()
