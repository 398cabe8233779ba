"""The graph checker's base: where problems are collected, and the checks of single
values (whole numbers, text, regular expressions, known keys) every part of a graph file
uses. Each problem is one line, ``<file>: <where>: <reason>``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tinyllm.graph.model import GraphError

#: Graph names and node ids: they label metrics.
_NAME = re.compile(r"^[a-z0-9_-]+$")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _listing(values: Iterable[str]) -> str:
    return ", ".join(values)


class Problems:
    """Every problem found so far, and the checks of single values that add to them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.problems.append(f"{self.source}: {where}: {reason}")

    def fail(self) -> GraphError:
        return GraphError(self.problems, source=self.source)

    def unknown_keys(
        self, where: str, data: Mapping[Any, Any], valid: tuple[str, ...], what: str
    ) -> None:
        for key in data:
            if key in valid:
                continue
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.add(where, f"unknown key {key!r} ({hint}valid for {what}: {_listing(valid)})")

    def required(self, where: str, spec: Mapping[str, Any], key: str, hint: str) -> bool:
        if key in spec:
            return True
        self.add(where, f"missing required key {key!r} ({hint})")
        return False

    def integer(self, where: str, key: str, value: Any, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, f"{key} must be a whole number >= {minimum}, got {value!r}")
            return None
        if value < minimum:
            self.add(where, f"{key} must be >= {minimum}, got {value}")
            return None
        return value

    def text(self, where: str, key: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            self.add(where, f"{key} must be non-empty text, got {value!r}")
            return None
        return value

    def regex(self, where: str, key: str, value: Any) -> re.Pattern[str] | None:
        if self.text(where, key, value) is None:
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            self.add(where, f"{key}: bad regular expression {value!r}: {exc}")
            return None
