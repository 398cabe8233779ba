"""Running the gateway: uvicorn (uvloop and httptools), graceful stop, the store flushed.

SIGTERM or Ctrl-C: the listening socket closes, requests in flight (streams included)
get ``grace`` seconds to finish, the upstream connections and the model's queue are
released, the store is flushed, and the process exits 0.

The configuration's prices and SLO are put in force (``configure_accounting``) before
the gateway is built: building it builds the process's metric families, whose buckets
include the SLO's thresholds only if the SLO is known by then.

Example:
    >>> from tinyllm.serve.config import default_config
    >>> run_gateway(default_config(), port=8080)                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tinyllm._observed import observe_endpoint
from tinyllm.http.routing import Route
from tinyllm.serve.app import Gateway
from tinyllm.serve.config import GatewayConfig

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_PORT",
    "configure_accounting",
    "make_server",
    "run_gateway",
    "server_config",
]

DEFAULT_PORT = 8080
#: Seconds requests in flight get to finish after SIGTERM / Ctrl-C.
DEFAULT_GRACE = 30.0
#: Connections served at once; past it uvicorn answers 503 at once.
MAX_CONNECTIONS = 2048
_INSTALL_HINT = "pip install 'tinyllm[serve]'"

log = logging.getLogger("tinyllm.serve")


def configure_accounting(config: GatewayConfig) -> None:
    """Put ``config``'s prices and SLO in force in this process; call it before anything
    builds the metric families (``get_metrics_collector()``, a ``Gateway``).

    The file's ``prices`` are layered over the process's table (``--prices`` /
    ``$TINYLLM_PRICES`` over the shipped one): the file wins for the models it names.
    Its ``slo`` replaces the process's (``--slo`` / ``$TINYLLM_SLO``) whole. Without
    either section, nothing changes.

    Example:
        >>> from tinyllm.accounting import configure_slo, get_slo
        >>> from tinyllm.serve.config import parse_config
        >>> configure_accounting(parse_config(
        ...     "{models: [{name: m, provider: local}], slo: {default: {e2e: 10s}}}"))
        >>> get_slo().objectives_for("m").e2e
        10.0
        >>> _ = configure_slo(None)  # back to the environment's
    """
    from tinyllm import accounting

    if config.price_section is not None:
        accounting.configure_prices(config.price_section.layered_over(accounting.get_prices()))
    if config.slo is not None:
        accounting.configure_slo(config.slo)


def make_server(
    config: GatewayConfig, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
    grace: float = DEFAULT_GRACE, routes: Mapping[str, Route] | None = None,
    gateway: Gateway | None = None,
) -> Any:
    """A ``uvicorn.Server`` for the gateway (not started: ``.run()`` serves until a
    signal, ``.serve()`` inside a loop). Without ``gateway``, one is built from
    ``config`` once its prices and SLO are in force (``configure_accounting``); a
    ``gateway`` given was built by the caller, who put them in force first."""
    import uvicorn

    if gateway is None:
        configure_accounting(config)
        gateway = Gateway(config, routes=routes)
    settings = server_config(gateway, host=host, port=port, grace=grace)
    return _quiet_exit(uvicorn.Server)(settings)


def server_config(app: Any, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  grace: float = DEFAULT_GRACE, factory: bool = False) -> Any:
    """The ``uvicorn.Config`` the gateway runs with (``app`` may be an import string of
    a factory, for workers)."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - a dependency of the serve extra
        raise ImportError(f"tinyllm serve needs uvicorn: {_INSTALL_HINT}") from exc
    # The gateway observes what it serves: SDK instrumentation in this process skips
    # calls to it, so each is counted once.
    observe_endpoint(host, port)
    return uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, factory=factory,
        loop=_best("uvloop", "asyncio"), http=_protocol(),
        lifespan="on", timeout_graceful_shutdown=int(grace) if grace else None,
        limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=30,
        server_header=False, date_header=False,
    )


def _quiet_exit(server_class: type[Any]) -> type[Any]:
    class GatewayServer(server_class):  # type: ignore[misc]
        """uvicorn re-raises a caught SIGTERM / SIGINT once it has stopped, so the
        process would end "killed by signal"; a stop we were asked for exits 0."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return GatewayServer


def _protocol() -> Any:
    """httptools with the head guards (tinyllm.serve.protocol), else uvicorn's h11."""
    if _best("httptools", "h11") == "h11":  # pragma: no cover - httptools is in the extra
        return "h11"
    from tinyllm.serve.protocol import GuardedHttpToolsProtocol

    return GuardedHttpToolsProtocol


def _best(fast: str, fallback: str) -> str:
    import importlib.util

    return fast if importlib.util.find_spec(fast) is not None else fallback


def run_gateway(
    config: GatewayConfig, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
    grace: float = DEFAULT_GRACE, routes: Mapping[str, Route] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C (see the module docstring)."""
    server = make_server(config, host=host, port=port, grace=grace, routes=routes)
    server.run()
