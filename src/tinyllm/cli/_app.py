"""The typer application and the helpers every command shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn, overload

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


@overload
def check_choice(option: str, value: str, valid: Sequence[str]) -> str: ...
@overload
def check_choice(option: str, value: None, valid: Sequence[str]) -> None: ...
def check_choice(option: str, value: str | None, valid: Sequence[str]) -> str | None:
    """``value`` lower-cased if it is one of ``valid``; else exit 2 naming the valid ones."""
    if value is None:
        return None
    normal = value.strip().lower()
    if normal not in valid:
        fail(f"{option} {value!r} is not valid; use one of: {', '.join(valid)}", 2)
    return normal


def _configure_logging(log_level: str | None, log_format: str | None) -> None:
    from tinyllm.logging import LOG_FORMATS, LOG_LEVELS, configure_logging

    level = check_choice("--log-level", log_level, LOG_LEVELS)
    fmt = check_choice("--log-format", log_format, LOG_FORMATS)
    # Always configured, options given or not: the environment variables then apply,
    # and stdlib loggers (the OpenTelemetry SDK's, ...) write through the same chain to
    # stderr instead of Python's last-resort handler.
    try:
        configure_logging(log_level=level, log_format=fmt)
    except (ValueError, TypeError) as exc:  # a bad $TINYLLM_LOG_* value or log file
        fail(str(exc), 2)


def _configure_tracing(ctx: typer.Context, tracing: bool | None, endpoint: str | None) -> None:
    if endpoint is not None and tracing is False:
        fail("--otlp-endpoint sends spans, which --no-tracing turns off; drop one of them", 2)
    if not tracing and endpoint is None:
        return  # off, the library default: no provider, spans cost next to nothing
    from tinyllm.telemetry import TelemetryConfig, configure_telemetry, shutdown_telemetry

    try:
        # Without an endpoint the exporter follows $OTEL_TRACES_EXPORTER and the OTLP
        # endpoint variables, else "console" (spans printed to stderr, never stdout).
        config = TelemetryConfig(
            enable_tracing=True,
            exporter="otlp" if endpoint is not None else None,
            otlp_endpoint=endpoint,
        )
    except (ValueError, TypeError) as exc:
        fail(str(exc).replace("otlp_endpoint=", "--otlp-endpoint "), 2)
    configure_telemetry(config)
    # Flush what the command recorded before the process exits (bounded: a dead
    # collector costs at most a few seconds, and the loss is counted).
    ctx.call_on_close(shutdown_telemetry)


def _configure_accounting(prices: str | None, slo: str | None) -> None:
    """Prices and SLOs from ``--prices``/``--slo``, else the environment's: checked now, so
    a bad file stops the command with its problems instead of being logged and left out.
    Given as options, they are also put in the environment, where processes the command
    starts (``serve --workers``, ``instrument -- COMMAND``) read them."""
    import os

    from tinyllm.accounting import configure_prices, configure_slo
    from tinyllm.pricing import PriceError
    from tinyllm.settings import ENV_PRICES, ENV_SLO
    from tinyllm.slo import SLOError

    for option, given, env, configure in (("--prices", prices, ENV_PRICES, configure_prices),
                                          ("--slo", slo, ENV_SLO, configure_slo)):
        path = given if given is not None else os.environ.get(env, "").strip()
        if not path:
            continue
        try:
            configure(path)
        except (PriceError, SLOError) as exc:
            source = option if given is not None else f"${env}"
            fail(f"{source}: " + "\n".join(exc.problems), 2)
        if given is not None:
            os.environ[env] = os.path.abspath(path)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", metavar="LEVEL",
        help="debug, info, warning, error or critical (default $TINYLLM_LOG_LEVEL, else info).",
    ),
    log_format: str | None = typer.Option(
        None, "--log-format", metavar="FORMAT",
        help="console or json (default $TINYLLM_LOG_FORMAT, else console). Logs go to stderr.",
    ),
    tracing: bool | None = typer.Option(
        None, "--tracing/--no-tracing",
        help="Record OpenTelemetry spans (default off); printed to stderr unless "
        "--otlp-endpoint or $OTEL_EXPORTER_OTLP_ENDPOINT says where to send them.",
    ),
    otlp_endpoint: str | None = typer.Option(
        None, "--otlp-endpoint", metavar="URL",
        help="Send spans to this OTLP collector, e.g. http://localhost:4317 (gRPC) or "
        "http://localhost:4318 (HTTP); implies --tracing.",
    ),
    prices: str | None = typer.Option(
        None, "--prices", metavar="FILE",
        help="Model prices (YAML or JSON, USD per million tokens) over the shipped table "
        "(default $TINYLLM_PRICES). See docs/cost-and-slo.md.",
    ),
    slo: str | None = typer.Option(
        None, "--slo", metavar="FILE",
        help="Latency objectives per model: the slo section of a cost file (default "
        "$TINYLLM_SLO). See docs/cost-and-slo.md.",
    ),
) -> None:
    """tinyllm: production observability for anything that runs LLMs."""
    # First: SLO thresholds become bucket boundaries only of metric families built later.
    _configure_accounting(prices, slo)
    _configure_logging(log_level, log_format)
    _configure_tracing(ctx, tracing, otlp_endpoint)
