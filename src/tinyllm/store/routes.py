"""HTTP routes over a ``MetricsDatabase`` for ``tinyllm.metrics.server``.

``store_routes(db)`` answers ``GET {api_prefix}/metrics`` (the summary as JSON) and
``GET {api_prefix}/metrics/export?format=json|prometheus|influxdb``. Query parameters:
``since``/``until`` (epoch seconds), ``model_id``, and for the export ``prefix``. Any bad
parameter is a 400 with ``{"error": ...}`` naming what is valid; a database that is
unreachable is a 503; never a 500.

Example:
    >>> from tinyllm.metrics.server import start_metrics_server
    >>> server = start_metrics_server(port=0, routes=store_routes(db))  # doctest: +SKIP
    >>> # curl "$URL/api/metrics/export?format=prometheus&prefix=diffusion_llm"
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from tinyllm.metrics.server import Response, Route
from tinyllm.store.export import CONTENT_TYPES, FORMATS, check_prefix

if TYPE_CHECKING:
    from tinyllm.store.database import MetricsDatabase

__all__ = ["DEFAULT_API_PREFIX", "check_api_prefix", "store_routes"]

log = logging.getLogger("tinyllm.store")

#: Seed 004 serves ``/api/diffusion/metrics``; ours defaults to ``/api/metrics``.
DEFAULT_API_PREFIX = "/api"
_API_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_MAX_VALUE = 256  # characters per parameter value: longer is abuse, not a model id
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SUMMARY_PARAMS = ("since", "until", "model_id")
_EXPORT_PARAMS = ("format", "prefix", "since", "until", "model_id")


class _BadRequest(ValueError):
    pass


def _params(query: Mapping[str, list[str]], allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, values in query.items():
        if key not in allowed:
            raise _BadRequest(f"unknown query parameter {key[:40]!r}; valid: "
                              f"{', '.join(allowed)}")
        if len(values) != 1:
            raise _BadRequest(f"{key} given {len(values)} times; give it once")
        value = values[0]
        if len(value) > _MAX_VALUE:
            raise _BadRequest(f"{key} is {len(value)} characters long; at most {_MAX_VALUE}")
        if _CONTROL.search(value):
            raise _BadRequest(f"{key} contains control characters")
        out[key] = value
    return out


def _time(params: dict[str, str], key: str) -> float | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _BadRequest(f"{key} must be epoch seconds (e.g. 1700000000.5), got "
                          f"{raw[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _BadRequest(f"{key} must be finite epoch seconds >= 0, got {raw[:40]!r}")
    return value


def _range(params: dict[str, str]) -> tuple[float | None, float | None, str | None]:
    since, until = _time(params, "since"), _time(params, "until")
    if since is not None and until is not None and since > until:
        raise _BadRequest(f"since must be <= until, got since={since!r} until={until!r}")
    model_id = params.get("model_id") or None
    return since, until, model_id


def _guard(name: str, work: Any) -> Response:
    try:
        result: Response = work()
        return result
    except _BadRequest as exc:
        return Response.json({"error": str(exc)}, 400)
    except ValueError as exc:  # the library's own argument checks, same wording
        return Response.json({"error": str(exc)}, 400)
    except SQLAlchemyError as exc:
        log.warning("metrics store unavailable for %s: %s", name, exc)
        return Response.json({"error": "metrics store unavailable"}, 503)


def check_api_prefix(api_prefix: Any) -> str:
    """``api_prefix`` if it is a URL path like ``/api/diffusion``, else ValueError.

    Example:
        >>> check_api_prefix("/api/diffusion")
        '/api/diffusion'
    """
    if not isinstance(api_prefix, str) or not _API_PREFIX_RE.match(api_prefix):
        raise ValueError("api_prefix must be a path like /api or /api/diffusion (starting "
                         "with /, letters, digits, . _ ~ - only, no trailing slash); got "
                         f"{api_prefix!r}")
    return api_prefix


def store_routes(
    db: MetricsDatabase, api_prefix: str = DEFAULT_API_PREFIX,
    export_prefix: str | None = None,
) -> dict[str, Route]:
    """``{path: route}`` for ``start_metrics_server(routes=...)``.

    ``export_prefix`` is the export's family prefix / measurement when a request gives
    no ``prefix`` parameter (default ``tinyllm_store``; seed 004 uses ``diffusion_llm``).

    Example:
        >>> sorted(store_routes(db, "/api/diffusion", "diffusion_llm"))  # doctest: +SKIP
        ['/api/diffusion/metrics', '/api/diffusion/metrics/export']
    """
    check_api_prefix(api_prefix)
    default_prefix = check_prefix(export_prefix)

    def summary(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        def work() -> Response:
            since, until, model_id = _range(_params(query, _SUMMARY_PARAMS))
            return Response.json(db.get_summary(since, until, model_id))

        return _guard("summary", work)

    def export(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        def work() -> Response:
            params = _params(query, _EXPORT_PARAMS)
            fmt = params.get("format") or "json"
            if fmt not in FORMATS:
                raise _BadRequest(f"format must be one of {', '.join(FORMATS)}; got "
                                  f"{fmt[:40]!r}")
            prefix = check_prefix(params.get("prefix") or default_prefix)
            since, until, model_id = _range(params)
            body = db.export(fmt, prefix=prefix, since=since, until=until, model_id=model_id)
            return Response(200, body.encode(), CONTENT_TYPES[fmt])

        return _guard("export", work)

    return {f"{api_prefix}/metrics": summary, f"{api_prefix}/metrics/export": export}
