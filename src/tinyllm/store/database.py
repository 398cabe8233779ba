"""``MetricsDatabase``: the performance-event store, on SQLite or PostgreSQL.

Writes never touch the disk on the caller's thread: ``record_event`` validates, then
appends to a bounded queue that a background writer commits in batches (see
``tinyllm.store.writer``). Reads (``get_summary``, ``export``) come from roll-ups kept
in the same transactions as the rows, so they cost the same at a thousand events or a
million.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.db")
    >>> with MetricsDatabase(path) as db:
    ...     db.record_event("diffusion_generate", 1.5, model_id="dream",
    ...                     metadata={"token_count": 25})
    ...     db.flush()
    ...     db.get_summary()["endpoints"]["generate"]["requests"]
    True
    1
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from time import time as _now
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from tinyllm.store import _wal, schema
from tinyllm.store._checks import check_range, check_text
from tinyllm.store._codec import parse_metadata
from tinyllm.store._statements import make_insert, make_meta_claim, make_upsert
from tinyllm.store._wal import WalCheckpointer
from tinyllm.store.writer import Bins, Event, Sums, Writer, fold_events

__all__ = ["DEFAULT_TARGET", "PG_CONNECT_TIMEOUT", "MetricsDatabase"]

log = logging.getLogger("tinyllm.store")

#: The performance-event store's documented default: "The metrics database is stored in
#: ./metrics.db by default".
DEFAULT_TARGET = "./metrics.db"
_PAGE = 2000  # rows per round trip when reading raw rows back (flat memory)
#: Seconds libpq may take to connect to PostgreSQL (its default is to wait forever);
#: a ``connect_timeout`` in the URL overrides it.
PG_CONNECT_TIMEOUT = 5
_LOCK_KEY = 0x746C6C6D  # PostgreSQL advisory lock serialising concurrent schema creation
#: ``store_meta`` key claimed once the roll-ups hold the spend columns (and their sums).
_SPEND_KEY = "rollups_spend"
_open: weakref.WeakSet[MetricsDatabase] = weakref.WeakSet()


def _close_all() -> None:
    for db in list(_open):
        db.close(timeout=10)


atexit.register(_close_all)


def _to_url(target: str | os.PathLike[str]) -> str:
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(f"target must be a path or a URL string, got {type(target).__name__}")
    if not target.strip():
        raise ValueError("target must be a SQLite path or a postgresql:// URL, got ''")
    if "://" not in target:
        if target == ":memory:":
            raise ValueError("target ':memory:' is not supported (the writer and the readers "
                             "use separate connections); use a file path in a temp dir")
        return f"sqlite:///{os.path.abspath(target)}"
    scheme = target.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + target.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        return target
    raise ValueError(f"target must be a SQLite path, sqlite:///path or a postgresql:// URL, "
                     f"got scheme {scheme!r}")


def _set_wal(cur: Any, attempts: int = 100) -> None:
    """``journal_mode=WAL``, retried: processes opening a new database at once race to
    switch it, and SQLite answers the loser "database is locked" at once, without
    waiting on the busy timeout."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    # WAL: readers never block the writer; NORMAL: a commit survives a process crash
    # (SIGKILL), and costs no fsync per batch (power loss may lose the last batches).
    _set_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints run on a thread of their own (store/_wal.py), not inside our commits,
    # except past a 64 MB WAL, where only the committing connection can make the WAL
    # start over (_wal explains).
    cur.execute(f"PRAGMA wal_autocheckpoint={_wal.AUTOCHECKPOINT_PAGES:d}")
    # When the WAL starts over, its file is cut back to 64 MB (it keeps its largest
    # size otherwise).
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


def _as_events(rows: Any) -> Iterator[Event]:
    """Rows of (id, event_type, duration, model_id, timestamp, metadata text) as events."""
    for _id, event_type, duration, model_id, ts, md in rows:
        yield (event_type, float(duration), model_id, "", float(ts), parse_metadata(md))


