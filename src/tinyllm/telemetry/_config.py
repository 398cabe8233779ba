"""``TelemetryConfig``: what to trace, where to send it, resolved once.

Every field left at ``None`` is resolved when the config is built, by the one precedence
rule (argument, then environment variable, then default), so a config object always
shows the values that will be used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from tinyllm import settings

__all__ = ["EXPORTERS", "PROTOCOLS", "TelemetryConfig"]

#: Valid ``exporter`` values.
EXPORTERS = ("console", "otlp", "none")
#: Valid ``otlp_protocol`` values.
PROTOCOLS = ("grpc", "http/protobuf")

_DEFAULT_SERVICE = "tinyllm"
_DEFAULT_GRPC = "http://localhost:4317"
_DEFAULT_HTTP_BASE = "http://localhost:4318"
_TRACES_PATH = "/v1/traces"
_METRICS_PATH = "/v1/metrics"
_DEFAULT_EXPORT_TIMEOUT = 3.0


class _Resolved(NamedTuple):
    """The settings configure_telemetry uses (every env variable already read)."""

    exporter: str
    protocol: str | None  # None unless exporter == "otlp"
    traces_endpoint: str | None
    metrics_endpoint: str | None
    headers: dict[str, str]
    sampling_rate: float
    service_name: str
    export_timeout: float


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _check_choice(argument: str, value: str, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str (one of {', '.join(valid)}), got {value!r}")
    normal = value.strip().lower()
    if normal not in valid:
        raise ValueError(f"{argument}={value!r} is not valid; use one of: {', '.join(valid)}")
    return normal


def _check_rate(argument: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"{argument}={value!r} is not a number; use a sampling rate from 0.0 to 1.0"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{argument} must be a number from 0.0 to 1.0, got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{argument}={value!r} is out of range; use 0.0 to 1.0")
    return float(value)


def _with_scheme(endpoint: str) -> str:
    # OTLP endpoints are URLs; a bare host:port (as often written for gRPC) means plain
    # http, the way local collectors are run.
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _check_endpoint(argument: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(
            f"{argument} must be a URL string such as 'http://localhost:4317', got {value!r}"
        )
    url = _with_scheme(value.strip())
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{argument}={value!r} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{argument}={value!r} is not an http(s) URL with a host, e.g. "
            "'http://localhost:4317' (gRPC) or 'http://localhost:4318/v1/traces' (HTTP)"
        )
    return url


def _looks_http(endpoint: str) -> bool:
    parts = urlsplit(endpoint)
    return parts.port == 4318 or parts.path.rstrip("/").endswith(_TRACES_PATH)


def _http_signal_url(endpoint: str, path: str) -> str:
    """``endpoint`` as a full OTLP/HTTP URL for ``path`` (/v1/traces or /v1/metrics)."""
    base = endpoint.rstrip("/")
    for known in (_TRACES_PATH, _METRICS_PATH):
        if base.endswith(known):
            return base[: -len(known)] + path
    if urlsplit(base).path:  # a custom path: the caller meant exactly this URL
        return base
    return base + path


def _parse_headers(argument: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        headers: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    f"{argument}: {item.strip()!r} is not key=value; use "
                    "'key1=value1,key2=value2' (values may be URL-encoded)"
                )
            headers[unquote(key.strip()).lower()] = unquote(val.strip())
        return headers
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, val in value.items():
            if not isinstance(key, str) or not isinstance(val, str):
                raise TypeError(f"{argument} must map str to str, got {key!r}: {val!r}")
            out[key.lower()] = val
        return out
    raise TypeError(f"{argument} must be a mapping or 'k=v,k2=v2', got {type(value).__name__}")


@dataclass(frozen=True)
class TelemetryConfig:
    """How tinyllm traces: on or off, which exporter, where, how much.

    Args:
        enable_tracing: record spans (default off: ``trace_span`` and ``traced`` cost
            next to nothing).
        service_name: ``service.name`` of every span; default ``$OTEL_SERVICE_NAME``,
            else ``tinyllm``.
        exporter: ``"console"`` (spans printed to stderr), ``"otlp"`` or ``"none"``
            (spans recorded, trace ids in logs and exemplars, nothing exported). Default
            ``$OTEL_TRACES_EXPORTER``, else ``"otlp"`` when an OTLP endpoint is given
            (argument or environment), else ``"console"``.
        otlp_endpoint: the collector. gRPC: ``http://host:4317`` (any port); HTTP: the
            base URL or the full ``.../v1/traces`` URL. Default
            ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``$OTEL_EXPORTER_OTLP_ENDPOINT``,
            else the local collector (``http://localhost:4317`` or ``:4318``). A bare
            ``host:port`` means ``http://host:port``.
        sampling_rate: fraction of traces kept, 0.0-1.0 (parent-based: a trace is kept or
            dropped whole). Default ``$OTEL_TRACES_SAMPLER_ARG``, else 1.0.
        otlp_protocol: ``"grpc"`` or ``"http/protobuf"``. Default
            ``$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``$OTEL_EXPORTER_OTLP_PROTOCOL``,
            else ``http/protobuf`` for an endpoint on port 4318 or ending in
            ``/v1/traces``, else ``grpc``.
        otlp_headers: headers sent with every export (a mapping, or ``"k=v,k2=v2"``).
            Default ``$OTEL_EXPORTER_OTLP_TRACES_HEADERS``, else
            ``$OTEL_EXPORTER_OTLP_HEADERS``.
        enable_metrics: also send the GenAI metrics (``gen_ai.client.operation.duration``,
            ``gen_ai.client.token.usage``, ...) over OTLP. Off by default: Prometheus
            already has these numbers, and the OTel metrics SDK costs more per request.
        export_timeout: seconds one export may take, retries included (default 3).
            Exports run on a background thread, so this bounds how long a dead collector
            holds up a flush, never a request.

    Raises ValueError or TypeError naming the argument (or environment variable) and the
    valid values.

    Example:
        >>> config = TelemetryConfig(enable_tracing=True, exporter="otlp",
        ...                          otlp_endpoint="collector:4317", sampling_rate=0.1)
        >>> config.otlp_endpoint, config.otlp_protocol, config.sampling_rate
        ('http://collector:4317', 'grpc', 0.1)
        >>> TelemetryConfig(otlp_endpoint="http://collector:4318").otlp_endpoint
        'http://collector:4318/v1/traces'
    """

    enable_tracing: bool = False
    service_name: str | None = None
    exporter: str | None = None
    otlp_endpoint: str | None = None
    sampling_rate: float | None = None
    otlp_protocol: str | None = None
    otlp_headers: Mapping[str, str] | str | None = field(default=None, repr=False, hash=False)
    enable_metrics: bool = False
    export_timeout: float | None = None
    _resolved: _Resolved = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("enable_tracing", "enable_metrics"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        resolved = _resolve(self)
        set_ = object.__setattr__  # frozen: the resolved values are written once, here
        set_(self, "_resolved", resolved)
        set_(self, "service_name", resolved.service_name)
        set_(self, "exporter", resolved.exporter)
        set_(self, "sampling_rate", resolved.sampling_rate)
        set_(self, "export_timeout", resolved.export_timeout)
        if resolved.exporter == "otlp":
            set_(self, "otlp_endpoint", resolved.traces_endpoint)
            set_(self, "otlp_protocol", resolved.protocol)
            set_(self, "otlp_headers", resolved.headers)


def _resolve(c: TelemetryConfig) -> _Resolved:
    s = settings
    # service name
    if c.service_name is not None:
        if not isinstance(c.service_name, str) or not c.service_name.strip():
            raise ValueError(f"service_name must be a non-empty string, got {c.service_name!r}")
        service = c.service_name.strip()
    else:
        service = _env(s.ENV_OTEL_SERVICE_NAME) or _DEFAULT_SERVICE

    # sampling
    if c.sampling_rate is not None:
        rate = _check_rate("sampling_rate", c.sampling_rate)
    else:
        env_rate = _env(s.ENV_OTEL_TRACES_SAMPLER_ARG)
        rate = 1.0 if env_rate is None else _check_rate(s.ENV_OTEL_TRACES_SAMPLER_ARG, env_rate)

    # timeout
    timeout = _DEFAULT_EXPORT_TIMEOUT
    if c.export_timeout is not None:
        t = c.export_timeout
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise TypeError(f"export_timeout must be a number of seconds, got {t!r}")
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"export_timeout={t!r} must be a positive number of seconds")
        timeout = float(t)

    # endpoint and protocol (read even for other exporters: they choose the default one)
    arg_endpoint = (
        None if c.otlp_endpoint is None else _check_endpoint("otlp_endpoint", c.otlp_endpoint)
    )
    env_traces = _env(s.ENV_OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    env_base = _env(s.ENV_OTEL_EXPORTER_OTLP_ENDPOINT)

    if c.exporter is not None:
        exporter = _check_choice("exporter", c.exporter, EXPORTERS)
    elif (env_exporter := _env(s.ENV_OTEL_TRACES_EXPORTER)) is not None:
        # The spec allows a list ("otlp,console"); tinyllm sends to one: the first.
        exporter = _check_choice(
            s.ENV_OTEL_TRACES_EXPORTER, env_exporter.split(",")[0], EXPORTERS
        )
    elif arg_endpoint or env_traces or env_base:
        exporter = "otlp"
    else:
        exporter = "console"

    if exporter != "otlp":
        if c.otlp_protocol is not None:
            _check_choice("otlp_protocol", c.otlp_protocol, PROTOCOLS)
        if c.otlp_headers is not None:
            _parse_headers("otlp_headers", c.otlp_headers)
        return _Resolved(exporter, None, None, None, {}, rate, service, timeout)

    if c.otlp_protocol is not None:
        protocol = _check_choice("otlp_protocol", c.otlp_protocol, PROTOCOLS)
    elif (env_p := _env(s.ENV_OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)) is not None:
        protocol = _check_choice(s.ENV_OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, env_p, PROTOCOLS)
    elif (env_p := _env(s.ENV_OTEL_EXPORTER_OTLP_PROTOCOL)) is not None:
        protocol = _check_choice(s.ENV_OTEL_EXPORTER_OTLP_PROTOCOL, env_p, PROTOCOLS)
    else:
        hint = arg_endpoint or (
            _with_scheme(env_traces) if env_traces else env_base and _with_scheme(env_base)
        )
        protocol = "http/protobuf" if hint and _looks_http(hint) else "grpc"

    http = protocol == "http/protobuf"
    metrics_endpoint: str
    if arg_endpoint is not None:
        traces = _http_signal_url(arg_endpoint, _TRACES_PATH) if http else arg_endpoint
        metrics_endpoint = _http_signal_url(arg_endpoint, _METRICS_PATH) if http else arg_endpoint
    else:
        if env_traces is not None:
            # The signal-specific variable is used as is (the OTel spec's rule).
            traces = _check_endpoint(s.ENV_OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, env_traces)
        elif env_base is not None:
            base = _check_endpoint(s.ENV_OTEL_EXPORTER_OTLP_ENDPOINT, env_base)
            traces = base.rstrip("/") + _TRACES_PATH if http else base
        else:
            traces = _DEFAULT_HTTP_BASE + _TRACES_PATH if http else _DEFAULT_GRPC
        env_metrics = _env(s.ENV_OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
        if env_metrics is not None:
            metrics_endpoint = _check_endpoint(
                s.ENV_OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, env_metrics
            )
        elif env_base is not None:
            base = _check_endpoint(s.ENV_OTEL_EXPORTER_OTLP_ENDPOINT, env_base)
            metrics_endpoint = base.rstrip("/") + _METRICS_PATH if http else base
        else:
            metrics_endpoint = _http_signal_url(traces, _METRICS_PATH) if http else traces

    if c.otlp_headers is not None:
        headers = _parse_headers("otlp_headers", c.otlp_headers)
    elif (env_h := _env(s.ENV_OTEL_EXPORTER_OTLP_TRACES_HEADERS)) is not None:
        headers = _parse_headers(s.ENV_OTEL_EXPORTER_OTLP_TRACES_HEADERS, env_h)
    elif (env_h := _env(s.ENV_OTEL_EXPORTER_OTLP_HEADERS)) is not None:
        headers = _parse_headers(s.ENV_OTEL_EXPORTER_OTLP_HEADERS, env_h)
    else:
        headers = {}
    return _Resolved(exporter, protocol, traces, metrics_endpoint, headers, rate, service,
                     timeout)
