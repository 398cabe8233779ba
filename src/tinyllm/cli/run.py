"""``tinyllm run "QUERY"``: answer a query through a graph, with every pillar observing.

The answer streams to stdout; logs go to stderr; a one-line summary follows on stderr
(tokens in/out, TTFT, tokens/s, total time), so ``tinyllm run "q" > answer.txt`` keeps
only the answer. With ``--metrics-port`` the metrics server is up for the whole run and
keeps serving after the answer until SIGINT/SIGTERM, so the run can be scraped.
"""

from __future__ import annotations

import signal
import sys
import threading
from time import perf_counter
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from tinyllm.cli._app import app, check_choice, err_console, fail
from tinyllm.errors import MetricsServerError, TinyLLMError
from tinyllm.settings import DEFAULT_METRICS_ADDR, ENV_METRICS_DB

if TYPE_CHECKING:
    from tinyllm.graph import ClientSpec
    from tinyllm.http.threaded import MetricsServer
    from tinyllm.lifecycle import Request
    from tinyllm.models import ModelClient


class _RunTotals:
    """A lifecycle observer adding up the run's model calls for the summary line."""

    def __init__(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.ttft: float | None = None
        self.generation = 0.0

    def on_start(self, request: Request) -> None:
        pass

    def on_end(self, request: Request) -> None:
        self.calls += 1
        self.input_tokens += request.input_tokens
        self.output_tokens += request.output_tokens
        self.generation += request.duration or 0.0
        if request.ttft is not None:
            self.ttft = request.ttft  # the last streamed call's: the answer the user saw

    def line(self, total: float) -> str:
        parts = [f"tokens in {self.input_tokens} / out {self.output_tokens}"]
        if self.ttft is not None:
            parts.append(f"TTFT {self.ttft * 1000:.0f} ms")
        if self.output_tokens and self.generation > 0:
            parts.append(f"{self.output_tokens / self.generation:.1f} tokens/s")
        parts.append(f"total {total:.2f} s")
        if self.calls != 1:
            parts.append(f"{self.calls} model calls")
        return " · ".join(parts)


@app.command("run")
def run(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="The question or task."),
    graph_file: str = typer.Option(
        None, "--graph", metavar="FILE", help="A graph YAML file (default: the built-in "
        "'default' graph, one model node)."),
    provider: str = typer.Option(
        "local", "--provider", metavar="NAME",
        help="local (embedded model, the default), ollama or openai."),
    model: str = typer.Option(
        None, "--model", metavar="NAME", help="Model name (ollama, openai) or GGUF path "
        "(local; default Gemma 3 270M)."),
    base_url: str = typer.Option(
        None, "--base-url", metavar="URL", help="Server URL for ollama (default "
        "http://localhost:11434) or openai (default http://127.0.0.1:8000/v1)."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="OPENAI_API_KEY", show_envvar=False, metavar="KEY",
        help="API key for an OpenAI-compatible server (default $OPENAI_API_KEY)."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Most tokens per answer."),
    temperature: float = typer.Option(
        0.0, "--temperature", min=0.0, max=2.0, help="Sampling temperature (0: repeatable)."),
    metrics_port: int = typer.Option(
        None, "--metrics-port", min=0, max=65535, metavar="PORT",
        help="Serve /metrics on this port during the run and after it, until Ctrl-C."),
    metrics_host: str = typer.Option(
        DEFAULT_METRICS_ADDR, "--metrics-host", metavar="ADDR",
        help="Address for --metrics-port (0.0.0.0 exposes it to the network)."),
    db_target: str = typer.Option(
        None, "--db", metavar="PATH_OR_URL", help=f"Record the run in this metrics store "
        f"(SQLite file or postgresql:// URL; default ${ENV_METRICS_DB}, else none)."),
    no_stream: bool = typer.Option(
        False, "--no-stream", help="Print the answer when it is complete instead of streaming."),
) -> None:
    """Answer QUERY through a graph of model calls, observed by metrics, logs and traces.

    On a console, logs below WARNING are left out unless --log-level (or
    $TINYLLM_LOG_LEVEL) asks for them, so the answer reads cleanly; with --log-format
    json every INFO line (one per request, per node, per graph) is there.
    """
    from tinyllm.models import PROVIDERS

    _quiet_console_logs(ctx)

    if not query.strip():
        fail("the query is empty; pass the question to answer, e.g. tinyllm run \"What is "
             "2+2?\"", 2)
    provider = check_choice("--provider", provider, PROVIDERS)
    if base_url is not None and provider == "local":
        fail("--base-url applies to --provider ollama or openai; the local model runs "
             "in-process", 2)
    graph = _load_graph(graph_file)
    store = _open_store(db_target)
    server = _start_server(metrics_port, metrics_host, store is not None)
    totals = _RunTotals()
    from tinyllm.lifecycle import get_lifecycle

    lifecycle = get_lifecycle()
    lifecycle.add_observer(totals)
    clients: list[ModelClient] = []
    try:
        started = perf_counter()
        answer, streamed = _answer(graph, query, clients, provider, model, base_url, api_key,
                                   max_tokens, temperature, stream=not no_stream)
        elapsed = perf_counter() - started
        # A graph ending in a transform streams nothing: its output is printed whole.
        sys.stdout.write("\n" if streamed else answer + "\n")
        sys.stdout.flush()
        if store is not None:
            # The run's request is in the store (and on /api/metrics) before we say so.
            store.flush()
        err_console.print(totals.line(elapsed))
        if server is not None:
            _serve_until_signal(server)
    finally:
        lifecycle.remove_observer(totals)
        for client in clients:
            client.close()
        if server is not None:
            server.stop()
        if store is not None:
            from tinyllm.store import close_store

            close_store()


def _answer(
    graph: Any, query: str, clients: list[ModelClient], provider: str, model: str | None,
    base_url: str | None, api_key: str | None, max_tokens: int, temperature: float,
    *, stream: bool,
) -> tuple[str, bool]:
    from tinyllm.cache import get_response_cache
    from tinyllm.graph import run_graph
    from tinyllm.models import get_client

    cache = get_response_cache()  # answers at temperature 0 without streaming are reused

    def client_for(spec: ClientSpec) -> ModelClient:
        name = spec.provider or provider
        options: dict[str, Any] = {"cache": cache}
        if name == "openai" and api_key:
            options["api_key"] = api_key
        same = name == provider  # the command line's model/URL only apply to its provider
        client = get_client(
            name, model=spec.model or (model if same else None),
            base_url=spec.base_url or (base_url if same else None), **options,
        )
        clients.append(client)
        return client

    printed = False

    def on_token(piece: str) -> None:
        nonlocal printed
        printed = True
        sys.stdout.write(piece)
        sys.stdout.flush()

    try:
        result = run_graph(
            graph, query, client_factory=client_for, on_token=on_token if stream else None,
            defaults={"max_tokens": max_tokens, "temperature": temperature},
        )
    except TinyLLMError as exc:
        if printed:  # end the half-printed answer's line before the error
            sys.stdout.write("\n")
        fail(str(exc))
    except KeyboardInterrupt:
        if printed:
            sys.stdout.write("\n")
        fail("interrupted", 130)
    output: str = result.output
    return output, bool(result.streamed)


def _quiet_console_logs(ctx: typer.Context) -> None:
    import os

    from tinyllm.logging import configure_logging, get_logging_state
    from tinyllm.settings import ENV_LOG_LEVEL

    chosen = ctx.find_root().params.get("log_level")
    if chosen is None and not os.environ.get(ENV_LOG_LEVEL) and \
            get_logging_state()["format"] == "console":
        configure_logging(log_level="WARNING", log_format="console")


def _load_graph(graph_file: str | None) -> Any:
    from tinyllm.graph import GraphError, builtin_graph, load_graph

    try:
        return builtin_graph("default") if graph_file is None else load_graph(graph_file)
    except GraphError as exc:
        fail(str(exc), 2)


def _open_store(db_target: str | None) -> Any:
    import os

    if db_target is None and not os.environ.get(ENV_METRICS_DB, "").strip():
        return None
    from tinyllm.cli.store import open_store
    from tinyllm.store import configure_store

    return open_store(db_target, must_exist=False, opener=configure_store)


def _start_server(port: int | None, host: str, with_store: bool) -> MetricsServer | None:
    if port is None:
        return None
    from tinyllm.http.threaded import start_metrics_server

    routes = {}
    if with_store:
        from tinyllm.http.store import store_routes
        from tinyllm.store import get_store

        store = get_store()
        if store is not None:
            routes = store_routes(store)
    try:
        server = start_metrics_server(port=port, addr=host, routes=routes)
    except MetricsServerError as exc:
        fail(str(exc))
    err_console.print(f"metrics on {server.url}/metrics, the dashboard on "
                      f"{server.url}/dashboard")
    if routes:
        err_console.print(f"the store's summary on {server.url}/api/metrics, exports on "
                          f"{server.url}/api/metrics/export?format=json|prometheus|influxdb")
    return server


def _serve_until_signal(server: MetricsServer) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    err_console.print(f"still serving {server.url}/metrics for scraping; Ctrl-C to stop")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
