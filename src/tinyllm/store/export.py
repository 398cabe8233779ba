"""Seed 004's exports: ``json``, ``prometheus`` (text format 0.0.4), ``influxdb`` (line
protocol), each an iterator of string chunks.

With ``prefix="diffusion_llm"`` the Prometheus output starts with exactly the seed's
four families (requests_total, errors_total, latency_seconds, tokens_total: HELP and
TYPE lines, labels, values, a blank line between families); after them comes one
addition, ``<prefix>_request_duration_seconds``, a summary with p50/p95/p99 per event
type. The InfluxDB output is the seed's ``requests``, ``latency`` and ``tokens`` points,
then ``errors`` (per endpoint) and ``latency_quantiles`` (p50/p95/p99 per event type).

Example:
    >>> t = Totals()
    >>> t.add("diffusion_generate", "generate", 10, 2, 15.0, 25)
    >>> print("".join(prometheus_lines(t, "diffusion_llm")).splitlines()[2])
    diffusion_llm_requests_total{endpoint="generate"} 10
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tinyllm.store.summary import QUANTILES, Totals, quantile, totals

if TYPE_CHECKING:
    from tinyllm.store.database import MetricsDatabase

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_PREFIX",
    "FORMATS",
    "check_format",
    "check_prefix",
    "influxdb_lines",
    "iter_export",
    "prometheus_lines",
]

#: The export formats, in the order error messages list them.
FORMATS = ("json", "prometheus", "influxdb")
#: The HTTP content type of each format.
CONTENT_TYPES = {
    "json": "application/json",
    "prometheus": "text/plain; version=0.0.4; charset=utf-8",
    "influxdb": "text/plain; charset=utf-8",
}
#: Default family prefix / measurement: clear of the live collector's ``tinyllm_*``
#: families (``tinyllm_store_*`` holds only ``..._events_dropped_total`` there).
DEFAULT_PREFIX = "tinyllm_store"
_PREFIX_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$")


def check_format(format: Any) -> str:
    """``format`` if it is one of ``FORMATS``, else ValueError listing them."""
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    return format


def check_prefix(prefix: Any) -> str:
    """``prefix`` (default ``DEFAULT_PREFIX``) if it is a valid metric name prefix."""
    if prefix is None:
        return DEFAULT_PREFIX
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix) or prefix.startswith("__"):
        raise ValueError("prefix must be 1-100 letters, digits or underscores, not starting "
                         f"with a digit or '__' (e.g. diffusion_llm); got {prefix!r}")
    return prefix


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(float(value))


def _by_endpoint(t: Totals) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for (_et, ep), (n, errs, _d, _tok) in t.cells.items():
        acc = out.setdefault(ep, [0, 0])
        acc[0] += n
        acc[1] += errs
    return dict(sorted(out.items()))


def _by_type(t: Totals) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for (et, _ep), (n, _errs, d, tok) in t.cells.items():
        acc = out.setdefault(et, [0, 0.0, 0])
        acc[0] += n
        acc[1] += d
        acc[2] += tok
    return dict(sorted(out.items()))


def prometheus_lines(t: Totals, prefix: str) -> Iterator[str]:
    """The Prometheus text exposition of ``t``, a family per chunk."""
    eps, types = _by_endpoint(t), _by_type(t)

    def family(name: str, help: str, kind: str, label: str, rows: dict[str, Any]) -> str:
        head = f"# HELP {prefix}_{name} {help}\n# TYPE {prefix}_{name} {kind}\n"
        return head + "".join(f'{prefix}_{name}{{{label}="{_label(k)}"}} {v}\n'
                              for k, v in rows.items())

    yield family("requests_total", "Total number of requests", "counter", "endpoint",
                 {ep: n for ep, (n, _e) in eps.items()})
    yield "\n" + family("errors_total", "Total number of errors", "counter", "endpoint",
                        {ep: e for ep, (_n, e) in eps.items()})
    yield "\n" + family("latency_seconds", "Average latency in seconds", "gauge",
                        "event_type", {et: _num(d / n) for et, (n, d, _t) in types.items() if n})
    yield "\n" + family("tokens_total", "Total tokens generated", "counter", "event_type",
                        {et: tok for et, (_n, _d, tok) in types.items()})
    # Beyond the seed: quantiles from the log-scale histograms, as a summary family.
    name = f"{prefix}_request_duration_seconds"
    lines = [f"\n# HELP {name} Request latency quantiles in seconds (log-scale histogram, "
             f"within 4.4%)\n# TYPE {name} summary\n"]
    for et, (n, d, _tok) in types.items():
        h = t.hist.get(et, {})
        lab = _label(et)
        lines.extend(f'{name}{{event_type="{lab}",quantile="{q}"}} {_num(quantile(h, q))}\n'
                     for q in QUANTILES)
        lines.append(f'{name}_sum{{event_type="{lab}"}} {_num(d)}\n')
        lines.append(f'{name}_count{{event_type="{lab}"}} {n}\n')
    yield "".join(lines)


def _tag(value: str) -> str:
    # Line protocol: commas, equals signs and spaces in tag values are backslash-escaped;
    # a newline cannot be escaped at all, so it becomes a space (escaped).
    return (value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
            .replace(" ", "\\ ").replace("\n", "\\ "))


def influxdb_lines(t: Totals, measurement: str, timestamp_ns: int) -> Iterator[str]:
    """The InfluxDB line protocol of ``t``, every point stamped ``timestamp_ns``."""
    eps, types = _by_endpoint(t), _by_type(t)
    m, ts = measurement, timestamp_ns
    yield "".join(f"{m},type=requests,endpoint={_tag(ep)} count={n} {ts}\n"
                  for ep, (n, _e) in eps.items())
    yield "".join(f"{m},type=latency,event_type={_tag(et)} value={_num(d / n)} {ts}\n"
                  for et, (n, d, _t) in types.items() if n)
    yield "".join(f"{m},type=tokens,event_type={_tag(et)} count={tok} {ts}\n"
                  for et, (_n, _d, tok) in types.items())
    # Beyond the seed.
    yield "".join(f"{m},type=errors,endpoint={_tag(ep)} count={e} {ts}\n"
                  for ep, (_n, e) in eps.items())
    lines = []
    for et in types:
        h = t.hist.get(et)
        if h:
            fields = ",".join(f"p{round(q * 100)}={_num(quantile(h, q))}" for q in QUANTILES)
            lines.append(f"{m},type=latency_quantiles,event_type={_tag(et)} {fields} {ts}\n")
    yield "".join(lines)


def _json_chunks(db: MetricsDatabase, since: float | None, until: float | None,
                 model_id: str | None, recent: int = 10) -> Iterator[str]:
    summary = db.get_summary(since, until, model_id, recent=recent)
    head = {"generated_at": time.time(), "since": since, "until": until,
            "model_id": model_id, "summary": summary}
    yield json.dumps(head, default=str)[:-1] + ', "events": ['
    page: list[str] = []
    first = True
    for ev in db.iter_events(since, until, model_id):
        page.append(json.dumps(ev, default=str))
        if len(page) >= 1000:
            yield ("" if first else ",") + ",".join(page)
            first, page = False, []
    if page:
        yield ("" if first else ",") + ",".join(page)
    yield "]}\n"


def iter_export(
    db: MetricsDatabase, format: str, *, prefix: str | None = None,
    since: float | None = None, until: float | None = None, model_id: str | None = None,
    timestamp_ns: int | None = None,
) -> Iterator[str]:
    """See ``MetricsDatabase.iter_export``. Arguments are checked before the first chunk."""
    from tinyllm.store.database import check_range

    check_format(format)
    chosen = check_prefix(prefix)
    check_range(since, until, model_id)
    if timestamp_ns is not None and (isinstance(timestamp_ns, bool) or
                                     not isinstance(timestamp_ns, int) or timestamp_ns < 0):
        raise ValueError(f"timestamp_ns must be an int >= 0 or None, got {timestamp_ns!r}")
    return _chunks(db, format, chosen, since, until, model_id, timestamp_ns)


def _chunks(db: MetricsDatabase, format: str, prefix: str, since: float | None,
            until: float | None, model_id: str | None,
            timestamp_ns: int | None) -> Iterator[str]:
    if format == "json":
        yield from _json_chunks(db, since, until, model_id)
        return
    with db.engine.connect() as conn:
        t = totals(conn, since, until, model_id)
    if format == "prometheus":
        yield from prometheus_lines(t, prefix)
    else:
        if timestamp_ns is None:
            timestamp_ns = int(until * 1e9) if until is not None else time.time_ns()
        yield from influxdb_lines(t, prefix, timestamp_ns)
