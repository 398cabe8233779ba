"""The background writer: a bounded in-memory queue drained in batched transactions.

The caller's side (``MetricsDatabase.record_event``) is a length check and a
``deque.append`` — both atomic under the GIL, so no lock of ours. One daemon thread
pops up to ``batch_size`` events, redacts and serialises their metadata, folds them into
the roll-ups, and commits the raw rows and the roll-up increments in ONE transaction:
the roll-ups can never disagree with the rows after a crash.

A ``flush()`` puts a marker on the queue; the writer sets it once every event before
it is committed. A failed transaction (locked, read-only, disk full, server gone) is
retried once, then its events are dropped, counted by reason and logged once per
reason; the thread never dies.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tinyllm.store import schema
from tinyllm.store.rules import classify, derive_endpoint

__all__ = ["Bins", "Event", "Sums", "Writer", "drop_reason", "fold", "parse_metadata"]

log = logging.getLogger("tinyllm.store")

#: (event_type, duration, model_id, user_id, timestamp, metadata or None)
Event = tuple[str, float, str, str, float, "dict[str, Any] | None"]
Redactor = Callable[[Any], Any]
Sums = dict[tuple[int, str, str, str], list[Any]]
Bins = dict[tuple[int, str, str, int], int]

_RETRYABLE = ("db_locked", "db_unavailable")


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def drop_reason(exc: BaseException) -> str:
    """The ``reason`` label for a failed write.

    Example:
        >>> import sqlite3
        >>> drop_reason(sqlite3.OperationalError("database is locked"))
        'db_locked'
    """
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "locked" in text or "busy" in text:
        return "db_locked"
    if "readonly" in text or "read-only" in text or "read only" in text:
        return "db_readonly"
    if ("disk" in text and "full" in text) or "no space" in text:
        return "disk_full"
    if (isinstance(exc, DBAPIError) and exc.connection_invalidated) or any(
        s in text for s in ("connection", "server closed", "terminating", "could not connect")
    ):
        return "db_unavailable"
    return "db_error"


def _resolve_redactor() -> Redactor | None:
    # Resolved when a writer starts, not at import: tinyllm.redaction is its own pillar.
    try:
        module = importlib.import_module("tinyllm.redaction")
    except ImportError:
        return None
    found: Redactor | None = getattr(module, "redact", None)
    return found


class Writer:
    """Drains ``queue`` into ``engine``; ``on_drop(reason, count, exc)`` reports losses."""

    def __init__(
        self,
        engine: Engine,
        queue: deque[Any],
        wake: threading.Event,
        *,
        batch_size: int,
        interval: float,
        on_drop: Callable[[str, int, BaseException | None], None],
        upsert: Callable[[Any, Sums, Bins], None],
        insert_sql: str,
        positional: bool,
    ) -> None:
        self._engine = engine
        self._queue = queue
        self._wake = wake
        self._batch = batch_size
        self._interval = interval
        self._on_drop = on_drop
        self._upsert = upsert
        self._insert_sql = insert_sql
        self._positional = positional
        self._closing = False
        self._endpoints: dict[str, str] = {}
        # No cycle check: redaction hands over a fresh tree (a cyclic one would fail the
        # batch as invalid_event, counted), and the check costs ~10 % of the encoding.
        self._encode = json.JSONEncoder(
            default=str, ensure_ascii=False, check_circular=False
        ).encode
        self._redact = _resolve_redactor()
        if self._redact is None:
            log.warning("tinyllm.redaction is not available: event metadata is stored "
                        "without redaction")
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="tinyllm-store-writer",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        if not self._thread.is_alive():
            return not self._queue
        marker = _Flush()
        self._queue.append(marker)  # past the bound on purpose: a marker is not an event
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None) -> bool:
        done = self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        return done

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        q, wake = self._queue, self._wake
        popleft = q.popleft
        while True:
            try:
                if not q:
                    if self._closing:
                        return
                    wake.wait(self._interval)
                    wake.clear()
                    continue
                batch: list[Event] = []
                marker: _Flush | None = None
                limit = self._batch
                while q and len(batch) < limit:
                    item = popleft()
                    if item.__class__ is _Flush:
                        marker = item
                        break
                    batch.append(item)
                if batch:
                    self._write(batch)
                if marker is not None:
                    marker.done.set()
            except Exception as exc:  # the writer must outlive any bug or failure
                self._on_drop("writer_error", 0, exc)

    def _prepare(self, batch: list[Event]) -> tuple[list[Any], Sums, Bins]:
        redact, encode = self._redact, self._encode
        endpoints = self._endpoints
        positional = self._positional
        sums: Sums = {}
        bins: Bins = {}
        rows: list[Any] = []
        append = rows.append
        for event_type, duration, model_id, user_id, ts, md in batch:
            text: str | None = None
            if md is not None:
                if redact is not None:
                    md = redact(md)
                text = encode(md)
            if positional:
                append((model_id, user_id, event_type, duration, ts, text))
            else:
                append({"model_id": model_id, "user_id": user_id, "event_type": event_type,
                        "duration": duration, "timestamp": ts, "metadata": text})
            # The one roll-up rule, shared with rebuild and the summary's exact edges.
            fold(sums, bins, endpoints, event_type, duration, model_id, ts, md)
        return rows, sums, bins

    def _write(self, batch: list[Event]) -> None:
        try:
            rows, sums, bins = self._prepare(batch)
        except Exception as exc:  # a redactor or encoder bug: lose this batch, not the thread
            self._on_drop("invalid_event", len(batch), exc)
            return
        for attempt in (0, 1):
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql(self._insert_sql, rows)
                    self._upsert(conn, sums, bins)
            except SQLAlchemyError as exc:
                reason = drop_reason(exc)
                if attempt == 0 and reason in _RETRYABLE:
                    time.sleep(0.05)
                    continue
                self._on_drop(reason, len(batch), exc)
                return
            except Exception as exc:  # OSError and friends from the driver
                self._on_drop(drop_reason(exc), len(batch), exc)
                return
            self.written += len(batch)
            return


def fold(
    sums: Sums, bins: Bins, endpoints: dict[str, str], event_type: str, duration: float,
    model_id: str, ts: float, metadata: Any,
) -> None:
    """Add one row to ``sums``/``bins``: the one roll-up rule, used by the writer, the
    roll-up rebuild and the summary's exact edges."""
    endpoint, error, tokens = classify(metadata if isinstance(metadata, Mapping) else None)
    if endpoint is None:
        endpoint = endpoints.get(event_type)
        if endpoint is None:
            endpoint = endpoints[event_type] = derive_endpoint(event_type)
    rg, hg = schema.ROLLUP_SECONDS, schema.HIST_SECONDS
    key = (int(ts // rg) * rg, event_type, endpoint, model_id)
    acc = sums.get(key)
    if acc is None:
        sums[key] = [1, int(error), duration, tokens]
    else:
        acc[0] += 1
        acc[1] += error
        acc[2] += duration
        acc[3] += tokens
    hkey = (int(ts // hg) * hg, event_type, model_id, schema.latency_bin(duration))
    bins[hkey] = bins.get(hkey, 0) + 1


def parse_metadata(text: str | None) -> Any:
    """A stored ``metadata`` column back as an object; unparsable text as ``None``."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
