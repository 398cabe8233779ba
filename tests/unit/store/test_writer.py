"""The writer's parts on a real SQLite file: the one roll-up rule, multi-row statements,
redaction's fast path, per-event failures, and flush ordering across threads."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import threading
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from tinyllm.metrics import MetricsCollector
from tinyllm.redaction import RedactionPolicy, configure_redaction, reset_redaction
from tinyllm.store import MetricsDatabase, schema
from tinyllm.store._statements import make_insert, make_upsert
from tinyllm.store.rules import classify, derive_endpoint, spend
from tinyllm.store.writer import Bins, Sums, fold_events, parse_metadata

from .conftest import dropped

durations = st.one_of(
    st.just(0.0), st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.floats(min_value=1e-12, max_value=1e-6), st.floats(min_value=3e4, max_value=1e300))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300),
                    st.floats(allow_nan=False), st.text(max_size=12))
costs = st.one_of(scalars, st.floats(min_value=0.0, max_value=10.0), st.just(math.nan),
                 st.just(math.inf), st.just(2**1100), st.just(1e300))
metadata = st.one_of(st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(
    st.sampled_from(["token_count", "success", "error", "error_type", "endpoint", "alg",
                     "slo_met"]),
    scalars, max_size=6).flatmap(lambda md: st.one_of(
        st.just(md), costs.map(lambda c: {**md, "cost_usd": c}))))


def _reference(events: list[tuple[str, float, str, float, Any]]) -> tuple[Sums, Bins]:
    """The roll-up rule written plainly: classify, spend, derive_endpoint, latency_bin."""
    sums: Sums = {}
    bins: Bins = {}
    for event_type, duration, model_id, ts, md in events:
        endpoint, error, tokens = classify(md if isinstance(md, Mapping) else None)
        cost, met = spend(md if isinstance(md, Mapping) else None)
        endpoint = endpoint or derive_endpoint(event_type)
        key = (int(ts // schema.ROLLUP_SECONDS) * schema.ROLLUP_SECONDS, event_type,
               endpoint, model_id)
        acc = sums.setdefault(key, [0, 0, 0.0, 0, 0.0, 0, 0, 0])
        acc[0] += 1
        acc[1] += int(error)
        acc[2] += duration
        acc[3] += tokens
        acc[4] += cost or 0.0
        acc[5] += cost is None
        acc[6] += met is not None
        acc[7] += met is True
        hkey = (int(ts // schema.HIST_SECONDS) * schema.HIST_SECONDS, event_type, model_id,
                schema.latency_bin(duration))
        bins[hkey] = bins.get(hkey, 0) + 1
    return sums, bins


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["diffusion_generate", "diffusion_infill_stream", "chat"]),
    durations, st.sampled_from(["a", "b"]),
    st.floats(min_value=0.0, max_value=5e9, allow_nan=False), metadata), max_size=40))
def test_fold_events_is_the_plain_rule(events: list[tuple[str, float, str, float, Any]]) -> None:
    sums: Sums = {}
    bins: Bins = {}
    fold_events(sums, bins, {}, [(et, d, m, "u", ts, md) for et, d, m, ts, md in events])
    want_sums, want_bins = _reference(events)
    assert bins == want_bins
    assert sums.keys() == want_sums.keys()
    for key, (n, errs, dsum, tokens, cost, *counts) in sums.items():
        want = want_sums[key]
        assert [n, errs, tokens, *counts] == [want[0], want[1], want[3], *want[5:]]
        assert dsum == pytest.approx(want[2])
        assert cost == pytest.approx(want[4], abs=1e-12)
        assert all(type(v) is int for v in counts) and type(cost) is float


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 1000, 2000, 2001, 4097])
def test_multi_row_insert_writes_every_row_in_order(tmp_path: Path, n: int) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    schema.metadata_obj.create_all(engine)
    rows = [(f"m{i}", "u", "diffusion_generate", i / 7, 1e9 + i,
             None if i % 3 else json.dumps({"i": i})) for i in range(n)]
    insert = make_insert(engine)
    with engine.begin() as conn:
        insert(conn, rows)
        insert(conn, rows[:1])
    with sqlite3.connect(tmp_path / "m.db") as raw:
        got = raw.execute("SELECT model_id, user_id, event_type, duration, timestamp, metadata"
                          " FROM performance_events ORDER BY id").fetchall()
    assert got == rows + rows[:1]
    engine.dispose()


def test_multi_row_upsert_adds_to_existing_rows(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    schema.metadata_obj.create_all(engine)
    upsert = make_upsert(engine)
    sums: Sums = {(3600 * i, "t", "e", "m"): [1, 0, 0.5, 2, 0.25, 1, 1, 1]
                  for i in range(2500)}
    bins: Bins = {(3600 * (i // 50), "t", "m", i % 50): 1 for i in range(5000)}
    with engine.begin() as conn:
        upsert(conn, sums, bins)
        upsert(conn, sums, bins)
    with sqlite3.connect(tmp_path / "m.db") as raw:
        assert raw.execute("SELECT count(*), sum(requests), sum(tokens), min(requests) FROM "
                           "performance_rollups").fetchone() == (2500, 5000, 10000, 2)
        assert raw.execute("SELECT sum(cost_usd), sum(unpriced), sum(slo_judged), "
                           "sum(slo_met), min(cost_usd) FROM performance_rollups"
                           ).fetchone() == (1250.0, 5000, 5000, 5000, 0.5)
        assert raw.execute("SELECT count(*), sum(count) FROM performance_latency_bins"
                           ).fetchone() == (5000, 10000)
    engine.dispose()


def test_clean_metadata_is_stored_as_the_same_json(db: MetricsDatabase) -> None:
    md = {"token_count": 5, "temperature": 0.1 + 0.2, "alg": "entropy", "ok": True,
          "note": "ünï\"code", "none": None, 7: "int key", "big": 2**70}
    for _ in range(3):  # the first event teaches the policy; the others take the fast path
        db.record_event("diffusion_generate", 1.0, model_id="m", metadata=md)
    assert db.flush()
    with sqlite3.connect(db.engine.url.database or "") as raw:
        stored = {r[0] for r in raw.execute("SELECT metadata FROM performance_events")}
    assert len(stored) == 1
    # Keys and values round-trip exactly (an int key becomes a string, as json.dumps
    # makes it; an int past 64 bits takes the stdlib encoder), text stays unescaped.
    (text,) = stored
    assert json.loads(text) == json.loads(json.dumps(md))
    assert "ünï" in text


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(
    ["token_count", "alg", "api_key", "prompt", "note", "Authorization", "x"]),
    st.one_of(scalars, st.sampled_from(["Bearer abcdef123", "sk-abcdefghijkl", "[1]"]),
              st.lists(st.integers(), max_size=2)), max_size=5))
def test_is_clean_only_when_redaction_would_change_nothing(md: dict[str, Any]) -> None:
    policy = RedactionPolicy(extra_patterns=[r"secret-\d+"])
    policy.redact({"token_count": 1, "alg": "entropy", "note": "fine", "x": "secret-1"})
    if policy.is_clean(md):
        assert policy.redact(md) == md
    once = policy.redact(md)
    if policy.is_clean(once):
        assert policy.redact(once) == once


def test_is_clean_follows_the_current_policy(db: MetricsDatabase) -> None:
    try:
        db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"tenant": "t1"})
        db.flush()
        configure_redaction(extra_keys=["tenant"], capture_content=False)
        db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"tenant": "t1"})
        db.flush()
    finally:
        reset_redaction()
    assert [e["metadata"]["tenant"] for e in db.iter_events()] == ["t1", "[REDACTED]"]


def test_an_unencodable_event_is_dropped_alone(
    db: MetricsDatabase, store_collector: MetricsCollector
) -> None:
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"token_count": 1})
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata={(1, 2): "tuple key"})
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"token_count": 2})
    assert db.flush()
    assert db.dropped == {"invalid_event": 1}
    assert dropped(store_collector, "invalid_event") == 1
    summary = db.get_summary()
    assert summary["overall"]["total_requests"] == 2
    assert summary["tokens_by_event_type"] == {"diffusion_generate": 3}


def test_unencodable_events_in_later_slices_of_a_batch_are_dropped_alone(
    make_db: Callable[..., MetricsDatabase], store_collector: MetricsCollector
) -> None:
    # One batch of 600 events, prepared in slices of 128: the bad events sit in the
    # first, a middle and the last slice, and only they are lost.
    db = make_db(batch_size=600)
    bad = {3, 130, 599}
    for i in range(600):
        md: dict[Any, Any] = {(1, 2): "x"} if i in bad else {"token_count": 1, "n": i}
        db.record_event("diffusion_generate", 1.0, model_id="m", timestamp=1e9 + i,
                        metadata=md)
    assert db.flush()
    assert db.dropped == {"invalid_event": 3}
    assert dropped(store_collector, "invalid_event") == 3
    summary = db.get_summary()
    assert summary["overall"]["total_requests"] == 597
    assert summary["tokens_by_event_type"] == {"diffusion_generate": 597}
    assert sorted(e["metadata"]["n"] for e in db.iter_events()) == \
        [i for i in range(600) if i not in bad]


class _Hostile(Mapping[str, Any]):
    """Metadata that survives encoding (default=str) but breaks the roll-up rule."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 1

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("a bug")


