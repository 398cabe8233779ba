"""configure_store / get_store / close_store, the $TINYLLM_METRICS_DB hook, the health check,
and MetricsDatabase.prune."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tinyllm.health import health_check_names, run_health_checks
from tinyllm.lifecycle import get_lifecycle
from tinyllm.metrics import InferenceContext, MetricsCollector
from tinyllm.settings import ENV_METRICS_DB
from tinyllm.store import (
    MetricsDatabase,
    StoreObserver,
    close_store,
    configure_store,
    get_store,
)
from tinyllm.store.config import store_health


@pytest.fixture(autouse=True)
def _clean(
    monkeypatch: pytest.MonkeyPatch, default_collector: MetricsCollector
) -> Iterator[None]:
    monkeypatch.delenv(ENV_METRICS_DB, raising=False)
    close_store()
    yield
    close_store()


def _store_observers() -> list[StoreObserver]:
    return [o for o in get_lifecycle().observers if isinstance(o, StoreObserver)]


def test_configure_store_records_one_row_per_lifecycle_request(tmp_path: Path) -> None:
    db = configure_store(tmp_path / "m.db", event_prefix="diffusion_")
    assert db is not None and get_store() is db
    with get_lifecycle().start("dream", request_type="generate") as req:
        req.usage(output_tokens=7)
    with InferenceContext("dream", request_type="infill") as ctx:
        ctx.set_token_count(3)
    assert db.flush()
    events = list(db.iter_events())
    assert [(e["event_type"], e["model_id"], e["metadata"]["token_count"]) for e in events] == [
        ("diffusion_generate", "dream", 7), ("diffusion_infill", "dream", 3)]
    assert "store" in health_check_names()


def test_configure_again_replaces_closes_and_detaches(tmp_path: Path) -> None:
    first = configure_store(str(tmp_path / "a.db"))
    second = configure_store(str(tmp_path / "b.db"))
    assert first is not None and second is not None and get_store() is second
    assert not first.writer_alive  # closed
    assert [o.db for o in _store_observers()] == [second]
    with get_lifecycle().start("m"):
        pass
    assert second.flush()
    assert len(list(second.iter_events())) == 1
    with MetricsDatabase(tmp_path / "a.db") as reopened:
        assert list(reopened.iter_events()) == []


def test_no_target_and_no_env_turns_the_store_off(tmp_path: Path) -> None:
    db = configure_store(tmp_path / "m.db")
    assert db is not None
    assert configure_store() is None
    assert get_store() is None and not db.writer_alive
    assert _store_observers() == [] and "store" not in health_check_names()


def test_a_bad_target_raises_and_keeps_the_previous_store(tmp_path: Path) -> None:
    db = configure_store(tmp_path / "m.db")
    with pytest.raises(ValueError, match="scheme"):
        configure_store("mysql://host/db")
    assert get_store() is db and db.writer_alive


def test_argument_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_METRICS_DB, str(tmp_path / "env.db"))
    db = configure_store(tmp_path / "arg.db")
    assert db is not None and db.url.endswith("arg.db")
    db = configure_store()
    assert db is not None and db.url.endswith("env.db")


def test_env_var_configures_on_first_get_lifecycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinyllm.metrics import reset_metrics_collector

    monkeypatch.setenv(ENV_METRICS_DB, str(tmp_path / "env.db"))
    reset_metrics_collector()  # a fresh default collector: no lifecycle yet
    with InferenceContext("gemma3"):
        pass
    db = get_store()
    assert db is not None and db.url.endswith("env.db")
    assert len(_store_observers()) == 1
    get_lifecycle()  # once per collector: no second store
    assert get_store() is db and len(_store_observers()) == 1
    assert db.flush()
    assert [e["model_id"] for e in db.iter_events()] == ["gemma3"]


def test_a_bad_env_var_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tinyllm.metrics import reset_metrics_collector

    monkeypatch.setenv(ENV_METRICS_DB, "mysql://nowhere/db")
    reset_metrics_collector()
    with InferenceContext("gemma3"):
        pass  # the request still works
    assert get_store() is None
    assert any(ENV_METRICS_DB in r.getMessage() and "mysql" in r.getMessage()
               for r in caplog.records)


def test_no_env_var_no_store(default_collector: MetricsCollector) -> None:
    get_lifecycle()
    assert get_store() is None and _store_observers() == []


def test_health_healthy_then_unhealthy_when_closed(tmp_path: Path) -> None:
    db = configure_store(tmp_path / "m.db")
    assert db is not None
    check = run_health_checks()["checks"]["store"]
    assert check["status"] == "healthy"
    assert "writable" in check["detail"] and "0 dropped" in check["detail"]
    db.close()
    assert store_health(db) == ("unhealthy", f"{db.url}: the writer is not running "
                                             "(store closed?)")


def test_health_degraded_after_drops(make_db: Callable[..., MetricsDatabase]) -> None:
    db = make_db(queue_size=1)
    for _ in range(5000):
        db.record_event("generate", 0.1, model_id="m")
    assert db.dropped.get("queue_full", 0) > 0
    status, detail = store_health(db)
    assert status == "degraded" and "queue_full=" in detail


def test_health_unhealthy_when_unreachable(
    make_db: Callable[..., MetricsDatabase], tmp_path: Path
) -> None:
    db = make_db()
    db.engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/m.db")
    status, detail = store_health(db)
    assert status == "unhealthy" and "not writable" in detail


# -- prune ------------------------------------------------------------------------------


def _fill(db: MetricsDatabase, now: float) -> None:
    # One event every 10 minutes over two days, every third an error.
    for i in range(6 * 48):
        db.record_event("diffusion_generate", 1.0 + (i % 5), model_id="dream",
                        timestamp=now - i * 600 - 1,
                        metadata={"token_count": 2, "success": i % 3 != 0})
    assert db.flush()


def test_prune_deletes_old_rows_and_keeps_summary_consistent(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    db = make_db()
    now = time.time()
    _fill(db, now)
    older_than = 25 * 3600 + 1234.5  # a cutoff in the middle of an hour
    removed = db.prune(older_than)
    cutoff = now - older_than
    remaining = list(db.iter_events())
    assert removed == 6 * 48 - len(remaining) and removed > 0
    assert all(e["timestamp"] >= cutoff - 5 for e in remaining)
    pruned = db.get_summary()
    rebuilt_from_rows = db.rebuild_rollups()
    assert rebuilt_from_rows == len(remaining)
    assert db.get_summary() == pruned  # the roll-ups agree with the rows exactly
    assert pruned["overall"]["total_requests"] == len(remaining)
    # ranges that start inside the straddled hour agree too
    since = cutoff - 1800
    assert db.get_summary(since=since)["overall"]["total_requests"] == len(
        [e for e in remaining if e["timestamp"] >= since])


def test_prune_nothing_old_removes_nothing(make_db: Callable[..., MetricsDatabase]) -> None:
    db = make_db()
    _fill(db, time.time())
    before = db.get_summary()
    assert db.prune(30 * 86400) == 0
    assert db.get_summary() == before


def test_prune_zero_removes_everything(make_db: Callable[..., MetricsDatabase]) -> None:
    db = make_db()
    _fill(db, time.time())
    assert db.prune(0) == 6 * 48
    assert db.get_summary()["overall"]["total_requests"] == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "30d", True, None])
def test_prune_rejects_bad_ages(db: MetricsDatabase, bad: object) -> None:
    with pytest.raises(ValueError, match="older_than_seconds"):
        db.prune(bad)  # type: ignore[arg-type]
