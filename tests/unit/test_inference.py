"""Seed 002's API: InferenceContext, track_inference_request, track_token_generation, GPU."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from tinyllm.metrics import (
    InferenceContext,
    MetricsCollector,
    track_inference_request,
    track_token_generation,
    update_gpu_metrics,
)


def v(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


pytestmark = pytest.mark.usefixtures("default_collector")


def test_decorated_sync_and_async_functions() -> None:
    @track_inference_request(model="gpt4")
    def complete(prompt: str) -> str:
        return prompt.upper()

    @track_inference_request(model="gpt4")
    async def acomplete(prompt: str) -> str:
        await asyncio.sleep(0.01)
        return prompt

    assert complete("hi") == "HI"
    assert asyncio.run(acomplete("x")) == "x"
    assert complete.__name__ == "complete"
    assert v("tinyllm_inference_requests_total", model="gpt4", status="success") == 2
    assert v("tinyllm_inference_request_duration_seconds_count", model="gpt4") == 2
    # one observation, both vocabularies
    assert v("tinyllm_requests_total", model="gpt4", graph="default", request_type="generate") == 2
    dur = v("tinyllm_inference_request_duration_seconds_sum", model="gpt4")
    assert dur is not None and dur >= 0.01


def test_decorated_function_errors_are_classified_and_reraised() -> None:
    @track_inference_request(model="m")
    def slow() -> None:
        raise TimeoutError("deadline")

    @track_inference_request(model="m")
    async def oom() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TimeoutError, match="deadline"):
        slow()
    with pytest.raises(RuntimeError, match="out of memory"):
        asyncio.run(oom())
    assert v("tinyllm_inference_requests_total", model="m", status="timeout") == 1
    assert v("tinyllm_inference_requests_total", model="m", status="error") == 1
    assert v("tinyllm_inference_errors_total", model="m", error_type="timeout") == 1
    assert v("tinyllm_inference_errors_total", model="m", error_type="oom") == 1
    assert v("tinyllm_errors_total", model="m", graph="default", error_type="oom") == 1


def test_token_generation_sync_generator_counts_ttft_and_n_minus_1_gaps() -> None:
    @track_token_generation(model="gpt4")
    def stream(n: int) -> Iterator[str]:
        time.sleep(0.02)  # time to first token
        for i in range(n):
            if i:
                time.sleep(0.002)
            yield f"t{i}"

    assert list(stream(10)) == [f"t{i}" for i in range(10)]
    assert v("tinyllm_inference_ttft_seconds_count", model="gpt4") == 1
    ttft = v("tinyllm_inference_ttft_seconds_sum", model="gpt4")
    assert ttft is not None and 0.02 <= ttft < 1
    assert v("tinyllm_inference_inter_token_latency_seconds_count", model="gpt4") == 9
    gaps = v("tinyllm_inference_inter_token_latency_seconds_sum", model="gpt4")
    assert gaps is not None and gaps >= 9 * 0.002
    assert v("tinyllm_tokens_generated_total", model="gpt4") == 10
    assert v("tinyllm_tokens_per_request_count", model="gpt4") == 1
    assert v("tinyllm_tokens_per_request_bucket", model="gpt4", le="10.0") == 1
    assert v("tinyllm_tokens_per_request_bucket", model="gpt4", le="5.0") == 0
    tps = v("tinyllm_tokens_per_second", model="gpt4")
    assert tps is not None and 10 < tps < 10 / 0.02
    assert v("tinyllm_average_tokens_per_minute", model="gpt4") == 10
    assert v("tinyllm_tokens_output_total", model="gpt4", graph="default") == 10
    assert v("tinyllm_inference_requests_total", model="gpt4", status="success") == 1
    assert v("tinyllm_active_requests", model="gpt4", graph="default") == 0


def test_token_generation_async_generator() -> None:
    @track_token_generation(model="gpt4")
    async def stream(prompt: str) -> AsyncIterator[str]:
        for token in prompt.split():
            await asyncio.sleep(0.001)
            yield token

    async def consume() -> list[str]:
        return [t async for t in stream("a b c d")]

    assert asyncio.run(consume()) == ["a", "b", "c", "d"]
    assert v("tinyllm_tokens_generated_total", model="gpt4") == 4
    assert v("tinyllm_inference_inter_token_latency_seconds_count", model="gpt4") == 3
    assert v("tinyllm_requests_total", model="gpt4", graph="default", request_type="stream") == 1


def test_generator_error_is_recorded_with_tokens_so_far() -> None:
    @track_token_generation(model="m")
    def stream() -> Iterator[str]:
        yield "a"
        yield "b"
        raise ConnectionResetError("peer went away")

    got = []
    with pytest.raises(ConnectionResetError):
        for t in stream():
            got.append(t)
    assert got == ["a", "b"]
    assert v("tinyllm_inference_requests_total", model="m", status="error") == 1
    assert v("tinyllm_inference_errors_total", model="m", error_type="connection") == 1
    assert v("tinyllm_tokens_generated_total", model="m") == 2


def test_consumer_stopping_early_is_cancelled_not_an_error() -> None:
    @track_token_generation(model="m")
    def stream() -> Iterator[int]:
        yield from range(100)

    gen = stream()
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert v("tinyllm_inference_requests_total", model="m", status="cancelled") == 1
    assert not v("tinyllm_inference_requests_total", model="m", status="success")
    assert not v("tinyllm_errors_total", error_type="cancelled", model="m", graph="default")
    assert v("tinyllm_tokens_generated_total", model="m") == 3
    assert v("tinyllm_active_requests", model="m", graph="default") == 0
    # It did not run to its end: no latency, no tokens-per-request observation.
    assert not v("tinyllm_inference_request_duration_seconds_count", model="m")
    assert not v("tinyllm_tokens_per_request_count", model="m")


def test_a_cancelled_task_is_cancelled_and_the_observers_see_it() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from tinyllm.events import BufferedEventHandler, get_event_emitter
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.logging import capture_logs
    from tinyllm.metrics import MetricsCollector

    lc = get_lifecycle(MetricsCollector(registry=CollectorRegistry()))
    events = BufferedEventHandler()
    get_event_emitter().add_handler(events)

    async def slow() -> None:
        with lc.start("m", request_type="stream") as req:
            req.token()
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        with capture_logs() as logs:
            asyncio.run(main())
    finally:
        get_event_emitter().remove_handler(events)
    assert [entry["event"] for entry in logs] == ["llm_request_cancelled"]
    assert logs[0]["status"] == "cancelled" and "error" not in logs[0]
    assert not [e for e in events.get_events() if e.event_type == "llm.request.failed"]


def test_track_token_generation_rejects_plain_functions() -> None:
    with pytest.raises(TypeError, match="generator functions"):

        @track_token_generation(model="m")
        def not_a_generator() -> int:
            return 1


def test_inference_context_as_in_seed_002() -> None:
    # Seed 002's block, with a fake client stream.
    async def fake_stream(prompt: str) -> AsyncIterator[str]:
        for tok in prompt.split():
            await asyncio.sleep(0.001)
            yield tok

    async def generate_with_context(prompt: str, model: str = "gpt4") -> AsyncIterator[str]:
        with InferenceContext(model=model) as ctx:
            ctx.set_token_count(0)
            async for token in fake_stream(prompt):
                ctx.set_token_count(ctx.token_count + 1)
                ctx.record_inter_token_latency(0.001)
                yield token

    async def main() -> list[str]:
        return [t async for t in generate_with_context("one two three")]

    assert asyncio.run(main()) == ["one", "two", "three"]
    assert v("tinyllm_inference_ttft_seconds_count", model="gpt4") == 1
    assert v("tinyllm_inference_inter_token_latency_seconds_count", model="gpt4") == 3
    assert v("tinyllm_tokens_generated_total", model="gpt4") == 3
    assert v("tinyllm_inference_requests_total", model="gpt4", status="success") == 1


def test_inference_context_async_with_and_error() -> None:
    async def main() -> None:
        async with InferenceContext(model="m") as ctx:
            ctx.record_input_tokens(12)
            ctx.set_token_count(4)
            raise TimeoutError

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert v("tinyllm_inference_requests_total", model="m", status="timeout") == 1
    assert v("tinyllm_tokens_input_total", model="m", graph="default") == 12
    assert v("tinyllm_tokens_generated_total", model="m") == 4


def test_inference_context_validates_and_requires_entering() -> None:
    ctx = InferenceContext(model="m")
    with pytest.raises(RuntimeError, match="not entered"):
        ctx.set_token_count(1)
    with InferenceContext(model="m") as ctx:
        with pytest.raises(ValueError, match="count"):
            ctx.set_token_count(-1)
        with pytest.raises(ValueError, match="seconds"):
            ctx.record_inter_token_latency(float("nan"))


def test_update_gpu_metrics_sets_every_gauge(default_collector: MetricsCollector) -> None:
    update_gpu_metrics(model="gpt4", gpu_id=0, used_bytes=6e9, reserved_bytes=8e9, utilization=75)
    labels = {"model": "gpt4", "gpu_id": "0"}
    assert v("tinyllm_gpu_memory_used_bytes", **labels) == 6e9
    assert v("tinyllm_gpu_memory_reserved_bytes", **labels) == 8e9
    assert v("tinyllm_gpu_utilization_percent", **labels) == 75
    assert v("tinyllm_memory_efficiency_ratio", **labels) == 0.75


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"utilization": 101}, "utilization"),
        ({"utilization": -1}, "utilization"),
        ({"used_bytes": -1}, "used_bytes"),
        ({"reserved_bytes": float("inf")}, "reserved_bytes"),
    ],
)
def test_update_gpu_metrics_rejects_bad_values_without_half_applying(
    kwargs: dict[str, float], argument: str
) -> None:
    args = {"used_bytes": 1.0, "reserved_bytes": 2.0, "utilization": 50.0, **kwargs}
    with pytest.raises(ValueError, match=argument):
        update_gpu_metrics("m", 1, **args)
    assert v("tinyllm_gpu_memory_used_bytes", model="m", gpu_id="1") is None
