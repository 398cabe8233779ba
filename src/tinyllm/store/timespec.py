"""Times and durations as people type them: ``24h``, ``7d``, ISO 8601, epoch seconds.

One parser for the CLI's ``--since``/``--until`` (a point in time) and ``store prune
--older-than`` (a duration). A duration is a number and a unit: ``s``, ``m``, ``h``,
``d`` or ``w`` (``90s``, ``30m``, ``1.5h``, ``7d``, ``2w``). A time is an ISO 8601
datetime (``2026-01-31T12:00:00Z``; without an offset it is UTC), epoch seconds
(``1700000000``), or a duration meaning "that long ago".

Example:
    >>> parse_duration("30d")
    2592000.0
    >>> parse_time("24h", now=1_700_086_400.0)
    1700000000.0
    >>> parse_time("2023-11-14T22:13:20Z")
    1700000000.0
    >>> parse_time("1700000000")
    1700000000.0
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

__all__ = ["DURATION_FORMS", "TIME_FORMS", "parse_duration", "parse_time"]

#: What a duration may look like, for error messages.
DURATION_FORMS = "a number and a unit s, m, h, d or w (e.g. 30m, 24h, 7d)"
#: What a time may look like, for error messages.
TIME_FORMS = ("an ISO 8601 datetime (e.g. 2026-01-31T12:00:00Z), epoch seconds "
              "(e.g. 1700000000) or a duration ago (e.g. 30m, 24h, 7d)")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])$", re.IGNORECASE)
_EPOCH_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)$")


def parse_duration(text: str) -> float:
    """``text`` (``30m``, ``24h``, ``7d``, ...) in seconds; ValueError naming the forms.

    Example:
        >>> parse_duration("1.5h")
        5400.0
    """
    if not isinstance(text, str):
        raise TypeError(f"duration must be a str like 24h, got {type(text).__name__}")
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text[:40]!r} is not a duration; use {DURATION_FORMS}")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(seconds):
        raise ValueError(f"{text[:40]!r} is too large a duration")
    return seconds


def parse_time(text: str, now: float | None = None) -> float:
    """``text`` as epoch seconds: ISO 8601 (UTC unless it has an offset), epoch seconds,
    or a duration before ``now`` (default: the current time). ValueError naming the forms.

    Example:
        >>> parse_time("7d", now=604800.0)
        0.0
    """
    if not isinstance(text, str):
        raise TypeError(f"time must be a str, got {type(text).__name__}")
    raw = text.strip()
    if _EPOCH_RE.match(raw):
        value = float(raw)
        if math.isfinite(value):
            return value
    elif _DURATION_RE.match(raw):
        value = (time.time() if now is None else now) - parse_duration(raw)
        if value < 0:
            raise ValueError(f"{text[:40]!r} reaches back before 1970")
        return value
    elif raw[:4].isdigit():
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            value = when.timestamp()
            if value >= 0:
                return value
    raise ValueError(f"{text[:40]!r} is not a time; use {TIME_FORMS}")
