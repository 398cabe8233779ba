"""``tinyllm serve``: the OpenAI-compatible gateway that observes every request."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

import typer

from tinyllm.cli._app import app, err_console, fail
from tinyllm.settings import DEFAULT_METRICS_ADDR, ENV_METRICS_DB

if TYPE_CHECKING:
    from tinyllm.http.routing import Route
    from tinyllm.serve.config import GatewayConfig


@app.command("serve")
def serve(
    ctx: typer.Context,
    config_file: str = typer.Option(
        None, "--config", metavar="FILE",
        help="The gateway's YAML configuration (models, keys with their limits and "
        "budgets, prices, SLO). Default: the embedded model (Gemma 3 270M) as gemma3-270m.",
    ),
    host: str = typer.Option(
        DEFAULT_METRICS_ADDR, "--host",
        help="Address to bind (0.0.0.0 exposes it to the network).",
    ),
    port: int = typer.Option(8080, "--port", "-p", min=0, max=65535, help="Port to listen on."),
    db_target: str = typer.Option(
        None, "--db", metavar="PATH_OR_URL",
        help=f"Record every request in this store (SQLite file or postgresql:// URL; "
        f"default ${ENV_METRICS_DB}, else none) and serve its summary and exports under /api.",
    ),
    grace: float = typer.Option(
        30.0, "--grace", min=0.0, metavar="SECONDS",
        help="On SIGTERM / Ctrl-C, how long requests in flight may take to finish.",
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", metavar="URL",
        help="Share the keys' rpm/tpm limits and budgets' spend with every instance using "
        "this Redis (e.g. redis://127.0.0.1:6379/0); without it each instance limits on "
        "its own.",
    ),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, max=64,
        help="Worker processes on the one port; /metrics shows the totals of all of them.",
    ),
) -> None:
    """Serve the OpenAI and Ollama APIs in front of the configured models, with
    /metrics, /health and /ready on the same port; every request is observed like a
    tinyllm client's.

    Point any OpenAI SDK at it (base_url=http://127.0.0.1:8080/v1) or any Ollama client
    (host http://127.0.0.1:8080).
    """
    try:
        from tinyllm.serve.config import ConfigError, default_config, load_config
        from tinyllm.serve.server import configure_accounting, make_server
    except ImportError as exc:
        fail(f"{exc} (pip install 'tinyllm[serve]')")
    try:
        config = default_config() if config_file is None else load_config(config_file)
    except ConfigError as exc:
        fail(str(exc), 2)
    from tinyllm.serve.app import Gateway

    _note_overrides(config)
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        fail(f"--redis-url must start with redis://, rediss:// or unix://, got {redis_url!r}", 2)
    shown = f"[{host}]" if ":" in host else host
    if workers > 1:
        _run_workers(ctx, config_file, db_target, redis_url, workers, host, port, grace)
        return
    # Before the gateway: building it builds the metric families, whose buckets include
    # the SLO's thresholds only if it is known by then.
    configure_accounting(config)
    gateway = Gateway(config, redis_url=redis_url)
    routes = _store_routes(db_target)
    if routes:
        gateway.router.routes.update(routes)
    sock = _bind(host, port)
    server = make_server(config, host=host, port=port, grace=grace, gateway=gateway)
    bound = sock.getsockname()[1]
    err_console.print(f"tinyllm serve: {', '.join(config.models)} on "
                      f"http://{shown}:{bound}/v1 (metrics on /metrics, the dashboard on "
                      "/dashboard; Ctrl-C to stop)")
    try:
        server.run(sockets=[sock])
    finally:
        from tinyllm.store import close_store

        close_store()  # flushes what the requests recorded
    err_console.print("tinyllm serve stopped")


def _run_workers(ctx: typer.Context, config_file: str | None, db_target: str | None,
                 redis_url: str | None, workers: int, host: str, port: int,
                 grace: float) -> None:
    import os

    from tinyllm.logging import get_logging_state
    from tinyllm.serve.server import server_config
    from tinyllm.serve.workers import WorkerSpec, run_workers

    root = ctx.find_root().params
    logging_state = get_logging_state()
    db = db_target or os.environ.get(ENV_METRICS_DB, "").strip() or None
    spec = WorkerSpec(
        config_file=os.path.abspath(config_file) if config_file else None, db=db,
        redis_url=redis_url, log_level=str(logging_state["level"]).lower(),
        log_format=str(logging_state["format"]), tracing=bool(root.get("tracing")),
        otlp_endpoint=root.get("otlp_endpoint"))
    if redis_url is None and _has_limits(config_file):
        err_console.print("note: without --redis-url each worker enforces the keys' rpm/tpm "
                          "and budgets on its own (a key gets them once per worker)")
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"tinyllm serve: {workers} workers on http://{shown}:{bound}/v1 "
                      "(metrics on /metrics, the dashboard on /dashboard; Ctrl-C to stop)")
    settings = server_config("tinyllm.serve.workers:app", host=host, port=port, grace=grace,
                             factory=True)
    run_workers(spec, [sock], workers, settings)
    err_console.print("tinyllm serve stopped")


def _note_overrides(config: GatewayConfig) -> None:
    """Say so when the config's slo replaces the one --slo / $TINYLLM_SLO gave (its
    prices are layered over --prices: nothing is lost there)."""
    import os

    from tinyllm.settings import ENV_SLO

    if config.slo is not None and os.environ.get(ENV_SLO, "").strip():
        err_console.print(f"note: the slo section of {config.source} replaces --slo / "
                          f"${ENV_SLO} for this gateway")


def _has_limits(config_file: str | None) -> bool:
    if config_file is None:
        return False
    from tinyllm.serve.config import load_config

    return any(k.rpm or k.tpm or k.budget_usd for k in load_config(config_file).keys)


def _store_routes(db_target: str | None) -> dict[str, Route] | None:
    import os

    if db_target is None and not os.environ.get(ENV_METRICS_DB, "").strip():
        return None
    from tinyllm.cli.store import open_store
    from tinyllm.http.store import store_routes
    from tinyllm.store import configure_store

    store = open_store(db_target, must_exist=False, opener=configure_store)
    return dict(store_routes(store))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is one clear line, not a log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            fail(f"cannot serve on {host}:{port}: port {port} is already in use (choose "
                 "another with --port, or stop what holds it)")
        fail(f"cannot serve on {host}:{port}: {exc.strerror}")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
