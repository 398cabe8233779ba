"""``tinyllm instrument -- python app.py``: run a program with its openai and ollama
SDK calls observed, without changing its code."""

from __future__ import annotations

import os
import shutil
from importlib import resources

import typer

from tinyllm.cli._app import app, fail
from tinyllm.instrumentation import ENV, SDKS


def bootstrap_dir() -> str:
    """The folder whose ``sitecustomize`` instruments a Python program at start."""
    return str(resources.files("tinyllm.instrumentation").joinpath("_bootstrap"))


@app.command("instrument", context_settings={"allow_interspersed_args": False})
def instrument(
    command: list[str] = typer.Argument(  # noqa: B008
        None, metavar="-- COMMAND [ARGS]...",
        help="The program to run (a Python program, or anything that starts one).",
    ),
    sdk: str = typer.Option(
        "all", "--sdk", metavar="NAMES",
        help=f"Which SDKs to observe: all, or a comma-separated list of {', '.join(SDKS)}.",
    ),
    print_env: bool = typer.Option(
        False, "--print-env",
        help="Print the environment that turns instrumentation on (for a process "
        "manager: systemd, supervisord, a container) instead of running a command.",
    ),
) -> None:
    """Run COMMAND with every openai and ollama SDK call observed: metrics, a span, a
    log line and a store row per call, as for tinyllm's own clients.

    Example: tinyllm instrument -- python app.py
    """
    names = [n.strip().lower() for n in sdk.split(",") if n.strip()]
    if not names or any(n not in (*SDKS, "all") for n in names):
        fail(f"--sdk {sdk!r} is not valid; use all, or a comma-separated list of "
             f"{', '.join(SDKS)}", code=2)
    value = "all" if "all" in names else ",".join(names)
    path = os.pathsep.join(p for p in (bootstrap_dir(), os.environ.get("PYTHONPATH")) if p)
    if print_env:
        typer.echo(f"{ENV}={value}\nPYTHONPATH={path}")
        return
    if not command:
        fail("no command given; usage: tinyllm instrument -- python app.py", code=2)
    program = shutil.which(command[0])
    if program is None:
        fail(f"command not found: {command[0]}", code=127)
    env = {**os.environ, ENV: value, "PYTHONPATH": path}
    try:
        os.execvpe(program, command, env)  # the program takes this process's place
    except OSError as exc:
        fail(f"cannot run {command[0]}: {exc.strerror or exc}", code=126)
