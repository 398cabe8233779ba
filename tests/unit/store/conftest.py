"""Fixtures for the store's unit tests: a SQLite store in the test's temp dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase


@pytest.fixture
def store_collector() -> MetricsCollector:
    """A collector over a registry of the test's own (drops are counted here)."""
    return MetricsCollector(registry=CollectorRegistry(), namespace="tinyllm")


@pytest.fixture
def make_db(
    tmp_path: Path, store_collector: MetricsCollector
) -> Iterator[Callable[..., MetricsDatabase]]:
    """Factory: ``make_db(**kwargs)`` -> a MetricsDatabase on ``tmp_path/metrics.db``."""
    opened: list[MetricsDatabase] = []

    def make(target: Any = None, **kwargs: Any) -> MetricsDatabase:
        kwargs.setdefault("collector", store_collector)
        db = MetricsDatabase(target or tmp_path / "metrics.db", **kwargs)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def db(make_db: Callable[..., MetricsDatabase]) -> MetricsDatabase:
    return make_db()


def dropped(collector: MetricsCollector, reason: str) -> float:
    """``tinyllm_store_events_dropped_total{reason}`` in ``collector``'s registry."""
    value = collector.registry.get_sample_value(
        "tinyllm_store_events_dropped_total", {"reason": reason})
    return value or 0.0


def seed_example(db: MetricsDatabase, ts: float = 1_700_000_000.0) -> None:
    """Seed 004's example data: 10 generate (2 errors, 25 tokens, 1.5 s), 5 infill (1 error,
    30 tokens, 2.0 s)."""
    for i in range(10):
        db.record_event("diffusion_generate", 1.5, model_id="dream", timestamp=ts + i,
                        metadata={"token_count": 2 if i < 5 else 3, "success": i >= 2,
                                  "max_new_tokens": 64, "temperature": 0.2, "top_p": 0.9,
                                  "alg": "entropy", "generation_time": 0.02})
    for i in range(5):
        db.record_event("diffusion_infill", 2.0, model_id="dream", timestamp=ts + 20 + i,
                        metadata={"token_count": 6, "error": "timeout" if i == 0 else None})
    assert db.flush()


#: When ``PRICED`` starts (22:13:20 UTC): its events straddle whole roll-up hours.
T0 = 1_700_000_000.0

#: Priced events, (model, cost_usd or None, slo_met or None, seconds after T0): gpt-4o
#: costs 0.3579001 in all, local 0.0 (priced at nothing), mystery is unpriced.
PRICED: list[tuple[str, float | None, bool | None, float]] = [
    ("gpt-4o", 0.0123, True, 0.0),
    ("gpt-4o", 0.0456, False, 10.0),
    ("gpt-4o", 1e-7, True, 3700.0),
    ("gpt-4o", 0.3, None, 7300.0),
    ("local", 0.0, True, 5.0),        # priced at nothing: not unpriced
    ("local", 0.0, True, 4000.0),
    ("mystery", None, None, 20.0),    # no known price
    ("mystery", None, False, 3650.0),
    ("mystery", None, None, 9000.0),
]


def record_priced(db: MetricsDatabase, events: list[tuple[str, float | None, bool | None,
                                                          float]] = PRICED) -> None:
    """Record ``events`` (default ``PRICED``) as ``llm_chat`` events of 0.5 s; flush."""
    for model, cost, met, dt in events:
        md: dict[str, Any] = {"token_count": 10, "success": met is not False}
        if cost is not None:
            md["cost_usd"] = cost
        if met is not None:
            md["slo_met"] = met
        db.record_event("llm_chat", 0.5, model_id=model, timestamp=T0 + dt, metadata=md)
    assert db.flush()
