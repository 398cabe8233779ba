"""The request lifecycle: one observation, exact accounting, observers."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.lifecycle import Request, RequestLifecycle, get_lifecycle
from tinyllm.metrics import MetricsCollector


@pytest.fixture
def lifecycle(collector: MetricsCollector) -> RequestLifecycle:
    return RequestLifecycle(collector)


def v(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_backend_usage_wins_over_counted_tokens(
    lifecycle: RequestLifecycle, registry: CollectorRegistry
) -> None:
    with lifecycle.start("m", "g") as req:
        req.token()
        req.token()
        req.usage(input_tokens=7, output_tokens=5)
    assert req.output_tokens == 5
    assert v(registry, "tinyllm_tokens_output_total", model="m", graph="g") == 5
    assert v(registry, "tinyllm_tokens_input_total", model="m", graph="g") == 7
    assert v(registry, "tinyllm_inference_inter_token_latency_seconds_count", model="m") == 1


def test_a_chunk_of_several_tokens_spreads_its_gap(
    lifecycle: RequestLifecycle, registry: CollectorRegistry
) -> None:
    with lifecycle.start("m") as req:
        req.token(3)  # first chunk: TTFT + 2 zero gaps
        req.token(4)  # 4 gaps
        req.token(0)  # nothing
    assert req.output_tokens == 7
    assert v(registry, "tinyllm_inference_ttft_seconds_count", model="m") == 1
    assert v(registry, "tinyllm_inference_inter_token_latency_seconds_count", model="m") == 6
    with pytest.raises(ValueError, match="count"):
        req.token(-1)


def test_end_is_idempotent_and_requests_equal_outcomes(
    lifecycle: RequestLifecycle, registry: CollectorRegistry
) -> None:
    for i in range(10):
        req = lifecycle.start("m")
        req.end(None if i % 3 else ConnectionRefusedError())
        req.end()  # a second end changes nothing
        req.end(RuntimeError())
    started = v(registry, "tinyllm_requests_total", model="m", graph="default",
                request_type="generate")
    outcomes = sum(
        v(registry, "tinyllm_inference_requests_total", model="m", status=s) or 0
        for s in ("success", "error", "timeout")
    )
    assert started == outcomes == 10
    assert v(registry, "tinyllm_inference_requests_total", model="m", status="error") == 4
    assert v(registry, "tinyllm_errors_total", error_type="connection", model="m",
             graph="default") == 4


def test_request_timings_are_exposed(lifecycle: RequestLifecycle) -> None:
    with lifecycle.start("m") as req:
        req.token()
    assert req.status == "success"
    assert req.ttft is not None and req.duration is not None
    assert 0 <= req.ttft <= req.duration


def test_observers_see_start_and_end_and_cannot_break_the_caller(
    lifecycle: RequestLifecycle,
) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple[str, Request, str | None]] = []

        def on_start(self, request: Request) -> None:
            request.span = "span-state"
            self.events.append(("start", request, request.status))

        def on_end(self, request: Request) -> None:
            self.events.append(("end", request, request.status))

    class Broken:
        def on_start(self, request: Request) -> None:
            raise RuntimeError("observer bug")

        def on_end(self, request: Request) -> None:
            raise RuntimeError("observer bug")

    recorder = Recorder()
    lifecycle.add_observer(Broken())
    lifecycle.add_observer(recorder)
    with pytest.raises(KeyError), lifecycle.start("m") as req:
        raise KeyError("x")
    assert recorder.events == [("start", req, None), ("end", req, "error")]
    assert req.span == "span-state"
    assert req.status == "error" and req.error_type == "unknown"
    assert lifecycle.observer_failures == 2
    lifecycle.remove_observer(recorder)
    with lifecycle.start("m"):
        pass
    assert len(recorder.events) == 2


def test_get_lifecycle_is_one_per_collector(collector: MetricsCollector) -> None:
    assert get_lifecycle(collector) is get_lifecycle(collector)
    other = MetricsCollector(registry=CollectorRegistry())
    assert get_lifecycle(other) is not get_lifecycle(collector)


def test_label_sets_past_the_budget_fold_into_other(registry: CollectorRegistry) -> None:
    lc = RequestLifecycle(MetricsCollector(max_cardinality=2, registry=registry))
    for i in range(6):
        with lc.start(f"model-{i}") as req:
            req.token()
    assert v(registry, "tinyllm_tokens_generated_total", model="other") == 4
    assert v(registry, "tinyllm_tokens_generated_total", model="model-0") == 1


def test_minute_window_keeps_the_trailing_sixty_seconds() -> None:
    from tinyllm._trailing import TrailingMinute

    w = TrailingMinute()
    assert w.add(10, 1000.0) == 10
    assert w.add(5, 1001.0) == 15          # same 5-s slot
    assert w.add(1, 1030.0) == 16          # new slot, old ones still inside the minute
    assert w.add(0, 1059.0) == 16
    assert w.add(2, 1062.0) == 3           # the 1000-1004 slot has left the window
    assert w.add(0, 1200.0) == 0           # everything has left
