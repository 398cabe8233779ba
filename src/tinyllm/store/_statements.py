"""The writer's statements: the row insert and the roll-up upserts, compiled once.

Each is a SQLAlchemy Core construct (the dialect's own ``INSERT .. ON CONFLICT``),
compiled for the engine's dialect and sent through the driver, because SQLAlchemy's
per-row parameter handling cost more than the inserts themselves. How rows are sent
differs by driver, for one reason each:

* **SQLite**: multi-row ``VALUES`` (up to ``_MAX_ROWS`` rows, SQLite's parameter limit
  permitting) in one ``execute``. The sqlite3 module releases the GIL around every
  ``sqlite3_step``; ``executemany`` steps once per ROW, and a thread that gives the GIL
  up that often waits up to the interpreter's switch interval (5 ms) to get it back
  whenever another thread is busy in Python, so the writer crawled while the
  application (or the writer's own preparing thread) ran. One statement per chunk binds
  its parameters in one call and inserts the whole chunk with the GIL released, which
  also lets that work run in parallel with Python code.
* **PostgreSQL** (psycopg 3): ``executemany``, which pipelines the rows to the server.

Example:
    >>> from sqlalchemy import create_engine
    >>> insert = make_insert(create_engine("sqlite://"))
    >>> callable(insert)
    True
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Engine, bindparam

from tinyllm.store import schema
from tinyllm.store.writer import SUMS_FIELDS

__all__ = ["ROW_KEYS", "Sender", "make_insert", "make_meta_claim", "make_upsert"]

#: Sends rows (tuples in a statement's key order) on a connection.
Sender = Callable[[Connection, Sequence[tuple[Any, ...]]], None]

#: ``performance_events`` columns in the writer's row order.
ROW_KEYS = ("model_id", "user_id", "event_type", "duration", "timestamp", "metadata")
_SUMS_KEYS = ("bucket", "event_type", "endpoint", "model_id", *SUMS_FIELDS)
_BINS_KEYS = ("event_type", "bin", "model_id", "bucket", "count")
#: Most rows per multi-row statement: bigger chunks mean fewer GIL round trips, and
#: past ~2,000 rows the gain is gone while the statement text keeps growing.
_MAX_ROWS = 2000

# builder(values) -> statement: ``values`` is None for the one-row form (executemany),
# else a list of {key: bindparam} dicts for a multi-row VALUES.
_Builder = Callable[[list[dict[str, Any]] | None], Any]


def _executemany(build: _Builder, sa_dialect: Any, keys: tuple[str, ...]) -> Sender:
    compiled = build(None).compile(dialect=sa_dialect, column_keys=list(keys))
    sql = str(compiled)
    if compiled.positional:
        order = [keys.index(name) for name in compiled.positiontup or ()]
        if order == list(range(len(keys))):
            def send(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
                conn.exec_driver_sql(sql, list(rows))
        else:
            def send(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
                conn.exec_driver_sql(sql, [tuple(r[i] for i in order) for r in rows])
    else:
        def send(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
            conn.exec_driver_sql(sql, [dict(zip(keys, r, strict=True)) for r in rows])
    return send


def _compile_rows(build: _Builder, sa_dialect: Any, keys: tuple[str, ...], n: int) -> str:
    values: list[dict[str, Any]] = [{k: bindparam(f"{k}_{i}") for k in keys}
                                    for i in range(n)]
    compiled = build(values).compile(dialect=sa_dialect)
    want = [f"{k}_{i}" for i in range(n) for k in keys]
    if not compiled.positional or list(compiled.positiontup or ()) != want:
        raise RuntimeError(f"unexpected parameter order in {str(compiled)[:80]!r}")
    return str(compiled)


def _row_template(build: _Builder, sa_dialect: Any,
                  keys: tuple[str, ...]) -> Callable[[int], str]:
    """``sql(n)``: the statement for ``n`` rows. SQLAlchemy compiles it for one and two
    rows; the rest is the repeated ``(?, ..)`` group, checked against those two (building
    2,000 bind parameters and compiling them took ~0.5 s per statement size)."""
    one = _compile_rows(build, sa_dialect, keys, 1)
    two = _compile_rows(build, sa_dialect, keys, 2)
    group = "(" + ", ".join(["?"] * len(keys)) + ")"
    if one.count(group) == 1:
        head, tail = one.split(group)
        if head + group + ", " + group + tail == two:
            return lambda n: head + ", ".join([group] * n) + tail
    return lambda n: _compile_rows(build, sa_dialect, keys, n)  # another rendering


def _multirow(engine: Engine, build: _Builder, keys: tuple[str, ...]) -> Sender:
    sa_dialect = engine.dialect
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        limit = 999 if raw is None else raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = max(1, min(_MAX_ROWS, limit // len(keys)))
    # Chunk sizes: the largest while rows last, then the remainder by powers of two: at
    # most a dozen distinct statements, each compiled once and cached by sqlite3.
    sizes = sorted({most} | {1 << k for k in range(most.bit_length()) if 1 << k < most},
                   reverse=True)
    statements: dict[int, str] = {}
    template = _row_template(build, sa_dialect, keys)

    def send(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        start, total = 0, len(rows)
        for size in sizes:
            while total - start >= size:
                sql = statements.get(size)
                if sql is None:
                    sql = statements[size] = template(size)
                conn.exec_driver_sql(sql, tuple(chain.from_iterable(rows[start:start + size])))
                start += size

    return send


def _sender(engine: Engine, build: _Builder, keys: tuple[str, ...]) -> Sender:
    if engine.dialect.name == "sqlite":
        return _multirow(engine, build, keys)
    return _executemany(build, engine.dialect, keys)


def make_insert(engine: Engine) -> Sender:
    """``insert(conn, rows)``: rows are tuples in ``ROW_KEYS`` order."""
    table = schema.performance_events

    def build(values: list[dict[str, Any]] | None) -> Any:
        return table.insert() if values is None else table.insert().values(values)

    return _sender(engine, build, ROW_KEYS)


def _dialect_insert(engine: Engine) -> Any:
    # Each dialect's own INSERT .. ON CONFLICT construct (Core, not hand-built SQL).
    from sqlalchemy.dialects import postgresql, sqlite

    return sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert


def make_meta_claim(engine: Engine) -> Any:
    """``INSERT INTO store_meta .. ON CONFLICT DO NOTHING``: claims a key once; the
    result's ``rowcount`` is 1 for the claimer, 0 for everyone after."""
    # preserve_rowcount: SQLAlchemy keeps an INSERT's rowcount only when asked (psycopg
    # reported -1 without it, so on PostgreSQL no claim ever looked won).
    return _dialect_insert(engine)(schema.store_meta).on_conflict_do_nothing() \
        .execution_options(preserve_rowcount=True)


