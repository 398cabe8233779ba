"""The store's exports, as the diffusion service's endpoints serve them: ``json``,
``prometheus`` (text format 0.0.4), ``influxdb`` (line protocol), each an iterator of
string chunks.

With ``prefix="diffusion_llm"`` the Prometheus output starts with exactly the diffusion
service's four families (requests_total, errors_total, latency_seconds, tokens_total:
HELP and TYPE lines, labels, values, a blank line between families); after them comes
``<prefix>_request_duration_seconds``, a summary with p50/p95/p99 per event type, and
the spend per model: ``<prefix>_cost_usd_total``, ``<prefix>_unpriced_requests_total``
and ``<prefix>_slo_requests_total`` (``outcome`` met/missed), labelled ``model_id``. The
InfluxDB output is the diffusion service's ``requests``, ``latency`` and ``tokens``
points, then ``errors`` (per endpoint), ``latency_quantiles`` (p50/p95/p99 per event
type) and ``cost`` (per ``model_id``: ``cost_usd``, ``unpriced_requests``, ``requests``,
and ``slo_requests``/``slo_met`` when any request was judged). The JSON export's
summary holds the same spend (``cost``, ``slo``).

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
from json.encoder import encode_basestring_ascii as _quote
from math import isfinite
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, literal, select

from tinyllm.metrics.families import OTHER
from tinyllm.store import schema
from tinyllm.store._checks import check_range
from tinyllm.store.summary import QUANTILES, Totals, quantile, totals
from tinyllm.store.writer import parse_metadata

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


#: The most models an export names; the rest are summed under ``other``, as the live
#: metrics' cardinality guard folds them (a scan of made-up model names must not turn a
#: scrape of the export into 20,000 series).
MAX_EXPORTED_MODELS = 1000


def _models(t: Totals) -> list[tuple[str, list[Any]]]:
    """Spend per model, sorted: the ``MAX_EXPORTED_MODELS`` with the most requests (ties
    by name), the rest summed as ``other``."""
    ranked = sorted(t.models.items(), key=lambda item: (-item[1][0], item[0]))
    kept, rest = dict(ranked[:MAX_EXPORTED_MODELS]), ranked[MAX_EXPORTED_MODELS:]
    if rest:
        other = kept.setdefault(OTHER, [0, 0.0, 0, 0, 0])
        for _model, row in rest:
            for i, value in enumerate(row):
                other[i] += value
    return sorted(kept.items())


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
    # Beyond the diffusion service's export: quantiles from the log-scale histograms, as a
    # summary family.
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
    # Spend per model (the live collector's cost_usd_total / unpriced_requests_total /
    # slo_requests_total{objective="all"}, labelled by the store's model_id).
    models = _models(t)
    yield "\n" + family("cost_usd_total", "Spend in USD of the requests with a known price",
                        "counter", "model_id", {m: _num(c) for m, (_n, c, *_r) in models})
    yield "\n" + family("unpriced_requests_total", "Requests with no known price (cost "
                        "unknown, not 0)", "counter", "model_id",
                        {m: u for m, (_n, _c, u, *_r) in models})
    name = f"{prefix}_slo_requests_total"
    lines = [f"\n# HELP {name} Requests judged against their model's SLO, by outcome (met: "
             f"every objective)\n# TYPE {name} counter\n"]
    for m, (_n, _c, _u, judged, met) in models:
        if judged:
            lab = _label(m)
            lines.append(f'{name}{{model_id="{lab}",outcome="met"}} {met}\n')
            lines.append(f'{name}{{model_id="{lab}",outcome="missed"}} {judged - met}\n')
    yield "".join(lines)


# Line protocol (InfluxDB 1.x, checked against influxd): in a tag value a comma, an
# equals sign or a space is escaped with a backslash, and a backslash is taken as it
# is (escaping it too would double it on the way back). Three things cannot be written
# at all, and a point holding one would make InfluxDB refuse the whole write: a newline
# (it ends the line), a trailing backslash (it would escape the delimiter after it) and
# an empty value ("missing tag value"). A newline becomes U+2424 (SYMBOL FOR NEWLINE),
# a trailing backslash U+FF3C (FULLWIDTH REVERSE SOLIDUS); an empty value leaves the
# tag out, which InfluxDB reads back as the empty string.
_TAG_ESCAPES = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\u2424"})


def _tag(key: str, value: str) -> str:
    """``,key=value`` escaped for a tag, or nothing for an empty value."""
    if not value:
        return ""
    if value[-1] == "\\":
        value = value[:-1] + "\uff3c"
    return f",{key}={value.translate(_TAG_ESCAPES)}"


def influxdb_lines(t: Totals, measurement: str, timestamp_ns: int) -> Iterator[str]:
    """The InfluxDB line protocol of ``t``, every point stamped ``timestamp_ns``."""
    eps, types = _by_endpoint(t), _by_type(t)
    m, ts = measurement, timestamp_ns
    yield "".join(f"{m},type=requests{_tag('endpoint', ep)} count={n} {ts}\n"
                  for ep, (n, _e) in eps.items())
    yield "".join(f"{m},type=latency{_tag('event_type', et)} value={_num(d / n)} {ts}\n"
                  for et, (n, d, _t) in types.items() if n)
    yield "".join(f"{m},type=tokens{_tag('event_type', et)} count={tok} {ts}\n"
                  for et, (_n, _d, tok) in types.items())
    # Beyond the diffusion service's export.
    yield "".join(f"{m},type=errors{_tag('endpoint', ep)} count={e} {ts}\n"
                  for ep, (_n, e) in eps.items())
    lines = []
    for et in types:
        h = t.hist.get(et)
        if h:
            fields = ",".join(f"p{round(q * 100)}={_num(quantile(h, q))}" for q in QUANTILES)
            lines.append(f"{m},type=latency_quantiles{_tag('event_type', et)} {fields} {ts}\n")
    yield "".join(lines)
    # Spend per model: cost_usd is always a float field (repr of a float).
    lines = []
    for model, (n, cost, unpriced, judged, met) in _models(t):
        fields = f"cost_usd={_num(cost)},unpriced_requests={unpriced},requests={n}"
        if judged:
            fields += f",slo_requests={judged},slo_met={met}"
        lines.append(f"{m},type=cost{_tag('model_id', model)} {fields} {ts}\n")
    yield "".join(lines)


#: Rows per page of the JSON export: each page is one query and one output chunk.
_EXPORT_PAGE = 1000
# One event of the JSON export, as json.dumps writes the same dict (key order, spacing).
_EVENT = ('{"id": %d, "model_id": %s, "user_id": %s, "event_type": %s, "duration": %s, '
          '"timestamp": %s, "metadata": %s}')


def _event_pages(db: MetricsDatabase, conn: Any, since: float | None, until: float | None,
                 model_id: str | None) -> Iterator[list[Any]]:
    """Pages of (id, model_id, user_id, event_type, duration, timestamp, metadata text or
    "null", 1 if that text is known valid JSON) in id order, read by id ranges: flat
    memory, and each page is a rowid range scan (never a sort of the whole selection)."""
    e = schema.performance_events
    lo = hi = None
    if since is not None or until is not None:
        # The ids that bound the time range, from the timestamp index; the pages then walk
        # ids between them (rows arrive in about time order, so this is the range).
        bounds = select(func.min(e.c.id), func.max(e.c.id))
        bounds = _time_filter(bounds, since, until)
        lo, hi = conn.execute(bounds).one()
        if lo is None:
            return
    stored = func.coalesce(e.c.metadata, literal("null"))
    if db.dialect == "sqlite":
        # SQLite checks the stored JSON in C (1 = valid; NULL metadata counts as valid,
        # read as "null"); anything else is checked in Python (every row elsewhere).
        valid: Any = func.coalesce(func.json_valid(e.c.metadata), 1)
    else:
        valid = literal(None)
    columns = (e.c.id, e.c.model_id, e.c.user_id, e.c.event_type, e.c.duration,
               e.c.timestamp, stored, valid)
    last = -1 if lo is None else lo - 1
    while True:
        query = select(*columns).where(e.c.id > last).order_by(e.c.id).limit(_EXPORT_PAGE)
        if hi is not None:
            query = query.where(e.c.id <= hi)
        query = _time_filter(query, since, until)
        if model_id is not None:
            query = query.where(e.c.model_id == model_id)
        rows = conn.execute(query).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _time_filter(query: Any, since: float | None, until: float | None) -> Any:
    e = schema.performance_events
    if since is not None:
        query = query.where(e.c.timestamp >= since)
    if until is not None:
        query = query.where(e.c.timestamp < until)
    return query


def _metadata_json(stored: str, valid: Any) -> str:
    if valid == 1:
        return stored
    try:
        json.loads(stored)
    except ValueError:
        return "null"  # unparsable text reads as no metadata, as in iter_events
    return stored  # valid to Python's json (NaN included, as json.dumps would write it)


def _slow_event(row: Any) -> str:
    return json.dumps({"id": row[0], "model_id": row[1], "user_id": row[2],
                       "event_type": row[3], "duration": row[4], "timestamp": row[5],
                       "metadata": parse_metadata(row[6])}, default=str)


def _page_json(rows: list[Any]) -> str:
    """``rows`` as comma-separated JSON events, formatted in C-level ``map``s: no Python
    frame per row when every value is of the expected type (the common case)."""
    ids, models, users, types, durations, stamps, metadata, valid = zip(*rows, strict=True)
    if not all(valid):
        metadata = tuple(map(_metadata_json, metadata, valid))
    try:
        if not (all(map(isfinite, durations)) and all(map(isfinite, stamps))):
            raise TypeError("a non-finite float")  # json.dumps spells those its own way
        texts = map(_EVENT.__mod__, zip(
            ids, map(_quote, models), map(_quote, users), map(_quote, types),
            map(float.__repr__, durations), map(float.__repr__, stamps), metadata,
            strict=True))
        return ",".join(texts)
    except TypeError:  # a value of another type (a hand-written row): one by one
        return ",".join(map(_slow_event, rows))


def _json_chunks(db: MetricsDatabase, since: float | None, until: float | None,
                 model_id: str | None, recent: int = 10) -> Iterator[str]:
    summary = db.get_summary(since, until, model_id, recent=recent)
    head = {"generated_at": time.time(), "since": since, "until": until,
            "model_id": model_id, "summary": summary}
    yield json.dumps(head, default=str)[:-1] + ', "events": ['
    first = True
    with db.engine.connect() as conn:
        for rows in _event_pages(db, conn, since, until, model_id):
            chunk = _page_json(rows)
            yield chunk if first else "," + chunk
            first = False
    yield "]}\n"


def iter_export(
    db: MetricsDatabase, format: str, *, prefix: str | None = None,
    since: float | None = None, until: float | None = None, model_id: str | None = None,
    timestamp_ns: int | None = None,
) -> Iterator[str]:
    """See ``MetricsDatabase.iter_export``. Arguments are checked before the first chunk."""
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