def _fold_rows(conn: Connection, *where: Any) -> tuple[Sums, Bins, int]:
    """The roll-up increments of the raw rows matching ``where`` (all rows without it),
    read a page at a time by id (flat memory), and how many rows they were."""
    e = schema.performance_events
    sums: Sums = {}
    bins: Bins = {}
    endpoints: dict[str, str] = {}
    last, seen = -1, 0
    while True:
        rows = conn.execute(
            select(e.c.id, e.c.event_type, e.c.duration, e.c.model_id, e.c.timestamp,
                   e.c.metadata).where(e.c.id > last, *where).order_by(e.c.id).limit(_PAGE)
        ).all()
        if not rows:
            return sums, bins, seen
        fold_events(sums, bins, endpoints, _as_events(rows))
        last = rows[-1][0]
        seen += len(rows)


def _add_spend_columns(conn: Connection) -> list[str]:
    """Add the ``performance_rollups`` spend columns a store made before them lacks
    (``ALTER TABLE .. ADD COLUMN .. DEFAULT 0 NOT NULL``); returns the ones added."""
    r = schema.performance_rollups
    have = {c["name"] for c in inspect(conn).get_columns(r.name)}
    table = conn.dialect.identifier_preparer.format_table(r)
    added = []
    for name in schema.SPEND_COLUMNS:
        if name not in have:
            column = CreateColumn(r.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column}")
            added.append(name)
    return added


_INF = math.inf
_BIG = 2**1000  # ints at or past this do not fit a float


def _check_number(name: str, value: Any) -> None:
    from tinyllm._validation import check_amount

    check_amount(name, value)
    if value >= _BIG:
        raise ValueError(f"{name} must be a finite number >= 0 that fits a float, got "
                         f"{value!r}")


