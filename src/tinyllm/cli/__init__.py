"""The ``tinyllm`` command line: one typer app, one module per command group.

stdout carries a command's output (so ``--json | jq`` always parses); messages for
people go to stderr. Exit codes: 0 success, 1 a failed check or an environment
problem (port in use, endpoint unreachable), 2 a usage error. A user error prints one
line, never a traceback.
"""

from __future__ import annotations

from tinyllm.cli import debug as _debug  # noqa: F401  (registers its commands)
from tinyllm.cli import health as _health  # noqa: F401
from tinyllm.cli import metrics as _metrics  # noqa: F401
from tinyllm.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
