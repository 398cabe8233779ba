"""The store's tables, as SQLAlchemy Core metadata.

``performance_events`` is the performance-event store's original table, column for
column: a database created by its original ``CREATE TABLE`` opens and reads as is. The
rest is ours and derived from it, so it can always be rebuilt
(``MetricsDatabase.rebuild_rollups``):

* ``performance_rollups``: per hour and (event_type, endpoint, model_id): requests,
  errors, duration sum, tokens, and spend: the cost in USD of the priced requests,
  how many had no price (``unpriced``), how many were judged against an SLO
  (``slo_judged``) and met it (``slo_met``). The summary and the exports read these,
  not the raw rows, so they cost the same over a thousand events or a million. The
  spend columns came later (``SPEND_COLUMNS``): a store made before them gains them
  when it opens (``MetricsDatabase``), with its roll-ups rebuilt from the raw rows.
* ``performance_latency_bins``: per hour and (event_type, model_id): a fixed log-scale
  latency histogram (8 bins per doubling) for p50/p95/p99.
* ``store_meta``: key/value; ``rollups`` marks that the roll-ups cover the raw rows.

The original table says ``REAL`` for ``duration`` and ``timestamp``. SQLite's REAL is
an 8-byte float; PostgreSQL's REAL is a 4-byte float, which cannot even hold an epoch
timestamp to the minute, so on PostgreSQL those two columns are ``DOUBLE PRECISION``.

Example:
    >>> from tinyllm.store.schema import performance_events
    >>> [c.name for c in performance_events.columns]
    ['id', 'model_id', 'user_id', 'event_type', 'duration', 'timestamp', 'metadata']
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import (
    REAL,
    Column,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import DOUBLE_PRECISION
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeEngine

__all__ = [
    "BINS_PER_DOUBLING",
    "BIN_MAX",
    "BIN_MIN",
    "BIN_NONE",
    "HIST_SECONDS",
    "ROLLUP_SECONDS",
    "SPEND_COLUMNS",
    "bin_value",
    "latency_bin",
    "metadata_obj",
    "performance_events",
    "performance_latency_bins",
    "performance_rollups",
    "store_meta",
]

#: Roll-up granularity of request/error/latency/token sums, seconds. An hour keeps a
#: week of 12 keys at ~2k rows (a minute made it 120k rows: a 170 ms summary) and a
#: batch of spread-out events at a few upserts; range edges are read from raw rows.
ROLLUP_SECONDS = 3600
#: Granularity of the latency histograms, seconds (a histogram is ~20-50 rows per key
#: and bucket, where a sum is one row).
HIST_SECONDS = 3600
#: Histogram resolution: bin ``b`` holds durations in ``[2**(b/8), 2**((b+1)/8))``, so a
#: quantile read as the bin's geometric middle is within 2**(1/16) - 1 = 4.4 %.
BINS_PER_DOUBLING = 8
#: The lowest and highest bins: shorter or longer durations are counted there (30 ns, 9 h).
BIN_MIN, BIN_MAX = -25 * BINS_PER_DOUBLING, 15 * BINS_PER_DOUBLING
#: The bin of a zero duration.
BIN_NONE = BIN_MIN - 1

# A float column: REAL as the original table says, 8-byte on PostgreSQL (see the module docstring).
_Real: TypeEngine[float] = REAL().with_variant(DOUBLE_PRECISION(), "postgresql")

metadata_obj = MetaData()

performance_events = Table(
    "performance_events",
    metadata_obj,
    Column("id", Integer, Identity(), primary_key=True),
    Column("model_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("duration", _Real, nullable=False),
    Column("timestamp", _Real, nullable=False),
    Column("metadata", Text),
    sqlite_autoincrement=True,
)
# Time ranges (summary edges, recent events) and the export's ordering read by time.
Index("ix_performance_events_timestamp", performance_events.c.timestamp)

performance_rollups = Table(
    "performance_rollups",
    metadata_obj,
    Column("bucket", Integer, primary_key=True),  # epoch seconds, a multiple of 3600
    Column("event_type", Text, primary_key=True),
    Column("endpoint", Text, primary_key=True),
    Column("model_id", Text, primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("duration_sum", _Real, nullable=False),
    Column("tokens", Integer, nullable=False),
    # Spend (added after the table first shipped, hence the defaults: ALTER TABLE ..
    # ADD COLUMN .. NOT NULL needs one, and a new table is made the same way).
    Column("cost_usd", _Real, nullable=False, server_default=text("0")),
    Column("unpriced", Integer, nullable=False, server_default=text("0")),
    Column("slo_judged", Integer, nullable=False, server_default=text("0")),
    Column("slo_met", Integer, nullable=False, server_default=text("0")),
    sqlite_with_rowid=False,
)
#: The ``performance_rollups`` columns added after it first shipped, in table order.
SPEND_COLUMNS = ("cost_usd", "unpriced", "slo_judged", "slo_met")

performance_latency_bins = Table(
    "performance_latency_bins",
    metadata_obj,
    Column("event_type", Text, primary_key=True),
    Column("bin", Integer, primary_key=True),
    Column("model_id", Text, primary_key=True),
    Column("bucket", Integer, primary_key=True),  # epoch seconds, a multiple of 3600
    Column("count", Integer, nullable=False),
    sqlite_with_rowid=False,
)

store_meta = Table(
    "store_meta",
    metadata_obj,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)


@compiles(CreateColumn, "sqlite")
def _seed_id_column(element: CreateColumn, compiler: Any, **kw: Any) -> str:
    # SQLite: the original table declares "id INTEGER PRIMARY KEY AUTOINCREMENT" with no
    # NOT NULL (the rowid is never NULL anyway); render it so, so PRAGMA table_info matches
    # the original's flag for flag. PostgreSQL keeps the NOT NULL an identity column requires.
    text: str = compiler.visit_create_column(element, **kw)
    column = element.element
    if column.table is performance_events and column.name == "id":
        text = text.replace(" NOT NULL", "")
    return text


_log2 = math.log2


def latency_bin(duration: float) -> int:
    """The histogram bin of ``duration`` (seconds, finite, >= 0).

    Example:
        >>> latency_bin(1.0), latency_bin(2.0), latency_bin(0.0) == BIN_NONE
        (0, 8, True)
    """
    if duration <= 0.0:
        return BIN_NONE
    b = math.floor(_log2(duration) * BINS_PER_DOUBLING)
    return BIN_MIN if b < BIN_MIN else BIN_MAX if b > BIN_MAX else b


def bin_value(b: int) -> float:
    """The value a quantile falling in bin ``b`` is reported as: the bin's geometric middle.

    Example:
        >>> round(bin_value(0), 4)
        1.0443
    """
    if b <= BIN_NONE:
        return 0.0
    return float(2.0 ** ((b + 0.5) / BINS_PER_DOUBLING))
