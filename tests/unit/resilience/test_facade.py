"""The facade: a sorted, complete __all__, and every public docstring example runs."""

from __future__ import annotations

import doctest
import importlib

import pytest

import tinyllm.resilience as resilience


def _ruff_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then everything else."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


def test_all_is_sorted_and_complete() -> None:
    assert resilience.__all__ == sorted(resilience.__all__, key=_ruff_key)
    public = {n for n in vars(resilience) if not n.startswith("_") and not isinstance(
        getattr(resilience, n), type(importlib))}
    assert public == set(resilience.__all__)


@pytest.mark.parametrize(
    "module", ["tinyllm.resilience", "tinyllm.resilience.breaker", "tinyllm.resilience.retry",
               "tinyllm.resilience.ratelimit", "tinyllm.resilience.timeouts"],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