class MetricsDatabase:
    """The performance-event store (the diffusion service's ``MetricsDatabase`` API).

    Args:
        target: a SQLite file path (default ``./metrics.db``), ``sqlite:///path``, or a
            ``postgresql://user@host/db`` URL (driven by psycopg 3).
        queue_size: events held in memory (queued, or taken by the writer and not yet
            committed) before ``record_event`` starts dropping (counted as
            ``reason="queue_full"``). The default, 50,000, holds ~20 MB of typical
            events; under sustained overload the process grows < 50 MB
            (tests/reliability/test_store_overload.py; 100,000 grew 53-55 MB).
        batch_size: most events prepared (redacted, encoded, folded) and committed
            together. A writer that falls behind commits several batches (up to 8) in
            one transaction. Bigger batches upsert each roll-up row once for more
            events: 8,192 ingests 10-20 % faster than 2,000 (docs/performance.md). A
            batch never waits to fill: the writer takes what is queued.
        flush_interval: how long an event may wait before the writer wakes, seconds.
        collector: where drops are counted (default: the process-wide collector).

    Example:
        >>> import tempfile, os
        >>> db = MetricsDatabase(os.path.join(tempfile.mkdtemp(), "m.db"))
        >>> db.record_event("diffusion_infill", 2.0, model_id="dream")
        >>> db.close()
    """

    def __init__(
        self,
        target: str | os.PathLike[str] = DEFAULT_TARGET,
        *,
        queue_size: int = 50_000,
        batch_size: int = 8192,
        flush_interval: float = 0.1,
        collector: Any = None,
    ) -> None:
        for name, value, low in (("queue_size", queue_size, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, int | float) or \
                not 0 < flush_interval <= 60:
            raise ValueError(f"flush_interval must be seconds in (0, 60], got {flush_interval!r}")
        url = _to_url(target)
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ValueError(f"target is not a valid database URL: {exc}") from None
        self.url = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": 10})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # libpq waits forever by default for a server that accepts the connection
            # and never answers (frozen, half-dead host): the constructor would hang the
            # host, and the writer would stop draining. A URL's own connect_timeout wins.
            args = {} if "connect_timeout" in parsed.query else {
                "connect_timeout": PG_CONNECT_TIMEOUT}
            engine = create_engine(parsed, pool_pre_ping=True, connect_args=args)
        self.engine: Engine = engine
        self.dialect: str = engine.dialect.name
        self._collector = collector
        self._dropped: dict[str, int] = {}
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._upsert = make_upsert(engine)
        self._init_schema()
        insert = make_insert(engine)
        self._queue: deque[Any] = deque()
        self._max = queue_size
        self._wake = threading.Event()
        self._wake_at = batch_size
        self._closed = False
        # SQLite: WAL checkpoints off the commit path (the connections turn the
        # automatic ones off in _sqlite_pragmas; see _wal).
        self._wal = WalCheckpointer(engine) if self.dialect == "sqlite" else None
        self._writer = Writer(
            engine, self._queue, self._wake, batch_size=batch_size,
            interval=float(flush_interval), on_drop=self._drop, upsert=self._upsert,
            insert=insert, after_commit=None if self._wal is None else self._wal.poke,
        )
        _open.add(self)

    # -- schema --------------------------------------------------------------------
    def _init_schema(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            for table in schema.metadata_obj.sorted_tables:
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in sorted(table.indexes, key=lambda i: str(i.name)):
                    conn.execute(CreateIndex(index, if_not_exists=True))
        with self.engine.begin() as conn:
            # The first opener claims the "rollups" key (a write: concurrent openers wait
            # on it) and folds any rows already there, e.g. one the original table created.
            claim = make_meta_claim(self.engine)
            claimed = conn.execute(claim, {"key": "rollups", "value": "1"}).rowcount == 1
            # Likewise "rollups_spend": a store whose roll-ups were made before the spend
            # columns gains them here, in the same transaction, and its roll-up sums are
            # rebuilt from the raw rows (whose metadata holds each event's cost).
            upgraded = conn.execute(claim, {"key": _SPEND_KEY, "value": "1"}).rowcount == 1
            if upgraded:
                _add_spend_columns(conn)
            if claimed:
                self._fold_existing(conn)
            elif upgraded:
                started = time.monotonic()
                conn.execute(delete(schema.performance_rollups))
                sums, _bins, seen = _fold_rows(conn)
                self._upsert(conn, sums, {})
                log.info("metrics store %s: roll-ups gained cost and SLO columns, rebuilt "
                         "from %d event(s) in %.1f s", self.url, seen,
                         time.monotonic() - started)

    def _fold_existing(self, conn: Connection) -> int:
        sums, bins, seen = _fold_rows(conn)
        self._upsert(conn, sums, bins)
        return seen

    def rebuild_rollups(self) -> int:
        """Recompute the roll-ups from the raw rows; returns the rows folded.

        Needed only when rows reached ``performance_events`` some other way than
        ``record_event`` (another program, a restore, a hand edit, or a process of a
        version before the spend columns writing to the store after it was upgraded).
        """
        self.flush()
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            conn.execute(delete(schema.performance_rollups))
            conn.execute(delete(schema.performance_latency_bins))
            return self._fold_existing(conn)

    # -- writing -------------------------------------------------------------------
    def record_event(
        self,
        event_type: str,
        duration: float,
        *,
        model_id: str,
        user_id: str = "anonymous",
        timestamp: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Queue one performance event; it is durable after the next ``flush()``.

        Never blocks on the database. Raises TypeError/ValueError for bad arguments;
        a full queue or a closed store drops the event and counts it.

        Example:
            >>> db.record_event("diffusion_generate_stream", 0.8, model_id="dream",
            ...                 metadata={"token_count": 12, "success": True})  # doctest: +SKIP
        """
        # Every check is a type identity test first: this runs once per request, and the
        # slow paths (isinstance, the shared checks) only run to word an error.
        if type(event_type) is not str or not event_type:
            check_text("event_type", event_type)
        if type(model_id) is not str or not model_id:
            check_text("model_id", model_id)
        if type(user_id) is not str:
            check_text("user_id", user_id, empty_ok=True)
        kind = type(duration)
        if kind is not float:
            if not (kind is int and 0 <= duration < _BIG):
                _check_number("duration", duration)
            duration = float(duration)
        elif not 0.0 <= duration < _INF:
            _check_number("duration", duration)
        if timestamp is None:
            timestamp = _now()
        else:
            kind = type(timestamp)
            if kind is not float:
                if not (kind is int and 0 <= timestamp < _BIG):
                    _check_number("timestamp", timestamp)
                timestamp = float(timestamp)
            elif not 0.0 <= timestamp < _INF:
                _check_number("timestamp", timestamp)
        if metadata is not None:
            if type(metadata) is not dict and not isinstance(metadata, dict):
                raise TypeError(f"metadata must be a dict or None, got "
                                f"{type(metadata).__name__}")
            metadata = metadata.copy()  # the caller may reuse its dict; redaction is later
        q = self._queue
        w = self._writer
        # Queued plus taken by the writer and not yet committed: queue_size bounds every
        # event the store holds. Read in this order the sum never undercounts (see
        # Writer.taken).
        if len(q) - w.released + w.taken >= self._max:  # _max is -1 once closed
            self._drop("closed" if self._closed else "queue_full", 1, None)
            return
        q.append((event_type, duration, model_id, user_id, timestamp, metadata))
        # The writer sleeps only on an empty queue, and the queue grows one event at a
        # time, so it passes exactly batch_size while the writer sleeps: wake it there.
        if len(q) == self._wake_at:
            self._wake.set()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every event recorded before this call is committed (or dropped and
        counted); False when ``timeout`` ran out first."""
        return self._writer.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer and release the connections; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._max = -1  # record_event's one bound check now drops as "closed"
        self._writer.close(timeout)
        if self._wal is not None:
            self._wal.close(timeout)
        self.engine.dispose()
        _open.discard(self)

    def __enter__(self) -> MetricsDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> dict[str, int]:
        """Events lost so far, by reason (also in ``<ns>_store_events_dropped_total``)."""
        return dict(self._dropped)

    @property
    def pending(self) -> int:
        """Events recorded and not yet committed (or dropped): queued, or in the writer's
        batches. Read while the writer takes a batch, it may count that batch twice."""
        w = self._writer
        return len(self._queue) - w.released + w.taken

    def _drop(self, reason: str, count: int, exc: BaseException | None) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + count
            first = reason not in self._logged
            self._logged.add(reason)
        try:
            collector = self._collector
            if collector is None:
                from tinyllm.metrics.collector import get_metrics_collector

                collector = get_metrics_collector()
            if count:
                collector.increment_store_events_dropped(reason, count)
        except Exception:  # counting must not be what breaks the host either
            pass
        if first:  # once per reason: a dead database would otherwise flood the log
            log.error("metrics store %s: dropped %d event(s) (%s)%s; further drops of this "
                      "kind are only counted", self.url, count, reason,
                      f": {exc}" if exc is not None else "")

    # -- reading -------------------------------------------------------------------
    def get_summary(
        self,
        since: float | None = None,
        until: float | None = None,
        model_id: str | None = None,
        *,
        recent: int = 10,
    ) -> dict[str, Any]:
        """The summary over ``[since, until)`` (epoch seconds), optionally of one model.

        Keys: ``overall`` (total_requests, success_rate in percent, average_latency),
        ``endpoints`` (requests, errors, error_rate in percent), ``average_latency_by_
        event_type``, ``tokens_by_event_type``, ``latency_quantiles_by_event_type``
        (p50/p95/p99), ``cost`` (total_usd, unpriced_requests, by_model: requests,
        cost_usd, unpriced_requests), ``slo`` (requests judged, met, goodput_ratio met /
        judged or None, by_model the same), ``recent_events`` (newest first, ``recent``
        of them).

        Example:
            >>> db.get_summary()["overall"]  # doctest: +SKIP
            {'total_requests': 15, 'success_rate': 80.0, 'average_latency': 1.666}
        """
        from tinyllm.store.summary import build_summary

        check_range(since, until, model_id)
        if isinstance(recent, bool) or not isinstance(recent, int) or not 0 <= recent <= 1000:
            raise ValueError(f"recent must be an int from 0 to 1000, got {recent!r}")
        with self.engine.connect() as conn:
            return build_summary(conn, since, until, model_id, recent)

    def iter_events(
        self, since: float | None = None, until: float | None = None,
        model_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The raw events in ``[since, until)``, oldest id first, read a page at a time.

        Example:
            >>> [e["event_type"] for e in db.iter_events()]  # doctest: +SKIP
            ['diffusion_generate']
        """
        check_range(since, until, model_id)
        e = schema.performance_events
        last = -1
        while True:
            query = select(e).where(e.c.id > last).order_by(e.c.id).limit(_PAGE)
            if since is not None:
                query = query.where(e.c.timestamp >= since)
            if until is not None:
                query = query.where(e.c.timestamp < until)
            if model_id is not None:
                query = query.where(e.c.model_id == model_id)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield {"id": row.id, "model_id": row.model_id, "user_id": row.user_id,
                       "event_type": row.event_type, "duration": row.duration,
                       "timestamp": row.timestamp, "metadata": parse_metadata(row.metadata)}
            last = rows[-1].id

    def export(
        self, format: str = "json", *, prefix: str | None = None, since: float | None = None,
        until: float | None = None, model_id: str | None = None,
        timestamp_ns: int | None = None,
    ) -> str:
        """The whole export as one string; see ``iter_export`` for large stores.

        Example:
            >>> print(db.export("prometheus", prefix="diffusion_llm"))  # doctest: +SKIP
        """
        return "".join(self.iter_export(format, prefix=prefix, since=since, until=until,
                                        model_id=model_id, timestamp_ns=timestamp_ns))

    def iter_export(
        self, format: str = "json", *, prefix: str | None = None, since: float | None = None,
        until: float | None = None, model_id: str | None = None,
        timestamp_ns: int | None = None,
    ) -> Iterator[str]:
        """The export in ``format`` (``json``, ``prometheus``, ``influxdb``) as chunks.

        ``prefix`` names the Prometheus families and the InfluxDB measurement (default
        ``tinyllm_store``, clear of the live collector's names; the diffusion service uses
        ``diffusion_llm``). ``timestamp_ns`` stamps InfluxDB points (default: ``until``,
        else now). Memory stays flat: the JSON export reads 1,000 events per query, by
        id range, and yields them as one chunk, the stored metadata JSON spliced in as
        it is (checked, not parsed and re-encoded).
        """
        from tinyllm.store.export import iter_export

        return iter_export(self, format, prefix=prefix, since=since, until=until,
                           model_id=model_id, timestamp_ns=timestamp_ns)

    @property
    def writer_alive(self) -> bool:
        """Whether the background writer thread is running (False after ``close()``)."""
        return self._writer.alive

    def prune(self, older_than_seconds: float) -> int:
        """Delete the events older than ``older_than_seconds`` before now; returns how many.

        Roll-up hours lying wholly before the cutoff go too; the hour the cutoff falls
        in is rebuilt from the rows that remain, so the summary and the exports agree
        with the raw rows afterwards. Events still queued are flushed first.

        Example:
            >>> db.prune(30 * 86400)  # doctest: +SKIP
            1250
        """
        value = older_than_seconds
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not 0 <= value < math.inf:
            raise ValueError(f"older_than_seconds must be a finite number >= 0, got {value!r}")
        self.flush()
        cutoff = _now() - float(value)
        e, r, b = (schema.performance_events, schema.performance_rollups,
                   schema.performance_latency_bins)
        rg, hg = schema.ROLLUP_SECONDS, schema.HIST_SECONDS
        # The buckets holding the cutoff: deleted below with the older ones, then refolded
        # from the rows at or after the cutoff that fall in them.
        end = max((cutoff // rg) * rg + rg, (cutoff // hg) * hg + hg)
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            removed = conn.execute(delete(e).where(e.c.timestamp < cutoff)).rowcount
            conn.execute(delete(r).where(r.c.bucket < cutoff))
            conn.execute(delete(b).where(b.c.bucket < cutoff))
            sums, bins, _ = _fold_rows(conn, e.c.timestamp >= cutoff, e.c.timestamp < end)
            self._upsert(conn, {k: v for k, v in sums.items() if k[0] < cutoff},
                         {k: v for k, v in bins.items() if k[0] < cutoff})
        return int(removed or 0)

    def __repr__(self) -> str:
        return f"MetricsDatabase({self.url!r})"
