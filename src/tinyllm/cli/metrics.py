"""``tinyllm metrics`` (serve) and ``tinyllm stats`` (summarise)."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tinyllm.cli._app import app, err_console, fail
from tinyllm.errors import MetricsServerError
from tinyllm.settings import (
    DEFAULT_METRICS_ADDR,
    DEFAULT_METRICS_PORT,
    ENV_METRICS_DB,
    ENV_METRICS_URL,
    metrics_namespace,
    multiprocess_dir,
)

if TYPE_CHECKING:
    from tinyllm.http.routing import Route


@app.command("metrics")
def serve_metrics(
    port: int = typer.Option(
        DEFAULT_METRICS_PORT, "--port", "-p", min=0, max=65535, help="Port to listen on."
    ),
    host: str = typer.Option(
        DEFAULT_METRICS_ADDR, "--host", help="Address to bind (0.0.0.0 exposes it to the network)."
    ),
    db_target: str = typer.Option(
        None, "--db", metavar="PATH_OR_URL",
        help=f"Also serve this metrics store (SQLite file or postgresql:// URL; default "
        f"${ENV_METRICS_DB}, else none) under --api-prefix.",
    ),
    api_prefix: str = typer.Option(
        "/api", "--api-prefix", metavar="PATH",
        help="Where the store's routes live: PATH/metrics and PATH/metrics/export "
        "(e.g. /api/diffusion).",
    ),
    export_prefix: str = typer.Option(
        None, "--export-prefix", metavar="NAME",
        help="Default family prefix of PATH/metrics/export (default tinyllm_store; the diffusion "
        "service uses diffusion_llm).",
    ),
) -> None:
    """Serve /metrics and /health in the foreground until SIGINT or SIGTERM.

    With PROMETHEUS_MULTIPROC_DIR set, serves the aggregate of every worker process.
    Samples NVIDIA GPUs when nvidia-ml-py and a GPU are present. With --db (or
    $TINYLLM_METRICS_DB) also serves the store's summary and exports.
    """
    from tinyllm.http.threaded import start_metrics_server
    from tinyllm.metrics.gpu import GPUSampler

    routes = _store_routes(db_target, api_prefix, export_prefix)
    try:
        server = start_metrics_server(port=port, addr=host, routes=routes)
    except MetricsServerError as exc:
        _close_store()
        fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    sampler = GPUSampler()
    try:
        gpu = sampler.start()
        err_console.print(f"serving metrics on {server.url}/metrics (Ctrl-C to stop), "
                          f"the dashboard on {server.url}/dashboard")
        if multiprocess_dir():
            err_console.print(f"aggregating worker processes from {multiprocess_dir()}")
        if routes:
            err_console.print("serving the metrics store on "
                              + ", ".join(f"{server.url}{path}" for path in routes))
        status = sampler.status
        if status is not None:
            err_console.print(("GPU: " if gpu else "no GPU figures: ") + status.reason)
        while not stop.wait(0.5):
            pass
    finally:
        sampler.stop()
        server.stop()
        _close_store()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    err_console.print("metrics server stopped")


def _store_routes(
    db_target: str | None, api_prefix: str, export_prefix: str | None
) -> dict[str, Route]:
    """The store's routes for ``tinyllm metrics``; exit 2 on a bad option, 1 when the
    database cannot be opened."""
    from tinyllm.http.store import check_api_prefix, store_routes
    from tinyllm.store.export import check_prefix

    try:
        check_api_prefix(api_prefix)
    except ValueError as exc:
        fail(str(exc).replace("api_prefix must", "--api-prefix must", 1), 2)
    try:
        check_prefix(export_prefix)
    except ValueError as exc:
        fail(str(exc).replace("prefix must", "--export-prefix must", 1), 2)
    if db_target is None and not os.environ.get(ENV_METRICS_DB, "").strip():
        if export_prefix is not None:
            fail(f"--export-prefix needs a store: pass --db PATH_OR_URL or set "
                 f"{ENV_METRICS_DB}", 2)
        return {}
    from tinyllm.cli.store import open_store
    from tinyllm.store import configure_store

    # Wired like an application's store: the routes, and the "store" check on /health.
    store = open_store(db_target, must_exist=False, opener=configure_store)
    return store_routes(store, api_prefix, export_prefix)


def _close_store() -> None:
    from tinyllm.store import close_store

    close_store()


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if unit == "s":
            return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
        if unit == "%":
            return f"{value * 100:.1f} %"
        return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"
    return str(value)


def _render(summary: dict[str, Any], gpu_reason: str | None) -> Table:
    table = Table(title=f"tinyllm stats ({summary['source']})", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    req, lat = summary["requests"], summary["latency_seconds"]
    rows: list[tuple[str, str]] = [
        ("requests", _fmt(req["total"])),
        ("active requests", _fmt(req["active"])),
        ("errors", _fmt(req["errors"])),
        ("error rate", _fmt(req["error_rate"], "%")),
        ("latency mean / p50 / p95",
         " / ".join(_fmt(lat[k], "s") for k in ("mean", "p50", "p95"))),
        ("time to first token p50 / p95",
         " / ".join(_fmt(summary["ttft_seconds"][k], "s") for k in ("p50", "p95"))),
        ("inter-token latency p50 / p95",
         " / ".join(_fmt(summary["inter_token_latency_seconds"][k], "s") for k in ("p50", "p95"))),
        ("tokens in / out",
         f"{_fmt(summary['tokens']['input'])} / {_fmt(summary['tokens']['output'])}"),
        ("cache hit rate", _fmt(summary["cache"]["hit_rate"], "%")),
    ]
    for model, count in sorted(req["by_model"].items()):
        rows.append((f"  requests [{model}]", _fmt(count)))
    for model, rate in sorted(summary["tokens"]["per_second_by_model"].items()):
        rows.append((f"  tokens/s [{model}]", _fmt(rate)))
    for error_type, count in sorted(summary["errors_by_type"].items()):
        rows.append((f"  errors [{error_type}]", _fmt(count)))
    for model, state in sorted(summary["circuit_breakers"].items()):
        rows.append((f"  circuit breaker [{model}]", state))
    for gpu in summary["gpus"]:
        used = gpu["used_bytes"] / 2**30
        rows.append((f"  GPU {gpu['gpu_id']} [{gpu['model']}]",
                     f"{used:.2f} GiB used, {_fmt(gpu['utilization_percent'])} % busy"))
    if not summary["gpus"]:
        rows.append(("GPU", f"no GPU figures: {gpu_reason}"))
    rows += _cost_rows(summary["cost"]) + _slo_rows(summary["slo"])
    for name, value in rows:
        table.add_row(Text(name), Text(value))
    return table


def _usd(value: float | None) -> str:
    """Dollars with enough decimals to show a small spend: ``$12.30``, ``$0.0040``."""
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 0.01:
        return f"${value:,.2f}"
    decimals = min(8, 1 - math.floor(math.log10(abs(value))))
    return f"${value:.{decimals}f}"


def _plural(n: float, word: str) -> str:
    return f"{_fmt(n)} {word}{'' if n == 1 else 's'}"


def _cost_rows(cost: dict[str, Any]) -> list[tuple[str, str]]:
    unpriced = cost["unpriced_by_model"]
    total = _usd(cost["total_usd"])
    if unpriced:  # the total leaves their cost out: say so rather than under-report
        total += f" + {_plural(cost['unpriced_requests'], 'unpriced request')}"
    rows = [("spend (USD)", total)]
    for model in sorted(set(cost["by_model_usd"]) | set(unpriced)):
        parts = [_usd(cost["by_model_usd"][model])] if model in cost["by_model_usd"] else []
        if model in unpriced:  # unknown, not free: never shown as $0
            parts.append(f"unpriced ({_plural(unpriced[model], 'request')})")
        rows.append((f"  spend [{model}]", " + ".join(parts)))
    for key, spent in cost["by_key_usd"].items():
        rows.append((f"  spend [key {key}]", _usd(spent)))
    for key, left in cost["budget_remaining_usd_by_key"].items():
        rows.append((f"  budget left [key {key}]", _usd(left)))
    return rows


def _slo_rows(slo: dict[str, Any]) -> list[tuple[str, str]]:
    if not slo["by_model"]:
        return [("SLO", "no request judged yet (objectives: --slo or $TINYLLM_SLO)")]
    total = slo["requests"]
    rows = [("SLO met, every objective", f"{_fmt(total['ratio'], '%')} of "
             f"{_fmt(total['met'] + total['missed'])} judged")]
    for model, m in slo["by_model"].items():
        target = m["target_ratio"]
        for name, o in m["objectives"].items():
            what = "all objectives" if o["threshold_seconds"] is None else \
                f"{name} <= {_fmt(o['threshold_seconds'], 's')}"
            verdict = {True: "meets target", False: "BELOW TARGET", None: ""}[o["meets_target"]]
            rows.append((f"  SLO [{model}] {what}",
                         f"{_fmt(o['met'])} met / {_fmt(o['missed'])} missed: "
                         f"{_fmt(o['ratio'], '%')} vs target {_fmt(target, '%')} {verdict}"
                         .rstrip()))
        if m["goodput_requests_per_second"] is not None:
            rows.append((f"  goodput [{model}]",
                         f"{_fmt(m['goodput_requests_per_second'])} req/s, "
                         f"{_fmt(m['goodput_tokens_per_second'])} tokens/s (last minute)"))
    return rows


#: Where ``tinyllm stats`` and ``tinyllm top`` read when told nothing.
DEFAULT_METRICS_URL = f"http://{DEFAULT_METRICS_ADDR}:{DEFAULT_METRICS_PORT}/metrics"


def metrics_url(url: str | None) -> str:
    """``--url``, else ``$TINYLLM_METRICS_URL``, else ``DEFAULT_METRICS_URL``; exits 2
    naming the option when the address is not http(s)."""
    env = os.environ.get(ENV_METRICS_URL)
    if url is not None:
        where, value = "--url", url
    elif env:
        where, value = f"${ENV_METRICS_URL}", env
    else:
        return DEFAULT_METRICS_URL
    if not value.startswith(("http://", "https://")):
        fail(f"{where} must start with http:// or https://, got {value!r}", 2)
    return value


@app.command("stats")
def stats(
    url: str = typer.Option(
        None, "--url", help=f"Metrics endpoint to read (default ${ENV_METRICS_URL} or "
        f"{DEFAULT_METRICS_URL}).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    namespace: str = typer.Option(None, "--namespace", help="Metric name prefix to read."),
) -> None:
    """Print the current figures of a running tinyllm metrics endpoint."""
    from tinyllm.metrics.gpu import gpu_status
    from tinyllm.metrics.stats import StatsUnavailable, fetch_exposition, summarize

    try:
        ns = metrics_namespace(namespace)
    except ValueError as exc:
        fail(str(exc), 2)
    source = metrics_url(url)
    if url is None and os.environ.get(ENV_METRICS_URL) is None and multiprocess_dir():
        from prometheus_client import generate_latest

        from tinyllm.metrics.exposition import exposition_registry

        source = f"multiprocess dir {multiprocess_dir()}"
        text = generate_latest(exposition_registry()).decode()
    else:
        try:
            text = fetch_exposition(source)
        except StatsUnavailable as exc:
            fail(f"{exc} (start a server with `tinyllm metrics`, or pass --url)")
    try:
        summary = summarize(text, ns)
    except ValueError as exc:
        fail(f"{source} did not return a Prometheus exposition: {exc}")
    summary["source"] = source
    gpu_reason = None
    if not summary["gpus"]:
        gpu_reason = gpu_status().reason
        summary["gpu_status"] = gpu_reason
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        Console().print(_render(summary, gpu_reason))
