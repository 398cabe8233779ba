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


def test_each_requests_cost_and_slo_outcome_reach_the_summary(db: MetricsDatabase) -> None:
    # The lifecycle prices and judges each request (a price table and an SLO of the
    # test's own); the store's sums are those figures, request by request.
    from prometheus_client import CollectorRegistry

    from tinyllm import accounting
    from tinyllm.pricing import ModelPrice, PriceTable
    from tinyllm.slo import parse_slo

    accounting.configure_prices(PriceTable({"priced": ModelPrice(input=1.5, output=6.0)}))
    accounting.configure_slo(parse_slo({"slo": {"default": {"e2e": 60}}}))
    try:
        lifecycle = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
        lifecycle.add_observer(StoreObserver(db))
        requests = []
        for i in range(5):
            with lifecycle.start("priced", request_type="chat") as req:
                req.usage(input_tokens=1000 * (i + 1), output_tokens=333 * i)
            requests.append(req)
        with pytest.raises(TimeoutError), lifecycle.start("priced", request_type="chat") as req:
            req.usage(input_tokens=10, output_tokens=0)
            raise TimeoutError
        requests.append(req)
        with lifecycle.start("unknown-model", request_type="chat") as req:
            req.usage(input_tokens=10, output_tokens=10)
        requests.append(req)
    finally:
        accounting.configure_prices(None)
        accounting.configure_slo(None)
    assert db.flush()
    costs = [r.cost_usd for r in requests if r.cost_usd is not None]
    assert len(costs) == 6 and requests[-1].cost_usd is None
    cost = db.get_summary()["cost"]
    assert cost["total_usd"] == pytest.approx(sum(costs), abs=1e-9)
    assert cost["by_model"]["unknown-model"] == {"requests": 1, "cost_usd": 0.0,
                                                 "unpriced_requests": 1}
    slo = db.get_summary()["slo"]["by_model"]["priced"]
    assert slo == {"requests": 6, "met": 5, "goodput_ratio": pytest.approx(5 / 6)}
