"""The background writer: a bounded in-memory queue drained in batched transactions.

The caller's side (``MetricsDatabase.record_event``) is a length check and a
``deque.append`` — both atomic under the GIL, so no lock of ours. Two daemon threads
form a pipeline. The first pops up to ``batch_size`` events, redacts and serialises
their metadata and folds them into roll-up increments (Python work). The second commits
what the first prepared: the raw rows and the roll-up increments of one or more batches
in ONE transaction, so the roll-ups can never disagree with the rows after a crash. Most
of its time is the database's own work, during which the GIL is free for the first
thread and for the application.

A ``flush()`` puts a marker on the queue; it travels through both threads and is set
once every event before it is committed. A failed transaction (locked, read-only, disk
full, server gone) is retried once, then its events are dropped, counted by reason and
logged once per reason; the threads never die. An event whose metadata cannot be
redacted or serialised is dropped alone (``invalid_event``), not with its batch.

Why it is built this way (measured at 1,000,000 events; docs/performance.md has the
figures): ``json.dumps`` builds a C encoder per call, so one is built once (``_codec``);
redaction walks every dict, so a flat dict of plain values the policy has already seen is
recognised with a cheap check; the SQLite statements are multi-row (see
``_statements``), because a thread that releases the GIL once per row crawls while
another thread runs Python; and the preparing thread hands the GIL to the committing
one every ``_SLICE`` events, for the same reason. On SQLite, WAL checkpoints run on a
thread of their own (``_wal``), poked after each commit.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from math import floor, log2
from queue import Empty, Queue
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tinyllm.store import schema
from tinyllm.store._codec import _make_encoder, parse_metadata
from tinyllm.store.rules import classify, derive_endpoint

__all__ = [
    "SUMS_FIELDS", "Bins", "Event", "Row", "Sums", "Writer", "drop_reason", "fold_events",
    "parse_metadata",
]

log = logging.getLogger("tinyllm.store")

#: (event_type, duration, model_id, user_id, timestamp, metadata or None)
Event = tuple[str, float, str, str, float, "dict[str, Any] | None"]
#: A ``performance_events`` row in insert order: (model_id, user_id, event_type,
#: duration, timestamp, metadata JSON text or None).
Row = tuple[str, str, str, float, float, "str | None"]
Redactor = Callable[[Any], Any]
#: Roll-up increments: (bucket, event_type, endpoint, model_id) -> [requests, errors,
#: duration_sum, tokens, cost_usd, unpriced, slo_judged, slo_met] (``SUMS_FIELDS``).
Sums = dict[tuple[int, str, str, str], list[Any]]
Bins = dict[tuple[int, str, str, int], int]
#: ``insert(conn, rows)``: writes rows into ``performance_events``.
Inserter = Callable[[Any, list[Row]], None]

#: What a ``Sums`` value holds, in order: the ``performance_rollups`` columns they add to.
SUMS_FIELDS = ("requests", "errors", "duration_sum", "tokens", "cost_usd", "unpriced",
               "slo_judged", "slo_met")

_RETRYABLE = ("db_locked", "db_unavailable")
_COST_MAX = 1e300  # rules.spend's bound
#: Most prepared batches committed in one transaction (and waiting to be).
_GROUP = 8
#: Events prepared between two GIL hand-overs (see ``Writer._prepare``): ~0.5 ms of work.
_SLICE = 128
_hand_over_gil = time.sleep


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


def _redaction_module() -> Any:
    # Resolved when a writer starts, not at import: tinyllm.redaction is its own pillar.
    try:
        return importlib.import_module("tinyllm.redaction")
    except ImportError:
        return None

class _Work:
    """One prepared batch on its way to the committing thread."""

    __slots__ = ("bins", "events", "marker", "rows", "sums", "taken")

    def __init__(self, rows: list[Row], sums: Sums, bins: Bins, events: int,
                 marker: _Flush | None, taken: int = 0) -> None:
        self.rows = rows
        self.sums = sums
        self.bins = bins
        self.events = events
        self.marker = marker
        self.taken = taken  # events popped from the queue for it (released once settled)


_STOP = _Work([], {}, {}, 0, None)  # tells the committing thread to finish


class Writer:
    """Drains ``queue`` into ``engine``; ``on_drop(reason, count, exc)`` reports losses.

    Two daemon threads, a pipeline: the first pops up to ``batch_size`` events, redacts,
    encodes and folds them (Python work, holding the GIL); the second commits prepared
    batches (mostly the database's own work, during which the GIL is free), so the two
    overlap. The committing thread puts every batch that is ready, up to ``_GROUP``, in
    one transaction, their roll-up increments merged: a writer that falls behind commits
    less often and upserts each roll-up row once per transaction, not once per batch.
    """

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
        insert: Inserter,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._queue = queue
        self._wake = wake
        self._batch = batch_size
        self._interval = interval
        self._on_drop = on_drop
        self._upsert = upsert
        self._insert = insert
        self._closing = False
        self._endpoints: dict[str, str] = {}
        self._encode_json = _make_encoder()
        self._after_commit = after_commit
        self._redaction = _redaction_module()
        if self._redaction is None or getattr(self._redaction, "redact", None) is None:
            self._redaction = None
            log.warning("tinyllm.redaction is not available: event metadata is stored "
                        "without redaction")
        self.written = 0
        # Events out of the queue and not yet settled (committed or dropped) are
        # ``taken - released``: the store's bound counts them with the queue, so that
        # ``queue_size`` bounds every event the store holds, not only the queued ones
        # (the prepared batches waiting to commit held up to 17 x batch_size more: 92 MB
        # instead of 40 under overload). Each counter has one writing thread.
        self.taken = 0
        self.released = 0
        # Prepared batches waiting to commit: bounded, so a slow database holds back the
        # preparing thread (and the events stay in the bounded queue, where a full queue
        # is counted) instead of piling up here.
        self._ready: Queue[_Work] = Queue(maxsize=_GROUP)
        self._thread = threading.Thread(target=self._run, name="tinyllm-store-writer",
                                        daemon=True)
        self._committer = threading.Thread(target=self._commit_loop,
                                           name="tinyllm-store-commit", daemon=True)
        self._committer.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._committer.is_alive()

    def flush(self, timeout: float | None) -> bool:
        if not self.alive:
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
        self._committer.join(timeout)
        return done

    # -- the preparing thread ------------------------------------------------------------
    def _run(self) -> None:
        q, wake, ready = self._queue, self._wake, self._ready
        popleft = q.popleft
        try:
            while True:
                if not q:
                    if self._closing:
                        return
                    wake.wait(self._interval)
                    wake.clear()
                    continue
                batch: list[Any] = []
                marker: _Flush | None = None
                # Counted as taken before they leave the queue: a producer checking the
                # bound meanwhile sees them at least once, never zero times. Only this
                # thread pops, so ``want`` items are there.
                want = min(len(q), self._batch)
                self.taken += want
                for _ in range(want):
                    item = popleft()
                    if item.__class__ is _Flush:
                        marker = item
                        break
                    batch.append(item)
                if len(batch) != want:  # a flush marker (not an event) or fewer popped
                    self.taken -= want - len(batch)
                try:
                    work = self._prepare(batch, marker)
                except Exception as exc:  # the writer must outlive any bug or failure
                    self._on_drop("writer_error", len(batch), exc)
                    work = _Work([], {}, {}, 0, marker)  # the flush marker still passes
                work.taken = len(batch)
                ready.put(work)
        finally:
            ready.put(_STOP)

    def _redactors(self) -> tuple[Redactor | None, Callable[[Any], bool] | None]:
        """``(redact, is_clean)`` of the current policy, looked up once per batch (the
        process-wide policy may be reconfigured at any time)."""
        module = self._redaction
        if module is None:
            return None, None
        get_policy = getattr(module, "get_redaction_policy", None)
        if get_policy is None:  # a stand-in module with only redact()
            return module.redact, None
        policy = get_policy()
        return policy.redact, getattr(policy, "is_clean", None)

    def _prepare(self, batch: list[Event], marker: _Flush | None) -> _Work:
        """Redact and encode ``batch`` into rows and fold it into roll-up increments.

        Works through the batch in slices of ``_SLICE`` events and hands the GIL over
        between slices (``time.sleep(0)``): the committing thread spends most of its time
        in SQLite with the GIL released, and each time it comes back it would otherwise
        wait for this busy thread to be forced off, up to the interpreter's switch
        interval (5 ms), with the database idle meanwhile. Measured: +25-35 % ingest.

        An event whose metadata cannot be redacted or encoded is dropped alone and
        counted (``invalid_event``)."""
        redact, is_clean = self._redactors()
        rows: list[Row] = []
        sums: Sums = {}
        bins: Bins = {}
        endpoints = self._endpoints
        for start in range(0, len(batch), _SLICE):
            kept = self._encode(batch[start:start + _SLICE], rows, redact, is_clean)
            fold_events(sums, bins, endpoints, kept)
            _hand_over_gil(0)
        return _Work(rows, sums, bins, len(rows), marker)

    def _encode(self, part: list[Event], rows: list[Row], redact: Redactor | None,
                is_clean: Callable[[Any], bool] | None) -> list[Event]:
        """Append ``part``'s rows to ``rows``; returns the events as stored (redacted)."""
        encode = self._encode_json
        append = rows.append
        failed = False
        for i, event in enumerate(part):
            event_type, duration, model_id, user_id, ts, md = event
            if md is None:
                append((model_id, user_id, event_type, duration, ts, None))
                continue
            try:
                # The caller's dict was copied by record_event, so an already clean one
                # (the common case: flat, known keys, plain values) is kept as is.
                if redact is not None and (is_clean is None or not is_clean(md)):
                    md = redact(md)
                    part[i] = (event_type, duration, model_id, user_id, ts, md)
                text = encode(md)
            except Exception as exc:  # a redactor or encoder failure loses this event only
                self._on_drop("invalid_event", 1, exc)
                part[i] = None  # type: ignore[call-overload]
                failed = True
                continue
            append((model_id, user_id, event_type, duration, ts, text))
        return [e for e in part if e is not None] if failed else part

    # -- the committing thread -----------------------------------------------------------
    def _commit_loop(self) -> None:
        ready = self._ready
        stop = False
        while not stop:
            group = [ready.get()]
            # Whatever else is ready joins this transaction.
            while len(group) < _GROUP:
                try:
                    group.append(ready.get_nowait())
                except Empty:
                    break
            if group[-1] is _STOP:
                group.pop()
                stop = True
            try:
                self._commit(group)
            except Exception as exc:  # the writer must outlive any bug or failure
                self._on_drop("writer_error", sum(w.events for w in group), exc)
            finally:
                self.released += sum(w.taken for w in group)
                for work in group:
                    if work.marker is not None:
                        work.marker.done.set()

    def _commit(self, group: list[_Work]) -> None:
        works = [w for w in group if w.rows]
        if not works:
            return
        if len(works) == 1:
            rows, sums, bins = works[0].rows, works[0].sums, works[0].bins
        else:
            rows = [row for w in works for row in w.rows]
            sums, bins = works[0].sums, works[0].bins
            for w in works[1:]:
                for key, v in w.sums.items():
                    acc = sums.get(key)
                    if acc is None:
                        sums[key] = v
                    else:
                        for i, x in enumerate(v):
                            acc[i] += x
                for hkey, count in w.bins.items():
                    bins[hkey] = bins.get(hkey, 0) + count
        for attempt in (0, 1):
            try:
                with self._engine.begin() as conn:
                    self._insert(conn, rows)
                    self._upsert(conn, sums, bins)
            except SQLAlchemyError as exc:
                reason = drop_reason(exc)
                if attempt == 0 and reason in _RETRYABLE:
                    time.sleep(0.05)
                    continue
                self._on_drop(reason, len(rows), exc)
                return
            except Exception as exc:  # OSError and friends from the driver
                self._on_drop(drop_reason(exc), len(rows), exc)
                return
            self.written += len(rows)
            if self._after_commit is not None:
                self._after_commit()
            return


def fold_events(sums: Sums, bins: Bins, endpoints: dict[str, str],
                events: Iterable[Event]) -> None:
    """Add ``events`` to ``sums``/``bins``: the one roll-up rule, used by the writer, the
    roll-up rebuild and the summary's exact edges.

    Per event: the endpoint, error flag and tokens from ``rules.classify``, the cost and
    SLO outcome of ``rules.spend``, the hour, and the latency bin of
    ``schema.latency_bin``. The loop keeps the hour of the last event and computes the
    spend and the bin inline, because events mostly arrive in time order and this loop
    runs once per event written (tests check both against the plain rules).

    Example:
        >>> sums, bins = {}, {}
        >>> fold_events(sums, bins, {}, [("diffusion_generate", 1.0, "m", "u", 7200.0,
        ...                               {"token_count": 3, "cost_usd": 0.5})])
        >>> sums
        {(7200, 'diffusion_generate', 'generate', 'm'): [1, 0, 1.0, 3, 0.5, 0, 0, 0]}
    """
    rg, hg = schema.ROLLUP_SECONDS, schema.HIST_SECONDS
    per_doubling = schema.BINS_PER_DOUBLING
    lowest, highest, none = schema.BIN_MIN, schema.BIN_MAX, schema.BIN_NONE
    lo = hi = 0.0
    bucket = hbucket = 0
    get_endpoint = endpoints.get
    for event_type, duration, model_id, _user, ts, md in events:
        if md is None or not (type(md) is dict or isinstance(md, Mapping)):
            endpoint: str | None = None
            error = False
            tokens = 0
            cost = 0.0
            unpriced = True
            slo: Any = None
        else:
            endpoint, error, tokens = classify(md)
            # rules.spend, inlined: a float first (what the observer writes).
            raw: Any = md.get("cost_usd")
            kind = type(raw)
            if kind is float and 0.0 <= raw < _COST_MAX:
                cost = raw
                unpriced = False
            elif kind is int and 0 <= raw < _COST_MAX:
                cost = float(raw)
                unpriced = False
            else:
                cost = 0.0
                unpriced = True
            slo = md.get("slo_met")
        if endpoint is None:
            endpoint = get_endpoint(event_type)
            if endpoint is None:
                endpoint = endpoints[event_type] = derive_endpoint(event_type)
        if not lo <= ts < hi:
            bucket = int(ts // rg) * rg
            hbucket = int(ts // hg) * hg
            lo = float(max(bucket, hbucket))
            hi = float(min(bucket + rg, hbucket + hg))
        key = (bucket, event_type, endpoint, model_id)
        acc = sums.get(key)
        if acc is None:
            sums[key] = [1, int(error), duration, tokens, cost, int(unpriced),
                         int(slo is True or slo is False), int(slo is True)]
        else:
            # Branches rather than adding zeros: most events add nothing to most sums.
            acc[0] += 1
            if error:
                acc[1] += 1
            acc[2] += duration
            if tokens:
                acc[3] += tokens
            if unpriced:
                acc[5] += 1
            else:
                acc[4] += cost
            if slo is True:
                acc[6] += 1
                acc[7] += 1
            elif slo is False:
                acc[6] += 1
        if duration > 0.0:
            b = floor(log2(duration) * per_doubling)
            if b < lowest:
                b = lowest
            elif b > highest:
                b = highest
        else:
            b = none
        hkey = (hbucket, event_type, model_id, b)
        bins[hkey] = bins.get(hkey, 0) + 1
