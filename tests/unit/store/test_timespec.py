"""The one time/duration parser behind --since, --until and --older-than."""

from __future__ import annotations

import pytest

from tinyllm.store.timespec import parse_duration, parse_time


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("30m", 1800.0), ("24h", 86400.0), ("7d", 604800.0), ("2w", 1209600.0),
    ("1.5h", 5400.0), (" 30D ", 2592000.0), ("0s", 0.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "d", "-1d", "1y", "1 day", "1e3h", "nan", "h1"])
def test_bad_durations_name_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=r"not a duration; use .*30m, 24h, 7d"):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "epoch"), [
    ("1700000000", 1_700_000_000.0),
    ("1700000000.5", 1_700_000_000.5),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0),
    ("2023-11-14T22:13:20", 1_700_000_000.0),  # no offset: UTC
    ("2023-11-15T00:13:20+02:00", 1_700_000_000.0),
    ("2023-11-14", 1_699_920_000.0),
    ("24h", 1_700_000_000.0 - 86400),
    ("30m", 1_700_000_000.0 - 1800),
])
def test_times(text: str, epoch: float) -> None:
    assert parse_time(text, now=1_700_000_000.0) == epoch


def test_relative_time_defaults_to_now() -> None:
    import time

    assert abs(parse_time("1h") - (time.time() - 3600)) < 5


@pytest.mark.parametrize("bad", ["", "yesterday", "2023-13-01", "-5", "1e9", "99999w",
                                 "2023-11-14 nonsense"])
def test_bad_times_name_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601|before 1970"):
        parse_time(bad, now=1_700_000_000.0)


def test_non_strings_are_type_errors() -> None:
    with pytest.raises(TypeError):
        parse_duration(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_time(5.0)  # type: ignore[arg-type]
