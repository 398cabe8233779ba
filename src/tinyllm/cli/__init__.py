"""The ``tinyllm`` command line: one typer app, one module per command group.

stdout carries a command's output (so ``--json | jq`` always parses); messages for
people go to stderr. Exit codes: 0 success, 1 a failed check or an environment
problem (port in use, endpoint unreachable), 2 a usage error. A user error prints one
line, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tinyllm.cli import cache as _cache  # noqa: F401
from tinyllm.cli import debug as _debug  # noqa: F401  (registers its commands)
from tinyllm.cli import health as _health  # noqa: F401
from tinyllm.cli import instrument as _instrument  # noqa: F401
from tinyllm.cli import metrics as _metrics  # noqa: F401
from tinyllm.cli import run as _run  # noqa: F401
from tinyllm.cli import serve as _serve  # noqa: F401
from tinyllm.cli import slo as _slo  # noqa: F401
from tinyllm.cli import store as _store  # noqa: F401
from tinyllm.cli import top as _top  # noqa: F401
from tinyllm.cli._app import app

__all__ = ["GLOBAL_OPTIONS", "app", "hoist_global_options", "main"]


#: Global options and whether each takes a value. They belong to the root command, but
#: the observability guide writes them after the command too (``tinyllm run "q" --tracing``).
GLOBAL_OPTIONS = {
    "--log-level": True,
    "--log-format": True,
    "--otlp-endpoint": True,
    "--tracing": False,
    "--no-tracing": False,
    "--prices": True,
    "--slo": True,
}


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move global options found after the command name to the front, where typer
    expects them; everything after a ``--`` is left alone.

    Example:
        >>> hoist_global_options(["health", "--json", "--log-format", "json"])
        ['--log-format', 'json', 'health', '--json']
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        takes_value = GLOBAL_OPTIONS.get(name)
        if takes_value is None or (takes_value and "=" not in arg and i + 1 == len(args)):
            rest.append(arg)  # not ours, or missing its value: typer says so in place
        elif takes_value and "=" not in arg and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        else:
            front.append(arg)
        i += 1
    return front + rest


def main() -> None:
    """Console-script entry point."""
    app(args=hoist_global_options(sys.argv[1:]), prog_name="tinyllm")
