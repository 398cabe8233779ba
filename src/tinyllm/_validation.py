"""Argument checks shared by every public entry point (one wording for every message)."""

from __future__ import annotations

from typing import Any

_INF = float("inf")


def check_amount(name: str, value: Any, *, integral: bool = False) -> None:
    """Raise TypeError/ValueError naming ``name`` unless ``value`` is a finite number >= 0.

    Example:
        >>> check_amount("wait_time", -1)
        Traceback (most recent call last):
        ...
        ValueError: wait_time must be a finite number >= 0, got -1
    """
    kind = type(value)
    if (kind is float or kind is int) and 0 <= value < _INF and not (
        integral and kind is float and value != int(value)
    ):
        return  # the common case, kept cheap: it runs on every token-count update
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not 0 <= value < _INF:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if integral and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")


def unknown_keys(mapping: Any, valid: tuple[str, ...], where: str) -> list[str]:
    """One problem line per key of ``mapping`` that is not in ``valid``, naming the valid.

    Example:
        >>> unknown_keys({"prices": {}, "currency": "EUR"}, ("prices", "slo"), "c.yaml: top level")
        ["c.yaml: top level: unknown key 'currency' (valid: prices, slo)"]
    """
    return [f"{where}: unknown key {key!r} (valid: {', '.join(valid)})"
            for key in mapping if key not in valid]
