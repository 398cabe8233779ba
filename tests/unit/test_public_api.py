"""The facades re-export, with sorted __all__ that match their namespaces."""

from __future__ import annotations

import importlib

import pytest


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then everything else."""
    if name.isupper():
        return (0, name)
    return (1, name) if name[0].isupper() else (2, name)


@pytest.mark.parametrize(
    "module",
    ["tinyllm", "tinyllm.metrics", "tinyllm.telemetry", "tinyllm.events", "tinyllm.logging",
     "tinyllm.redaction", "tinyllm.health", "tinyllm.store", "tinyllm.models",
     "tinyllm.resilience", "tinyllm.cache", "tinyllm.graph", "tinyllm.queue", "tinyllm.http"],
)
def test_all_is_sorted_and_complete(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == sorted(mod.__all__, key=_isort_key)
    for name in mod.__all__:
        assert hasattr(mod, name), name
    if not hasattr(mod, "__path__"):
        return  # a plain module imports helpers (Any, Callable); only facades re-export
    public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(
        getattr(mod, n), type(importlib))}
    assert public <= set(mod.__all__), public - set(mod.__all__)


def test_import_works_without_optional_extras() -> None:
    # In a fresh interpreter: other tests in this process load the optional parts.
    import subprocess
    import sys

    code = ("import sys, tinyllm, tinyllm.models, tinyllm.cache, tinyllm.graph; "
            "print(sorted({'pynvml', 'llama_cpp', 'redis', 'psycopg'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # The embedded model, NVML, Redis and PostgreSQL load where they are used.
    assert out.strip() == "[]"


def test_import_tinyllm_loads_no_sink() -> None:
    # The composition root imports the sinks when the first lifecycle is made: a library
    # that only imports tinyllm pays for the core and the HTTP surface, nothing more.
    import subprocess
    import sys

    code = ("import sys, tinyllm; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'structlog', 'opentelemetry', 'sqlalchemy', 'httpx', 'tinyllm.store'}), "
            "sorted(m for m in sys.modules if m.startswith(('tinyllm.logging', "
            "'tinyllm.telemetry', 'tinyllm.events', 'tinyllm.store'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[] []"
