"""The read and write API's argument checks, shared by the database and its exports."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_range", "check_text"]


def check_text(name: str, value: Any, *, empty_ok: bool = False) -> None:
    """TypeError unless ``value`` is a str; ValueError when empty and not ``empty_ok``."""
    if type(value) is not str:
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value and not empty_ok:
        raise ValueError(f"{name} must be a non-empty str")


def check_range(since: Any, until: Any, model_id: Any) -> None:
    """The read API's argument check (also the HTTP layer's).

    Example:
        >>> check_range(10, 5, None)
        Traceback (most recent call last):
        ...
        ValueError: since must be <= until, got since=10 until=5
    """
    for name, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be epoch seconds (a number) or None, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of epoch seconds, got {value!r}")
    if since is not None and until is not None and since > until:
        raise ValueError(f"since must be <= until, got since={since!r} until={until!r}")
    if model_id is not None:
        check_text("model_id", model_id)
