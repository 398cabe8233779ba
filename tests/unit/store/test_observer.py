"""StoreObserver: one event per request from the lifecycle; the public facade."""

from __future__ import annotations

import pytest

from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase, StoreObserver


def test_each_request_becomes_one_event(
    db: MetricsDatabase, store_collector: MetricsCollector
) -> None:
    lifecycle = RequestLifecycle(store_collector)
    lifecycle.add_observer(StoreObserver(db, event_prefix="diffusion_"))
    with lifecycle.start("dream", request_type="generate") as req:
        req.usage(input_tokens=3, output_tokens=12)
    with lifecycle.start("dream", request_type="generate_stream") as req:
        req.token(4)
    with pytest.raises(TimeoutError), lifecycle.start("dream", request_type="generate"):
        raise TimeoutError
    assert lifecycle.observer_failures == 0
    db.flush()
    s = db.get_summary()
    assert s["endpoints"] == {
        "generate": {"requests": 2, "errors": 1, "error_rate": 50.0},
        "generate/stream": {"requests": 1, "errors": 0, "error_rate": 0.0},
    }
    assert s["tokens_by_event_type"] == {"diffusion_generate": 12,
                                         "diffusion_generate_stream": 4}
    newest = s["recent_events"][0]
    assert newest["model_id"] == "dream"
    assert newest["metadata"]["success"] is False
    assert newest["metadata"]["error_type"] == "timeout"


def test_a_cancelled_request_is_stored_as_cancelled_not_as_an_error(
    db: MetricsDatabase, store_collector: MetricsCollector
) -> None:
    lifecycle = RequestLifecycle(store_collector)
    lifecycle.add_observer(StoreObserver(db))
    req = lifecycle.start("dream", request_type="stream")
    req.token(3)
    req.cancel()
    db.flush()
    s = db.get_summary()
    assert s["endpoints"] == {"stream": {"requests": 1, "errors": 0, "error_rate": 0.0}}
    stored = s["recent_events"][0]["metadata"]
    assert stored["status"] == "cancelled" and "success" not in stored
    assert stored["token_count"] == 3
