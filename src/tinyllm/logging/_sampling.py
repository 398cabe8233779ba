"""Log sampling: keep a fraction of the lines below warning, and at most N per second."""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from structlog.exceptions import DropEvent
from structlog.typing import EventDict, WrappedLogger

from tinyllm.logging._pipeline import count_dropped

# Warnings and above are what an operator needs when something is wrong: never sampled.
_NEVER_SAMPLED = frozenset({"warning", "warn", "error", "err", "exception", "critical", "fatal"})
_HASH_SPACE = 2**32
# Knuth's multiplicative constant: spreads CRC-32 values whose inputs differ only slightly
# (req-1, req-2, ...) over the whole 32-bit space.
_MIX = 0x9E3779B1


def _trace_id() -> str:
    from opentelemetry.trace import get_current_span

    ctx = get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class LogSampler:
    """Processor that drops lines below warning by rate, then by a per-second cap.

    Dropped lines raise ``structlog.DropEvent`` (the stdlib handler treats it the same
    way) and are counted in ``log_records_dropped_total{reason="sampled"|"rate_limited"}``.
    """

    processor_name = "sample"

    def __init__(
        self,
        sample_rate: float,
        max_per_second: int | None,
        hash_based: bool,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.sample_rate = sample_rate
        self.max_per_second = max_per_second
        self.hash_based = hash_based
        self._threshold = int(sample_rate * _HASH_SPACE)
        self._clock = clock
        self._rng = rng
        self._lock = threading.Lock()
        self._window = -1
        self._count = 0

    def describe(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "max_per_second": self.max_per_second,
            "hash_based": self.hash_based,
        }

    def hash_keeps(self, event_dict: EventDict) -> bool:
        """The consistent decision: a hash of the event name and request/trace id."""
        scope = event_dict.get("request_id") or event_dict.get("trace_id") or _trace_id()
        key = f"{event_dict.get('event')}|{scope}".encode("utf-8", "backslashreplace")
        return (zlib.crc32(key) * _MIX) % _HASH_SPACE < self._threshold

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if method_name in _NEVER_SAMPLED:
            return event_dict
        if self.sample_rate < 1.0:
            if self.hash_based:
                keep = self.hash_keeps(event_dict)
            else:
                keep = self._rng() < self.sample_rate
            if not keep:
                count_dropped("sampled")
                raise DropEvent
        if self.max_per_second is not None:
            now = int(self._clock())
            with self._lock:
                if now != self._window:
                    self._window, self._count = now, 0
                over = self._count >= self.max_per_second
                if not over:
                    self._count += 1
            if over:
                count_dropped("rate_limited")
                raise DropEvent
        return event_dict


def make_sampler(sample_rate: Any, max_per_second: Any, hash_based: Any) -> LogSampler | None:
    """Validate the arguments; None when they ask for no sampling at all."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float):
        raise TypeError(f"sample_rate must be a number in (0, 1], got {sample_rate!r}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1] (e.g. 0.1 keeps 10%), got {sample_rate!r}")
    if max_per_second is not None:
        if isinstance(max_per_second, bool) or not isinstance(max_per_second, int):
            raise TypeError(
                f"max_per_second must be a positive int or None, got {max_per_second!r}"
            )
        if max_per_second < 1:
            raise ValueError(
                f"max_per_second must be a positive int or None, got {max_per_second!r}"
            )
    if not isinstance(hash_based, bool):
        raise TypeError(f"hash_based must be True or False, got {hash_based!r}")
    if sample_rate == 1 and max_per_second is None:
        return None
    return LogSampler(float(sample_rate), max_per_second, hash_based)
