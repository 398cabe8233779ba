"""Every docstring example of the gateway's modules runs and shows what it says.

``tinyllm.serve`` has no ``__init__.py`` (a namespace package), so the package-wide
test (tests/unit/test_docstring_examples.py, ``pkgutil.walk_packages``) never reaches
its modules; this one does."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinyllm.serve

MODULES = sorted(m.name for m in pkgutil.iter_modules(tinyllm.serve.__path__, "tinyllm.serve."))


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), report=False,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module} failed"
