"""The reliability suite's shared parts: every test records the figure it proves, and the
run ends with a table of them (what was measured, the goal, met or not).

Fast cases run in ``make test``; the long ones are marked ``soak`` and run with
``make soak`` (docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

__all__ = ["Figure", "figure"]


@dataclass(frozen=True)
class Figure:
    """One measured figure: what, how much, the goal, whether it was met."""

    test: str
    name: str
    value: str
    goal: str
    met: bool


_FIGURES: list[Figure] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figure(name, value, goal, met)``: record a figure for the end-of-run table.

    Example: ``figure("restart after SIGKILL, p99", f"{p99 * 1000:.0f} ms", "< 1 s",
    p99 < 1.0)``; the test still asserts its goal itself.
    """

    def record(name: str, value: str, goal: str, met: bool) -> None:
        _FIGURES.append(Figure(request.node.nodeid, name, value, goal, bool(met)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    width = max(len(f.name) for f in _FIGURES)
    for f in _FIGURES:
        mark = "met" if f.met else "NOT MET"
        terminalreporter.write_line(f"{f.name:<{width}}  {f.value:>14}  goal {f.goal:<12} {mark}")
