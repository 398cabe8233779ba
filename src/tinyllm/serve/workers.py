"""``tinyllm serve --workers N``: N processes on one socket, one set of metrics.

The parent binds the socket, makes a fresh multiprocess directory for this instance
(``PROMETHEUS_MULTIPROC_DIR``: every worker writes its metrics there, and ``/metrics``,
whichever worker answers it, shows the exact totals of all of them), and lets uvicorn's
supervisor run the workers. Each worker builds its own gateway from what the parent
passes in ``TINYLLM_SERVE_WORKER`` (the configuration file, ``--db``, ``--redis-url``
and the logging and tracing options), so a worker is exactly what a single-process
``tinyllm serve`` would have been. The directory is removed when the parent stops.

Example:
    >>> spec = WorkerSpec(config_file=None, db=None, redis_url=None)
    >>> WorkerSpec.from_env({ENV_SERVE_WORKER: spec.to_env()}) == spec
    True
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tinyllm.settings import ENV_PROMETHEUS_MULTIPROC_DIR, ENV_SERVE_WORKER

__all__ = ["WorkerSpec", "app", "run_workers"]


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the parent's gateway."""

    config_file: str | None
    db: str | None
    redis_url: str | None
    log_level: str | None = None
    log_format: str | None = None
    tracing: bool = False
    otlp_endpoint: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSpec:
        raw = (os.environ if environ is None else environ).get(ENV_SERVE_WORKER)
        if not raw:
            raise RuntimeError(f"{ENV_SERVE_WORKER} is not set: a gateway worker is started "
                               "by `tinyllm serve --workers N`")
        return cls(**json.loads(raw))


def app() -> Any:
    """The gateway of one worker (uvicorn calls this factory in each worker process)."""
    from tinyllm.logging import configure_logging
    from tinyllm.serve.app import Gateway
    from tinyllm.serve.config import default_config, load_config
    from tinyllm.serve.server import configure_accounting

    spec = WorkerSpec.from_env()
    config = default_config() if spec.config_file is None else load_config(spec.config_file)
    # First: the SLO's thresholds are bucket boundaries only of metric families built
    # after it is known (--prices/--slo reach the worker through the environment).
    configure_accounting(config)
    configure_logging(log_level=spec.log_level, log_format=spec.log_format)
    if spec.tracing or spec.otlp_endpoint:
        from tinyllm.telemetry import TelemetryConfig, configure_telemetry

        configure_telemetry(TelemetryConfig(
            enable_tracing=True, exporter="otlp" if spec.otlp_endpoint else None,
            otlp_endpoint=spec.otlp_endpoint))
    routes = None
    if spec.db is not None:
        from tinyllm.http.store import store_routes
        from tinyllm.store import configure_store

        store = configure_store(spec.db)
        routes = store_routes(store) if store is not None else None
    return Gateway(config, routes=routes, redis_url=spec.redis_url)


def run_workers(spec: WorkerSpec, sockets: list[Any], workers: int, server_config: Any) -> None:
    """Run ``workers`` gateway processes on ``sockets`` until SIGTERM / Ctrl-C.

    ``server_config`` is the ``uvicorn.Config`` of one worker, with this module's
    ``app`` factory as its application.
    """
    from uvicorn.supervisors import Multiprocess

    directory = tempfile.mkdtemp(prefix="tinyllm-serve-metrics-")
    previous = {k: os.environ.get(k) for k in (ENV_PROMETHEUS_MULTIPROC_DIR, ENV_SERVE_WORKER)}
    os.environ[ENV_PROMETHEUS_MULTIPROC_DIR] = directory
    os.environ[ENV_SERVE_WORKER] = spec.to_env()
    try:
        server_config.workers = workers
        Multiprocess(server_config, sockets=sockets).run()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(directory, ignore_errors=True)
