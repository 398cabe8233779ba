"""Timeouts and Deadline: defaults, validation naming the field, the httpx mapping, expiry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.unit.resilience.conftest import FakeClock
from tinyllm.errors import ModelError, classify_error
from tinyllm.resilience import Deadline, Timeouts

FIELDS = ("connect", "read", "total", "token_gap")


def test_defaults() -> None:
    assert Timeouts() == Timeouts(connect=5.0, read=60.0, total=300.0, token_gap=30.0)


def test_ints_become_floats_and_none_means_no_limit() -> None:
    t = Timeouts(connect=2, read=None, total=None, token_gap=1)
    assert (t.connect, t.read, t.total, t.token_gap) == (2.0, None, None, 1.0)
    assert type(t.connect) is float


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    ("value", "exc"),
    [(0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError),
     ("5", TypeError), (True, TypeError)],
)
def test_validation_names_the_field(field: str, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=rf"^{field} must be a finite number > 0 or None for no limit"):
        Timeouts(**{field: value})


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        Timeouts().read = 1.0  # type: ignore[misc]


def test_httpx_timeout() -> None:
    t = Timeouts(connect=3.0, read=20.0).httpx()
    assert isinstance(t, httpx.Timeout)
    assert (t.connect, t.read, t.write, t.pool) == (3.0, 20.0, 20.0, 3.0)
    unlimited = Timeouts(connect=None, read=None).httpx()
    assert (unlimited.connect, unlimited.read, unlimited.write, unlimited.pool) == (None,) * 4


def test_deadline_counts_down_and_expires(clock: FakeClock) -> None:
    deadline = Deadline(10.0, clock=clock)
    assert deadline.remaining() == 10.0 and not deadline.expired
    deadline.check("generating")  # not yet: no error
    clock.advance(9.5)
    assert deadline.remaining() == pytest.approx(0.5) and not deadline.expired
    clock.advance(0.5)
    assert deadline.remaining() == 0.0 and deadline.expired
    clock.advance(5.0)
    assert deadline.remaining() == 0.0  # never negative


def test_check_raises_a_timeout_naming_the_work_and_the_limit(clock: FakeClock) -> None:
    total = Timeouts(total=120).total_deadline(clock=clock)
    clock.advance(120.0)
    with pytest.raises(ModelError) as info:
        total.check("calling llama3 at http://localhost:11434")
    assert str(info.value) == \
        "calling llama3 at http://localhost:11434: the total limit of 120s has passed"
    assert classify_error(info.value) == "timeout" and info.value.error_type == "timeout"


def test_token_gap_restarts_after_each_token(clock: FakeClock) -> None:
    gap = Timeouts(token_gap=2.0).token_gap_deadline(clock=clock)
    for _ in range(5):
        clock.advance(1.5)
        gap.check("waiting for the next token")
        gap.restart()  # a token arrived
    clock.advance(2.0)
    with pytest.raises(ModelError, match="the token_gap limit of 2s has passed"):
        gap.check("waiting for the next token")


def test_no_limit(clock: FakeClock) -> None:
    forever = Deadline(None, clock=clock)
    clock.advance(1e9)
    assert forever.remaining() is None and not forever.expired
    forever.check("anything")
    assert Timeouts(total=None).total_deadline().remaining() is None


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "argument"),
    [
        ((0,), {}, ValueError, "seconds"),
        ((-3,), {}, ValueError, "seconds"),
        ((float("nan"),), {}, ValueError, "seconds"),
        (("10",), {}, TypeError, "seconds"),
        ((1,), {"name": ""}, ValueError, "name"),
        ((1,), {"name": 3}, TypeError, "name"),
        ((1,), {"clock": "now"}, TypeError, "clock"),
    ],
)
def test_deadline_validation_names_the_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception], argument: str
) -> None:
    with pytest.raises(exc, match=argument):
        Deadline(*args, **kwargs)