def make_upsert(engine: Engine) -> Callable[[Connection, Any, Any], None]:
    """``upsert(conn, sums, bins)``: adds roll-up increments (``writer.Sums``/``Bins``)."""
    insert = _dialect_insert(engine)
    r, b = schema.performance_rollups, schema.performance_latency_bins

    def build_sums(values: list[dict[str, Any]] | None) -> Any:
        ins = insert(r) if values is None else insert(r).values(values)
        return ins.on_conflict_do_update(
            index_elements=[r.c.bucket, r.c.event_type, r.c.endpoint, r.c.model_id],
            set_={name: r.c[name] + ins.excluded[name] for name in SUMS_FIELDS},
        )

    def build_bins(values: list[dict[str, Any]] | None) -> Any:
        ins = insert(b) if values is None else insert(b).values(values)
        return ins.on_conflict_do_update(
            index_elements=[b.c.bucket, b.c.event_type, b.c.model_id, b.c.bin],
            set_={"count": b.c.count + ins.excluded.count},
        )

    sums_send = _sender(engine, build_sums, _SUMS_KEYS)
    bins_send = _sender(engine, build_bins, _BINS_KEYS)

    def upsert(conn: Connection, sums: Any, bins: Any) -> None:
        # Sorted: two PostgreSQL writers then lock rows in the same order (no deadlock).
        # Within one statement every key is distinct (they are dict keys), as ON CONFLICT
        # DO UPDATE requires.
        if sums:
            sums_send(conn, [
                (k[0], k[1], k[2], k[3], v[0], int(v[1]), v[2], v[3], v[4], v[5], v[6], v[7])
                for k, v in sorted(sums.items())
            ])
        if bins:
            bins_send(conn, sorted([(k[1], k[3], k[2], k[0], v) for k, v in bins.items()]))

    return upsert