def test_a_failing_batch_is_counted_and_flush_still_returns(
    monkeypatch: pytest.MonkeyPatch, make_db: Callable[..., MetricsDatabase],
    store_collector: MetricsCollector,
) -> None:
    fake = types.ModuleType("tinyllm.redaction")
    fake.redact = lambda value: _Hostile() if "boom" in value else value  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tinyllm.redaction", fake)
    db = make_db()
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"boom": 1})
    db.record_event("diffusion_generate", 1.0, model_id="m")
    assert db.flush(timeout=10)
    assert db.dropped == {"writer_error": 2}
    assert dropped(store_collector, "writer_error") == 2
    db.record_event("diffusion_generate", 1.0, model_id="m", metadata={"fine": 1})
    assert db.flush(timeout=10)  # the writer carried on
    assert db.get_summary()["overall"]["total_requests"] == 1
    assert db.writer_alive


def test_each_flush_covers_its_own_threads_events(
    tmp_path: Path, make_db: Callable[..., MetricsDatabase]
) -> None:
    db = make_db(batch_size=64)
    path = tmp_path / "metrics.db"
    failures: list[str] = []

    def worker(name: str) -> None:
        with sqlite3.connect(path) as raw:
            for round_ in range(1, 6):
                for i in range(300):
                    db.record_event("diffusion_generate", 0.01, model_id="m", user_id=name,
                                    metadata={"token_count": i})
                if not db.flush(timeout=30):
                    failures.append(f"{name}: flush timed out")
                got = raw.execute("SELECT count(*) FROM performance_events WHERE user_id = ?",
                                  (name,)).fetchone()[0]
                if got != 300 * round_:
                    failures.append(f"{name} round {round_}: {got} rows")

    threads = [threading.Thread(target=worker, args=(f"t{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    summary = db.get_summary()
    assert summary["overall"]["total_requests"] == 4 * 5 * 300
    assert summary["tokens_by_event_type"]["diffusion_generate"] == 4 * 5 * sum(range(300))


def test_a_burst_is_prepared_in_batches_of_the_default_size(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    # 8,192 (not 2,000): each roll-up row is upserted once for more events (+10-20 %
    # ingest, docs/performance.md). The writer wakes when the queue reaches the batch
    # size (no timer wake-up within 60 s), so the first batch is exactly one full batch.
    db = make_db(flush_interval=60)
    sizes: list[int] = []
    prepare = db._writer._prepare

    def spy(batch: list[Any], marker: Any) -> Any:
        sizes.append(len(batch))
        return prepare(batch, marker)

    db._writer._prepare = spy  # type: ignore[method-assign]
    for i in range(8192 + 10):
        db.record_event("diffusion_generate", 0.5, model_id="m", timestamp=1e9 + i)
    assert db.flush() and db.dropped == {}
    assert sizes[0] == 8192 and sum(sizes) == 8202
    assert db.get_summary()["overall"]["total_requests"] == 8202


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text()
    | st.integers(min_value=-(2**80), max_value=2**80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(_json_values)
@example({"t": math.nan, "n": 2**64, "m": 2**64 - 1, "k": -(2**63) - 1, "j": -(2**63)})
@example([{"deep": [2**70]}])
@example({"inf": math.inf, "f": 1e300})
def test_parse_metadata_reads_what_the_stdlib_reads(value: Any) -> None:
    # orjson parses first; NaN, huge ints and the rest must come back as json.loads has
    # them (repr tells 1 from 1.0 and shows NaN).
    text = json.dumps(value, ensure_ascii=False)
    if not text or text == "null":
        return
    assert repr(parse_metadata(text)) == repr(json.loads(text))


def test_record_event_converts_ints_and_rejects_floats_too_big(db: MetricsDatabase) -> None:
    db.record_event("diffusion_generate", 2, model_id="m", timestamp=1_700_000_000)
    with pytest.raises(ValueError, match="duration"):
        db.record_event("diffusion_generate", 10**400, model_id="m")
    with pytest.raises(ValueError, match="timestamp"):
        db.record_event("diffusion_generate", 1.0, model_id="m", timestamp=-1)
    assert db.flush()
    event = next(db.iter_events())
    assert (event["duration"], event["timestamp"]) == (2.0, 1_700_000_000.0)
    assert math.isclose(db.get_summary()["overall"]["average_latency"], 2.0)


@pytest.mark.parametrize("n", [1, 3, 64, 2000])
def test_multi_row_sql_is_what_sqlalchemy_compiles(n: int) -> None:
    from sqlalchemy.dialects import sqlite

    from tinyllm.store import _statements

    engine = create_engine("sqlite://")
    table = schema.performance_latency_bins

    def build(values: list[dict[str, Any]] | None) -> Any:
        ins = sqlite.insert(table) if values is None else sqlite.insert(table).values(values)
        return ins.on_conflict_do_update(index_elements=[table.c.bucket],
                                         set_={"count": table.c.count + ins.excluded.count})

    keys = tuple(c.name for c in table.columns)  # multi-row VALUES follow the table's order
    template = _statements._row_template(build, engine.dialect, keys)
    assert template(n) == _statements._compile_rows(build, engine.dialect, keys, n)
