"""The OpenAPI 3 description of tinyllm's HTTP routes, as data, served at ``/openapi.json``.

Every ``Router`` answers ``GET /openapi.json`` (unless a route of its own is there) with
a description of the routes it serves: the built-in ones (``/metrics``, ``/health``,
``/ready``, the dashboard) from ``BUILTIN_PATHS``, the store's from ``store_paths``
(attached to its routes by ``store_routes``), and whatever the router's owner adds
(``Router.openapi_paths``: the gateway's model APIs, ``tinyllm.serve.openapi``). The
description is built when it is asked for, so routes added to a router later (the
store's, with ``--db``) are in it.

Example:
    >>> from tinyllm.http.routing import Router
    >>> doc = describe(Router({"/health": lambda q, h: None}))
    >>> doc["openapi"], sorted(doc["paths"])
    ('3.1.0', ['/health', '/openapi.json'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tinyllm._version import __version__

if TYPE_CHECKING:
    from tinyllm.http.routing import Route, Router

__all__ = [
    "BUILTIN_PATHS",
    "OPENAPI_PATH",
    "SIMPLE_ERROR",
    "attach",
    "describe",
    "json_answer",
    "store_paths",
]

#: Where every router serves its description.
OPENAPI_PATH = "/openapi.json"
_ATTRIBUTE = "__openapi__"

#: tinyllm's own routes answer errors as ``{"error": "<what was wrong>"}``.
SIMPLE_ERROR: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "string"}},
}


def json_answer(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAPI response of JSON (``schema``, default: any object)."""
    return {"description": description, "content": {"application/json": {
        "schema": dict(schema) if schema is not None else {"type": "object"}}}}


def _text(description: str, *types: str) -> dict[str, Any]:
    return {"description": description,
            "content": {t: {"schema": {"type": "string"}} for t in types}}


def _error(description: str) -> dict[str, Any]:
    return json_answer(description, SIMPLE_ERROR)


def _get(summary: str, responses: dict[str, Any], *, parameters: list[Any] | None = None,
         tag: str = "tinyllm") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {
        **responses, "400": _error("a malformed query string")}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


_HEALTH = {"type": "object", "required": ["status"], "properties": {
    "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
    "version": {"type": "string"}}}
_READY = {"type": "object", "required": ["status", "models"], "properties": {
    "status": {"type": "string", "enum": ["ready", "not ready"]},
    "models": {"type": "array", "items": {"type": "string"}},
    "reason": {"type": "string"}}}

#: The routes every tinyllm server may serve, by path.
BUILTIN_PATHS: dict[str, dict[str, Any]] = {
    "/metrics": _get(
        "Every metric, in the Prometheus text format or OpenMetrics (by Accept)",
        {"200": _text("the exposition", "text/plain", "application/openmetrics-text")},
        parameters=[{"name": "name[]", "in": "query", "required": False,
                     "description": "only these metric families",
                     "schema": {"type": "array", "items": {"type": "string"}},
                     "style": "form", "explode": True}]),
    "/health": _get("Liveness: the health checks (degraded is still 200)", {
        "200": json_answer("healthy or degraded", _HEALTH),
        "503": json_answer("unhealthy", _HEALTH)}),
    "/ready": _get("Readiness: every model can be answered", {
        "200": json_answer("ready", _READY),
        "503": json_answer("a model is loading, or every upstream is failing", _READY)}),
    "/dashboard": _get("The built-in dashboard (HTML)", {
        "200": _text("the page", "text/html")}),
    "/dashboard/data": _get("The dashboard's figures: totals and recent points", {
        "200": json_answer("the figures", {"type": "object", "required": ["totals"],
                                           "properties": {"totals": {"type": "object"}}})}),
    "/dashboard/uplot.js": _get("The dashboard's chart library", {
        "200": _text("the script", "text/javascript")}),
    "/dashboard/uplot.css": _get("The dashboard's chart styles", {
        "200": _text("the styles", "text/css")}),
    OPENAPI_PATH: _get("This description (OpenAPI 3.1)", {
        "200": json_answer("the OpenAPI document")}),
}

