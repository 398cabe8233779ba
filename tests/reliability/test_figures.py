"""The suite's own plumbing: a recorded figure reaches the end-of-run table."""

from __future__ import annotations

from collections.abc import Callable

from tests.reliability import conftest


def test_a_figure_is_recorded_for_the_table(figure: Callable[..., None]) -> None:
    before = len(conftest._FIGURES)
    figure("example figure", "1 ms", "< 2 ms", True)
    recorded = conftest._FIGURES[before]
    assert (recorded.name, recorded.value, recorded.goal, recorded.met) == (
        "example figure", "1 ms", "< 2 ms", True)
    assert recorded.test.endswith("test_a_figure_is_recorded_for_the_table")
    conftest._FIGURES.pop(before)  # not a real figure: keep the table honest
