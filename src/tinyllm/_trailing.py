"""A sum over the trailing minute, in five-second slots (tokens per minute, goodput).

Example:
    >>> window = TrailingMinute()
    >>> window.add(5, now=100.0), window.add(3, now=101.0), window.add(0, now=200.0)
    (5.0, 8.0, 0.0)
"""

from __future__ import annotations

import threading

__all__ = ["TrailingMinute"]

_WINDOW_SECONDS = 60.0
_SLOTS = 12  # five-second slots over the trailing minute


class TrailingMinute:
    """What was added over the trailing minute, in five-second slots.

    The sum is kept as a running total within the current slot and recomputed only
    when an addition falls in a new slot, so most updates are two additions.
    """

    __slots__ = ("_counts", "_lock", "_stamps", "_tick", "_total")

    def __init__(self) -> None:
        self._stamps = [-1] * _SLOTS
        self._counts: list[float] = [0] * _SLOTS
        self._tick = -1
        self._total: float = 0
        self._lock = threading.Lock()

    def add(self, amount: float, now: float) -> float:
        """Add ``amount`` at time ``now`` (seconds); the trailing minute's sum."""
        tick = int(now * _SLOTS / _WINDOW_SECONDS)
        slot = tick % _SLOTS
        with self._lock:
            if tick == self._tick:
                self._counts[slot] += amount
                self._total += amount
                return float(self._total)
            if self._stamps[slot] != tick:
                self._stamps[slot], self._counts[slot] = tick, 0
            self._counts[slot] += amount
            self._tick = tick
            oldest = tick - _SLOTS + 1
            self._total = sum(
                count for stamp, count in zip(self._stamps, self._counts, strict=True)
                if stamp >= oldest
            )
            return float(self._total)
