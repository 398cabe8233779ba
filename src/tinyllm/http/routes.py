"""The built-in routes: ``/metrics``, ``/health`` and the dashboard, for either transport.

``/metrics`` speaks the Prometheus text format, or OpenMetrics when the ``Accept``
header asks for it (prometheus_client's ``choose_encoder`` decides), and honours
``?name[]=...`` filters like prometheus_client's own server. With
``PROMETHEUS_MULTIPROC_DIR`` set it serves the aggregate of every worker process.
``/health`` runs the registered health checks: 200 when healthy or degraded, 503 when
unhealthy.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> routes = default_routes(CollectorRegistry())
    >>> sorted(routes)[:3]
    ['/dashboard', '/dashboard/data', '/dashboard/uplot.css']
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from tinyllm._version import __version__
from tinyllm.health import UNHEALTHY, run_health_checks
from tinyllm.http.dashboard import dashboard_routes
from tinyllm.http.routing import Response, Route
from tinyllm.metrics.collector import get_metrics_collector
from tinyllm.metrics.exposition import exposition_registry, generate_text

__all__ = ["default_routes", "exposition_registry", "health_route", "metrics_route"]

#: Seconds the health checks get when ``/health`` is asked (a probe's timeout is short).
HEALTH_TIMEOUT = 2.0


def metrics_route(registry: CollectorRegistry | None = None) -> Route:
    """``/metrics`` over ``registry`` (default: ``exposition_registry()``).

    Without a registry of its own it makes sure the process-wide collector exists, so
    that the very first scrape shows every tinyllm family (HELP, TYPE and
    ``tinyllm_system_info``), not an exposition without them.
    """
    if registry is None:
        get_metrics_collector()
    source = exposition_registry(registry)

    def serve(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        names = query.get("name[]")
        chosen = source.restricted_registry(names) if names else source
        # The text format: the same bytes as generate_latest's, written faster.
        body = generate_text(chosen) if encoder is generate_latest else encoder(chosen)
        return Response(200, body, content_type)

    return serve


def health_route(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
    """``/health``: the same checks as ``tinyllm health``, with the version.

    Degraded still answers 200, so that a probe restarts a process only when it is
    really unhealthy.
    """
    report = run_health_checks(timeout=HEALTH_TIMEOUT)
    report["version"] = __version__
    return Response.json(report, 503 if report["status"] == UNHEALTHY else 200)


def default_routes(registry: CollectorRegistry | None = None) -> dict[str, Route]:
    """What every tinyllm server serves: ``/metrics``, ``/health`` and the built-in
    dashboard (``/dashboard``, ``/dashboard/data``; see ``tinyllm.http.dashboard``)."""
    return {"/metrics": metrics_route(registry), "/health": health_route,
            **dashboard_routes(registry)}
