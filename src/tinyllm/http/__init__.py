"""tinyllm's HTTP surface: routes written once, served by two transports.

* ``start_metrics_server`` (standard library, a thread per connection): what a library
  user runs, with no dependency beyond Python;
* ``asgi_app`` (any ASGI server: uvicorn, or mounted in a Starlette / FastAPI app).

Both serve the same ``Router``: ``/metrics``, ``/health`` and whatever routes are given
(the store's summary and exports: ``tinyllm.http.store``), with the same answers,
the same 400s and 404s, gzip and streaming.

Example:
    >>> from tinyllm.http import asgi_app, start_metrics_server
    >>> with start_metrics_server(port=0) as server:
    ...     sorted(server.routes) == sorted(asgi_app().router.routes)
    True
"""

from tinyllm.http.asgi import ASGIApp, RoutesApp, asgi_app
from tinyllm.http.routes import default_routes, exposition_registry, health_route, metrics_route
from tinyllm.http.routing import Headers, Response, Route, Router
from tinyllm.http.threaded import MetricsServer, start_metrics_server

__all__ = [
    "ASGIApp",
    "Headers",
    "MetricsServer",
    "Response",
    "Route",
    "Router",
    "RoutesApp",
    "asgi_app",
    "default_routes",
    "exposition_registry",
    "health_route",
    "metrics_route",
    "start_metrics_server",
]
