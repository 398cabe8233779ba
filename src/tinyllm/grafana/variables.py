"""Grafana's variable interpolation, for running a panel's query elsewhere (the
tests run every panel against a real Prometheus and InfluxDB)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["influxql_regex", "interpolate", "prometheus_regex"]

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def interpolate(query: str, values: Mapping[str, str]) -> str:
    """``query`` with Grafana's ``$name`` / ``${name}`` variables replaced by ``values``
    (already formatted: see ``prometheus_regex``); unknown variables are left as they are.

    Example:
        >>> interpolate('x{model=~"$model"}[$__rate_interval]',
        ...             {"model": prometheus_regex(["qwen2.5"]), "__rate_interval": "5m"})
        'x{model=~"qwen2\\\\\\\\.5"}[5m]'
    """
    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return _VARIABLE.sub(replace, query)


def prometheus_regex(values: Sequence[str]) -> str:
    """A multi-value variable as Grafana writes it into a PromQL ``=~"..."`` string: each
    value regex-escaped (two backslashes: PromQL unescapes one), several as ``(a|b)``."""
    escaped = [re.sub(r"([$^*{}\[\]'+?.()|\\])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def influxql_regex(values: Sequence[str]) -> str:
    """A multi-value variable as Grafana writes it into an InfluxQL ``/.../`` regex."""
    escaped = [re.sub(r"([$^*{}\[\]'+?.()|\\/])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
