"""The typer application and the helpers every command shares."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

from tinyllm._version import __version__

app = typer.Typer(
    name="tinyllm",
    help="Observability for LLM workloads: metrics server, stats and debugging tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Where messages for people go; stdout is reserved for command output.
err_console = Console(stderr=True, highlight=False, markup=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line naming what went wrong, and exit with ``code``."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tinyllm: production observability for anything that runs LLMs."""
