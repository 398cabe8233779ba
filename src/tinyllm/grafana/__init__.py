"""Grafana dashboards for tinyllm, as data: the panels, their queries, and the JSON.

Two dashboards: **overview** (Prometheus: every family of the metric catalog that is
worth a chart) and **store** (InfluxDB: the performance-event store's InfluxDB export).
Each panel is a title, a unit and its queries; the JSON Grafana provisions is rendered
from them, and so is the "Dashboards" section of docs/queries.md, so the docs and the
dashboards show the same query text. ``python -m tinyllm.grafana`` rewrites
``deploy/grafana/dashboards/*.json``, that section and the "not charted" table of
``deploy/grafana/README.md``; a test fails when the committed files drift.

The rules hold by construction here (the PromQL is built by the helpers below) and are
checked again on the committed JSON by tests/integration/test_grafana_dashboards.py:
a ``$datasource`` variable and no datasource UID; ``model=~"$model"`` on every family
with a ``model`` label; a unit on every panel; ``$__rate_interval`` in every ``rate``;
counters only under ``rate``; quantiles as
``histogram_quantile(q, sum by (le, ...) (rate(x_bucket[$__rate_interval])))``.

Example:
    >>> from tinyllm.grafana import interpolate, overview_dashboard
    >>> panel = overview_dashboard().panels()[0]
    >>> panel.title
    'Requests per second by model'
    >>> interpolate(panel.targets[0].expr, {"model": ".*", "__rate_interval": "1m"})
    'sum by (model) (rate(tinyllm_requests_total{model=~".*"}[1m]))'
"""

from __future__ import annotations

from tinyllm.grafana._model import Dashboard, Panel, Row, Target, Variable
from tinyllm.grafana.docs import dashboards, render_not_charted, render_queries_section
from tinyllm.grafana.overview import NOT_CHARTED, overview_dashboard
from tinyllm.grafana.render import render_dashboard
from tinyllm.grafana.store import store_dashboard
from tinyllm.grafana.variables import influxql_regex, interpolate, prometheus_regex

__all__ = [
    "NOT_CHARTED",
    "Dashboard",
    "Panel",
    "Row",
    "Target",
    "Variable",
    "dashboards",
    "influxql_regex",
    "interpolate",
    "overview_dashboard",
    "prometheus_regex",
    "render_dashboard",
    "render_not_charted",
    "render_queries_section",
    "store_dashboard",
]
