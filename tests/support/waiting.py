"""Waiting for what a server does just after its answer has gone out."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["eventually"]


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "it") -> None:
    """Until ``check()`` holds, or fail after ``timeout`` seconds saying ``what`` never
    happened: the gateway counts an answer, and adds its cost to its key's spend, just
    after the answer has gone out, so a client may see the answer a moment before."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.005)
