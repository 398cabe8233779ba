"""Time limits for model calls: ``Deadline`` (one running limit) and ``Timeouts`` (the settings).

A client holds one ``Timeouts`` and, per request, a ``Deadline`` for the whole request
(``Timeouts.total``) and one for the gap between streamed tokens
(``Timeouts.token_gap``, restarted after each token). ``connect`` and ``read`` go to
the HTTP library through ``Timeouts.httpx()``. Every limit may be ``None`` for "no
limit"; zero, negative, infinite and NaN values are programming errors.

Example:
    >>> timeouts = Timeouts(connect=2.0, total=60.0)
    >>> deadline = timeouts.total_deadline()
    >>> deadline.expired
    False
    >>> deadline.check("generating")          # raises ModelError(error_type="timeout") once passed
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinyllm.errors import ModelError

if TYPE_CHECKING:
    import httpx

__all__ = ["Clock", "Deadline", "Timeouts"]

#: A monotonic clock in seconds (``time.monotonic`` or a test's fake).
Clock = Callable[[], float]


def _check_number(name: str, value: Any, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {valid}, got {type(value).__name__} {value!r}")
    if not (0 < value < math.inf):  # also rejects NaN
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return float(value)


def _check_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0; TypeError/ValueError naming ``name``."""
    return _check_number(name, value, "a finite number > 0")


def _check_limit(name: str, value: Any) -> float | None:
    """Like ``_check_positive``, but None ("no limit") is valid too."""
    if value is None:
        return None
    return _check_number(name, value, "a finite number > 0 or None for no limit")


def _check_callable(name: str, value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")


class Deadline:
    """A point in time a piece of work must finish by; ``None`` seconds means never.

    Args:
        seconds: the limit, from now; a finite number > 0, or None for no limit.
        name: what the limit is called in the error (``"total"``, ``"token_gap"``, ...).
        clock: monotonic seconds; inject a fake in tests.

    ``check(what)`` raises ``ModelError(error_type="timeout")`` once the limit has
    passed, naming the work and the limit; ``restart()`` starts the same limit again
    from now (the token-gap limit restarts after every streamed token).

    Example:
        >>> now = [0.0]
        >>> gap = Deadline(30.0, name="token_gap", clock=lambda: now[0])
        >>> now[0] = 12.0
        >>> gap.remaining()
        18.0
        >>> now[0] = 31.0
        >>> gap.check("waiting for the next token")
        Traceback (most recent call last):
        ...
        tinyllm.errors.ModelError: waiting for the next token: the token_gap limit of 30s has passed
    """

    __slots__ = ("_clock", "_ends_at", "name", "seconds")

    def __init__(
        self, seconds: float | None, *, name: str = "deadline", clock: Clock = time.monotonic
    ) -> None:
        self.seconds = _check_limit("seconds", seconds)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise ValueError("name must not be empty")
        _check_callable("clock", clock)
        self.name = name
        self._clock = clock
        self._ends_at: float | None = None
        self.restart()

    def restart(self) -> None:
        """Start the same limit again from now."""
        self._ends_at = None if self.seconds is None else self._clock() + self.seconds

    def remaining(self) -> float | None:
        """Seconds left (never below 0.0), or None when there is no limit."""
        if self._ends_at is None:
            return None
        return max(0.0, self._ends_at - self._clock())

    @property
    def expired(self) -> bool:
        """Whether the limit has passed (never, without a limit)."""
        return self._ends_at is not None and self._clock() >= self._ends_at

    def check(self, what: str) -> None:
        """Raise ``ModelError(error_type="timeout")`` naming ``what`` and the limit if it passed."""
        if self.expired:
            raise ModelError(
                f"{what}: the {self.name} limit of {self.seconds:g}s has passed",
                error_type="timeout",
            )

    def __repr__(self) -> str:
        return f"Deadline({self.seconds!r}, name={self.name!r}, remaining={self.remaining()!r})"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The time limits of a model client, in seconds; ``None`` means no limit.

    Attributes:
        connect: to open a connection to the backend (and to get one from the pool).
        read: between two reads from the socket (also used for writes).
        total: the whole request, retries and waits included.
        token_gap: between two streamed tokens, so a stalled stream cannot hang.

    Example:
        >>> Timeouts(read=30.0).httpx()
        Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
        >>> Timeouts(total=0)
        Traceback (most recent call last):
        ...
        ValueError: total must be a finite number > 0 or None for no limit, got 0
    """

    connect: float | None = 5.0
    read: float | None = 60.0
    total: float | None = 300.0
    token_gap: float | None = 30.0

    def __post_init__(self) -> None:
        for field in ("connect", "read", "total", "token_gap"):
            value = _check_limit(field, getattr(self, field))
            object.__setattr__(self, field, value)  # frozen: ints become floats once, here

    def httpx(self) -> httpx.Timeout:
        """An ``httpx.Timeout``: connect and pool from ``connect``, read and write from ``read``."""
        import httpx  # a core dependency, imported here to keep ``import tinyllm`` light

        return httpx.Timeout(
            connect=self.connect, read=self.read, write=self.read, pool=self.connect
        )

    def total_deadline(self, *, clock: Clock = time.monotonic) -> Deadline:
        """A ``Deadline`` for the whole request, starting now."""
        return Deadline(self.total, name="total", clock=clock)

    def token_gap_deadline(self, *, clock: Clock = time.monotonic) -> Deadline:
        """A ``Deadline`` for the next streamed token; ``restart()`` it after each token."""
        return Deadline(self.token_gap, name="token_gap", clock=clock)
