"""Global CLI options are accepted before or after the command name."""

from __future__ import annotations

import pytest

from tinyllm.cli import hoist_global_options


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["health", "--json"], ["health", "--json"]),
        (["health", "--log-level", "debug"], ["--log-level", "debug", "health"]),
        (["health", "--log-level=debug", "--tracing"], ["--log-level=debug", "--tracing",
                                                         "health"]),
        (["debug", "emit-event", "a", "b", "--otlp-endpoint", "http://h:4317", "--no-tracing"],
         ["--otlp-endpoint", "http://h:4317", "--no-tracing", "debug", "emit-event", "a", "b"]),
        (["run", "--", "--tracing"], ["run", "--", "--tracing"]),
        (["health", "--log-level"], ["health", "--log-level"]),  # typer reports the gap
    ],
)
def test_hoisting(argv: list[str], expected: list[str]) -> None:
    assert hoist_global_options(argv) == expected