_TIME = ("epoch seconds, ISO 8601 (2026-01-01T00:00:00Z) or a duration ago (24h, 7d); "
         "from 1970 to 9999")


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


# The times the store's routes take, as patterns (what tinyllm.store.timespec reads,
# less its rarer spellings; empty is "no bound"): epoch seconds, a duration ago, ISO 8601.
_TIME_SCHEMA = {"type": "string", "anyOf": [
    {"pattern": r"^$"},
    {"pattern": r"^[0-9]{1,11}(\.[0-9]{1,6})?$"},
    {"pattern": r"^[0-9]{1,3}[smhdw]$"},
    {"pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
                r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"}]}
_STORE_PARAMS = [
    _query("since", f"from this time: {_TIME}", _TIME_SCHEMA),
    _query("until", f"up to this time (not before since): {_TIME}", _TIME_SCHEMA),
    _query("model_id", "only this model (letters, digits and . _ - : / @ + = ~)",
           {"type": "string", "maxLength": 256, "pattern": r"^[A-Za-z0-9_.:/@+=~-]*$"}),
]


def store_paths(api_prefix: str, content_types: Mapping[str, str]) -> dict[str, Any]:
    """The store's two routes under ``api_prefix`` (``tinyllm.http.store``); bad
    parameters are 400 ``{"error": ...}``, a store that is down 503."""
    errors = {"400": _error("a bad parameter (named, with what is valid)"),
              "503": _error("the metrics store is unavailable")}
    export_types = sorted(set(content_types.values()))
    return {
        f"{api_prefix}/metrics": {"get": {
            "summary": "The store's summary: requests, tokens, latency and cost by model",
            "tags": ["store"], "parameters": _STORE_PARAMS,
            "responses": {"200": json_answer("the summary"), **errors}}},
        f"{api_prefix}/metrics/export": {"get": {
            "summary": "The store's requests, exported (streamed)",
            "tags": ["store"],
            "parameters": [
                _query("format", "json (default), prometheus or influxdb",
                       {"type": "string", "enum": list(content_types)}),
                _query("prefix", "the family prefix / measurement (default tinyllm_store)",
                       {"type": "string", "pattern":
                        "^([A-Za-z][A-Za-z0-9_]{0,99}|_[A-Za-z0-9][A-Za-z0-9_]{0,98}|_)?$"}),
                *_STORE_PARAMS],
            "responses": {"200": {"description": "the export", "content": {
                t: {"schema": {"type": "string"} if t.startswith("text/") else {}}
                for t in export_types}}, **errors}}},
    }


def attach(route: Route, path_item: Mapping[str, Any]) -> Route:
    """``route``, carrying its OpenAPI path item (for routes whose path is chosen at
    run time, such as the store's under its prefix)."""
    setattr(route, _ATTRIBUTE, dict(path_item))
    return route


def describe(router: Router, title: str = "tinyllm") -> dict[str, Any]:
    """The OpenAPI 3.1 document of what ``router`` serves (see the module docstring).

    A route with no description of its own is listed as a GET answering anything.
    """
    paths: dict[str, Any] = {}
    for path, route in sorted(router.routes.items()):
        item = getattr(route, _ATTRIBUTE, None) or BUILTIN_PATHS.get(path)
        paths[path] = item if item is not None else _get(
            "A route added by the application", {"200": {"description": "its answer"}})
    paths.update(router.openapi_paths)
    paths.setdefault(OPENAPI_PATH, BUILTIN_PATHS[OPENAPI_PATH])
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__,
                 "description": "Every route answers HEAD as GET; another method on a "
                                "GET route is 405 with Allow."},
        "paths": paths,
    }
