"""``tinyllm health``: run the health checks, print one row per check, exit 0 only if healthy."""

from __future__ import annotations

import json
import math

import typer

from tinyllm.cli._app import app, fail
from tinyllm.health import DEFAULT_TIMEOUT, HEALTHY


@app.command("health")
def health(
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: {status, checks: {name: {status, detail}}}."
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT, "--timeout", help="Seconds the checks get (they run in parallel)."
    ),
) -> None:
    """Check this process's observability stack: metrics, events, the trace exporter.

    Prints one line per check (name, status, detail) and the overall status. Exit 0
    when healthy, 1 when degraded or unhealthy (so it works as a container probe).
    """
    from tinyllm.health import run_health_checks

    if not (math.isfinite(timeout) and timeout > 0):
        fail(f"--timeout must be a positive number of seconds, got {timeout:g}", 2)
    report = run_health_checks(timeout=timeout)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        width = max((len(name) for name in report["checks"]), default=0)
        for name, result in report["checks"].items():
            typer.echo(f"{name:<{width}}  {result['status']:<9}  {result['detail']}")
        typer.echo(f"overall: {report['status']}")
    if report["status"] != HEALTHY:
        raise typer.Exit(1)
