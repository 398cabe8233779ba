"""``tinyllm export``, ``tinyllm store summary`` and ``tinyllm store prune``: the metrics
store from the shell.

Example:
    $ tinyllm export --db metrics.db --format prometheus --prefix diffusion_llm --since 24h
    $ tinyllm export --db metrics.db --since 2026-01-01T00:00:00Z --output events.json
    $ tinyllm store summary --db metrics.db --since 7d        # requests, cost by model
    $ tinyllm store summary --db metrics.db --json | jq .cost.total_usd
    $ tinyllm store prune --db metrics.db --older-than 30d
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tinyllm.cli._app import app, check_choice, err_console, fail
from tinyllm.settings import ENV_METRICS_DB

if TYPE_CHECKING:
    from tinyllm.store import MetricsDatabase

__all__ = ["describe_target", "open_store", "render_summary", "store_app"]

store_app = typer.Typer(help="Maintain the metrics store (performance events and their roll-ups).",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")

_DB_HELP = (f"SQLite file or postgresql:// URL of the metrics store (default ${ENV_METRICS_DB}, "
            "else ./metrics.db).")


def describe_target(target: str) -> str:
    """``target`` fit for a message: a URL's password hidden.

    Example:
        >>> describe_target("postgresql://me:secret@db/metrics")
        'postgresql://me:***@db/metrics'
    """
    if "://" not in target:
        return target
    from sqlalchemy.engine import make_url

    try:
        return make_url(target).render_as_string(hide_password=True)
    except Exception:
        return target.split("://", 1)[0] + "://..."


def _sqlite_path(target: str) -> str | None:
    if "://" not in target:
        return target
    scheme, rest = target.split("://", 1)
    if scheme.lower() in ("sqlite", "sqlite+pysqlite") and rest.startswith("/"):
        return rest[1:] or None
    return None


def open_store(
    target: str | None, *, must_exist: bool,
    opener: Callable[[str], MetricsDatabase | None] | None = None,
) -> MetricsDatabase:
    """Open ``target`` (else ``$TINYLLM_METRICS_DB``, else ``./metrics.db``) with
    ``opener`` (default ``MetricsDatabase``; ``configure_store`` also wires it in) or
    exit: 2 for a target that is not a database name, 1 for one that cannot be opened."""
    from sqlalchemy.exc import SQLAlchemyError

    from tinyllm.store import DEFAULT_TARGET, MetricsDatabase

    chosen = target if target is not None else (
        os.environ.get(ENV_METRICS_DB, "").strip() or DEFAULT_TARGET)
    name = describe_target(chosen)
    if must_exist:
        path = _sqlite_path(chosen)
        if path is not None and not os.path.isfile(path):
            fail(f"no metrics database at {name} (pass --db PATH or set {ENV_METRICS_DB})")
    try:
        db = (opener or MetricsDatabase)(chosen)
        assert db is not None  # a target was given, so a store was opened
        return db
    except (ValueError, TypeError) as exc:
        fail(f"--db {name!r}: {exc}", 2)
    except ImportError as exc:
        fail(f"cannot open metrics database {name}: {exc} (pip install 'psycopg[binary]' "
             "for PostgreSQL)")
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        fail(f"cannot open metrics database {name}: {reason}")


def _time_option(option: str, value: str | None, now: float) -> float | None:
    from tinyllm.store.timespec import parse_time

    if value is None:
        return None
    try:
        return parse_time(value, now=now)
    except ValueError as exc:
        fail(f"{option} {exc}", 2)


def _range_options(since: str | None, until: str | None,
                   model: str | None) -> tuple[float | None, float | None]:
    """``--since``/``--until`` as epoch seconds, and ``--model`` checked; exit 2 naming
    the option otherwise."""
    now = time.time()
    start, end = _time_option("--since", since, now), _time_option("--until", until, now)
    if start is not None and end is not None and start > end:
        fail(f"--since ({since}) is after --until ({until}); give an earlier --since", 2)
    if model is not None and not model.strip():
        fail("--model must be a non-empty model id", 2)
    return start, end


@app.command("export")
def export(
    db_target: str = typer.Option(None, "--db", metavar="PATH_OR_URL", help=_DB_HELP),
    fmt: str = typer.Option("json", "--format", "-f", metavar="FORMAT",
                            help="json, prometheus or influxdb."),
    since: str = typer.Option(None, "--since", metavar="WHEN",
                              help="From this time: ISO 8601, epoch seconds, or 24h/7d/30m ago."),
    until: str = typer.Option(None, "--until", metavar="WHEN",
                              help="Up to (not including) this time; same forms as --since."),
    model: str = typer.Option(None, "--model", metavar="MODEL_ID", help="Only this model."),
    prefix: str = typer.Option(None, "--prefix", metavar="NAME",
                               help="Prometheus family prefix / InfluxDB measurement "
                               "(default tinyllm_store; the diffusion service uses "
                               "diffusion_llm)."),
    output_name: str = typer.Option(None, "--output", "-o", metavar="FILE",
                                    help="Write here instead of stdout."),
) -> None:
    """Export the metrics store as JSON, Prometheus text or InfluxDB line protocol."""
    from sqlalchemy.exc import SQLAlchemyError

    from tinyllm.store.export import FORMATS, check_prefix

    chosen = check_choice("--format", fmt, FORMATS)
    output = Path(output_name) if output_name is not None else None
    try:
        family = check_prefix(prefix)
    except ValueError as exc:
        fail(str(exc).replace("prefix must", "--prefix must", 1), 2)
    start, end = _range_options(since, until, model)
    if output is not None and output.is_dir():
        fail(f"--output {output} is a directory; give a file name", 2)
    db = open_store(db_target, must_exist=True)
    try:
        chunks = db.iter_export(chosen, prefix=family, since=start, until=end, model_id=model)
        if output is None:
            write = sys.stdout.write
            for chunk in chunks:
                write(chunk)
            sys.stdout.flush()
        else:
            try:
                fh = output.open("w", encoding="utf-8")
            except OSError as exc:
                fail(f"cannot write --output {output}: {exc.strerror or exc}")
            try:
                with fh:
                    for chunk in chunks:
                        fh.write(chunk)
            except BaseException as exc:
                output.unlink(missing_ok=True)  # no half-written export left behind
                if isinstance(exc, OSError):
                    fail(f"cannot write --output {output}: {exc.strerror or exc}")
                raise
            err_console.print(f"wrote {chosen} export to {output}")
    except BrokenPipeError:  # `tinyllm export | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        fail(f"cannot read metrics database {db.url}: {reason}")
    finally:
        db.close()


def _usd(value: float) -> str:
    # Six decimals: a request's cost is often a fraction of a cent.
    return f"${value:,.6f}"


def _percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.1f} %"


def render_summary(summary: dict[str, Any], title: str) -> Any:
    """The store summary as rich tables (a ``Group``): the totals, then one row per model
    with its requests, cost, unpriced requests and goodput.

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> s = {"overall": {"total_requests": 2, "success_rate": 50.0, "average_latency": 1.5},
        ...      "cost": {"total_usd": 0.25, "unpriced_requests": 1, "by_model": {
        ...          "m": {"requests": 2, "cost_usd": 0.25, "unpriced_requests": 1}}},
        ...      "slo": {"requests": 0, "met": 0, "goodput_ratio": None, "by_model": {}}}
        >>> console = Console(width=80, file=io.StringIO(), record=True)
        >>> console.print(render_summary(s, "metrics store"))
        >>> for line in console.export_text().splitlines():
        ...     if "$" in line:
        ...         print(" ".join(w for w in line.split() if w != "│"))
        cost (priced requests) $0.250000
        m 2 $0.250000 1 —
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    overall, cost, slo = summary["overall"], summary["cost"], summary["slo"]
    totals = Table(title=title, show_header=True)
    totals.add_column("figure")
    totals.add_column("value", justify="right")
    for name, value in (
        ("requests", f"{overall['total_requests']:,}"),
        ("success rate", f"{overall['success_rate']:.1f} %"),
        ("average latency", f"{overall['average_latency']:.3f} s"),
        ("cost (priced requests)", _usd(cost["total_usd"])),
        ("unpriced requests", f"{cost['unpriced_requests']:,}"),
        ("goodput (met every SLO objective)",
         f"{_percent(slo['goodput_ratio'])} of {slo['requests']:,} judged"),
    ):
        totals.add_row(Text(name), Text(value))
    models = Table(show_header=True)
    models.add_column("model")
    for name in ("requests", "cost (USD)", "unpriced", "goodput"):
        models.add_column(name, justify="right")
    judged = slo["by_model"]
    for model, spent in cost["by_model"].items():
        outcome = judged.get(model)
        models.add_row(Text(model), Text(f"{spent['requests']:,}"), Text(_usd(spent["cost_usd"])),
                       Text(f"{spent['unpriced_requests']:,}"),
                       Text("—" if outcome is None else
                            f"{_percent(outcome['goodput_ratio'])} of {outcome['requests']:,}"))
    return Group(totals, models) if cost["by_model"] else totals


