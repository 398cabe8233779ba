"""The performance-event store's HTTP routes, for either transport.

``store_routes(db)`` answers ``GET {api_prefix}/metrics`` (the summary as JSON) and
``GET {api_prefix}/metrics/export?format=json|prometheus|influxdb``. Query parameters:
``since``/``until`` (the CLI's forms: epoch seconds, ISO 8601, or a duration ago such as
``24h``), ``model_id``, and for the export ``prefix``. Any bad parameter (unknown or
repeated names, values over 256 characters, control or invisible formatting characters,
an unknown format, an unparsable, reversed or out-of-range time, a model id with
characters outside letters, digits and ``. _ - : / @ + = ~``) is a 400 with
``{"error": ...}`` naming what is valid; a database that is unreachable is a 503; never a
500. Values reach SQL only as bound parameters.

Example:
    >>> from tinyllm import start_metrics_server
    >>> server = start_metrics_server(port=0, routes=store_routes(db))  # doctest: +SKIP
    >>> # curl "$URL/api/metrics/export?format=prometheus&prefix=diffusion_llm"
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from tinyllm.http.asgi import RoutesApp, asgi_app
from tinyllm.http.openapi import attach, store_paths
from tinyllm.http.routing import Response, Route
from tinyllm.store.export import CONTENT_TYPES, FORMATS, check_prefix
from tinyllm.store.timespec import TIME_FORMS, parse_time

if TYPE_CHECKING:
    from tinyllm.store.database import MetricsDatabase

__all__ = ["DEFAULT_API_PREFIX", "check_api_prefix", "store_asgi_app", "store_routes"]

log = logging.getLogger("tinyllm.store")

#: Where the routes live by default: ``/api/metrics``; the diffusion service's endpoints
#: live under ``/api/diffusion`` (pass ``api_prefix``).
DEFAULT_API_PREFIX = "/api"
_API_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_MAX_VALUE = 256  # characters per parameter value: longer is abuse, not a model id
# C0 and C1 controls, and the invisible ones that make a logged value read differently
# from what it is (zero-width, bidirectional overrides, line/paragraph separators, BOM).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# Model ids as they come (gpt-4o, meta-llama/Llama-3.1-8B-Instruct, llama3.1:8b,
# ft:gpt-4o:org:x@rev): quotes, spaces, semicolons, brackets and the like never appear in
# one, and rejecting them turns an injection attempt into a 400 instead of an empty answer.
_MODEL_ID_RE = re.compile(r"[\w.:/@+=~-]+")
_MODEL_ID_FORMS = "letters, digits and . _ - : / @ + = ~"
#: Times the HTTP API accepts: 1970-01-01 up to the end of year 9999 (what ISO 8601 can say).
_MAX_EPOCH = 253402300800.0
_SUMMARY_PARAMS = ("since", "until", "model_id")
_EXPORT_PARAMS = ("format", "prefix", "since", "until", "model_id")


_T = TypeVar("_T")


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
        value = parse_time(raw)
    except ValueError:
        try:
            value = float(raw)  # also 1.7e9: epoch seconds in scientific notation
        except ValueError:
            raise _BadRequest(f"{key} must be {TIME_FORMS}; got {raw[:40]!r}") from None
    if not 0.0 <= value < _MAX_EPOCH:  # NaN fails this too
        raise _BadRequest(f"{key} must be a time from 1970-01-01 to 9999-12-31 (epoch "
                          f"seconds 0 to {_MAX_EPOCH:.0f}); got {raw[:40]!r}")
    return value


def _range(params: dict[str, str]) -> tuple[float | None, float | None, str | None]:
    since, until = _time(params, "since"), _time(params, "until")
    if since is not None and until is not None and since > until:
        raise _BadRequest(f"since must be <= until, got since={since!r} until={until!r}")
    model_id = params.get("model_id") or None
    if model_id is not None and not _MODEL_ID_RE.fullmatch(model_id):
        raise _BadRequest(f"model_id may contain only {_MODEL_ID_FORMS}; got "
                          f"{model_id[:40]!r}")
    return since, until, model_id


def _guard(name: str, work: Callable[[], _T]) -> _T | Response:
    try:
        return work()
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
    """``{path: route}`` for ``start_metrics_server(routes=...)`` or ``asgi_app(...)``.

    ``export_prefix`` is the export's family prefix / measurement when a request gives
    no ``prefix`` parameter (default ``tinyllm_store``; the diffusion service's
    endpoints use ``diffusion_llm``). Exports are streamed (chunked): memory stays flat
    whatever the store's size. The first piece is read before the status is sent, so a
    database that is down is still a 503.

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
            chunks = db.iter_export(fmt, prefix=prefix, since=since, until=until,
                                    model_id=model_id)
            first = next(chunks, "")
            return Response(200, first.encode(), CONTENT_TYPES[fmt], rest=_pieces(chunks))

        return _guard("export", work)

    described = store_paths(api_prefix, CONTENT_TYPES)
    return {f"{api_prefix}/metrics": attach(summary, described[f"{api_prefix}/metrics"]),
            f"{api_prefix}/metrics/export": attach(
                export, described[f"{api_prefix}/metrics/export"])}


def _pieces(chunks: Iterator[str]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield chunk.encode()
    except Exception as exc:  # the 200 went out: the transport cuts the body short
        log.warning("metrics store export stopped part way: %s", exc)
        raise
    finally:  # a client gone mid-stream: release the export's connection now
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def store_asgi_app(
    db: MetricsDatabase, api_prefix: str = DEFAULT_API_PREFIX,
    export_prefix: str | None = None,
) -> RoutesApp:
    """The store's routes as an ASGI app, for Starlette / FastAPI in one line.

    Mount it where its prefix lives: ``app.mount("/api", store_asgi_app(db))``, or
    ``app.mount("/api/diffusion", store_asgi_app(db, "/api/diffusion", "diffusion_llm"))``
    for the diffusion service's endpoints. Same answers and 400s as ``store_routes``
    on the built-in server.

    Example:
        >>> from starlette.applications import Starlette            # doctest: +SKIP
        >>> app = Starlette()                                         # doctest: +SKIP
        >>> app.mount("/api", store_asgi_app(db))                     # doctest: +SKIP
        >>> # GET /api/metrics, GET /api/metrics/export?format=prometheus
    """
    return asgi_app(store_routes(db, api_prefix, export_prefix))