@store_app.command("summary")
def summary(
    db_target: str = typer.Option(None, "--db", metavar="PATH_OR_URL", help=_DB_HELP),
    since: str = typer.Option(None, "--since", metavar="WHEN",
                              help="From this time: ISO 8601, epoch seconds, or 24h/7d/30m ago."),
    until: str = typer.Option(None, "--until", metavar="WHEN",
                              help="Up to (not including) this time; same forms as --since."),
    model: str = typer.Option(None, "--model", metavar="MODEL_ID", help="Only this model."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the summary as JSON (what GET /api/metrics "
                                 "answers) instead of tables."),
) -> None:
    """Print the store's summary: requests, latency, cost and goodput, by model."""
    import json

    from rich.console import Console
    from sqlalchemy.exc import SQLAlchemyError

    start, end = _range_options(since, until, model)
    db = open_store(db_target, must_exist=True)
    try:
        found = db.get_summary(start, end, model, recent=10 if as_json else 0)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        fail(f"cannot read metrics database {db.url}: {reason}")
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(found, default=str))
    else:
        Console(highlight=False).print(render_summary(found, f"metrics store {db.url}"))


@store_app.command("prune")
def prune(
    db_target: str = typer.Option(None, "--db", metavar="PATH_OR_URL", help=_DB_HELP),
    older_than: str = typer.Option(..., "--older-than", metavar="DURATION",
                                   help="Delete events older than this: 30m, 24h, 7d, 2w."),
) -> None:
    """Delete old events and the roll-ups that covered them; prints how many went."""
    from sqlalchemy.exc import SQLAlchemyError

    from tinyllm.store.timespec import parse_duration

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        fail(f"--older-than {exc}", 2)
    db = open_store(db_target, must_exist=True)
    try:
        removed = db.prune(seconds)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        fail(f"cannot prune metrics database {db.url}: {reason}")
    finally:
        db.close()
    cutoff = datetime.fromtimestamp(time.time() - seconds, UTC).isoformat(timespec="seconds")
    typer.echo(f"removed {removed} event(s) older than {older_than} (before {cutoff})")
