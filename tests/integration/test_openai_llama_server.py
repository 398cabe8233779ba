"""The OpenAI client against a real OpenAI-compatible server: llama-cpp-python's own
(``python -m llama_cpp.server``) serving the embedded model's GGUF on a free port (the
``llama_server`` fixture)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.errors import ModelError
from tinyllm.metrics import MetricsCollector
from tinyllm.models import OpenAIClient
from tinyllm.resilience import RetryPolicy

PROMPT = "Question: What is 2+2?\nAnswer:"


@pytest.fixture(scope="module")
def server(llama_server: str) -> str:
    return llama_server


@pytest.fixture
def fresh() -> tuple[CollectorRegistry, MetricsCollector]:
    registry = CollectorRegistry()
    return registry, MetricsCollector(registry=registry)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.integration
@pytest.mark.parametrize("api", ["chat", "completions"])
def test_generate_takes_usage_from_the_server(
        server: str, fresh: tuple[CollectorRegistry, MetricsCollector], api: str) -> None:
    registry, collector = fresh
    client = OpenAIClient(server, "gemma3-270m", api=api, collector=collector,  # type: ignore[arg-type]
                          breaker=False)
    done = client.generate(PROMPT, max_tokens=6, temperature=0)
    assert done.provider == "openai" and done.text
    assert done.input_tokens and 1 <= (done.output_tokens or 0) <= 6
    assert done.finish_reason in ("stop", "length")
    m = {"model": "gemma3-270m", "graph": "default"}
    assert _value(registry, "tinyllm_tokens_output_total", **m) == done.output_tokens
    assert _value(registry, "tinyllm_tokens_input_total", **m) == done.input_tokens
    assert _value(registry, "tinyllm_inference_ttft_seconds_count", model="gemma3-270m") == 0


@pytest.mark.integration
def test_stream_counts_one_token_per_chunk(
        server: str, fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    registry, collector = fresh
    client = OpenAIClient(server, "gemma3-270m", api="completions", collector=collector,
                          breaker=False)
    stream = client.stream(PROMPT, max_tokens=5, temperature=0)
    pieces = list(stream)
    done = stream.completion
    assert done is not None and "".join(pieces) == done.text
    # llama.cpp's server ignores include_usage: tokens are the counted chunks.
    assert done.output_tokens == len([p for p in pieces if p])
    assert _value(registry, "tinyllm_inference_ttft_seconds_count", model="gemma3-270m") == 1
    client.close()


@pytest.mark.integration
def test_server_errors_are_classified_and_accounted(
        server: str, fresh: tuple[CollectorRegistry, MetricsCollector]) -> None:
    registry, collector = fresh
    client = OpenAIClient(server, "gemma3-270m", collector=collector, breaker=False,
                          retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ModelError) as caught:
        client.generate(messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                        top_k="lots")  # the server validates its own fields: 422
    # llama.cpp's server answers a body it cannot validate with HTTP 500 (not 422), so
    # it is classified as the server's error; its own message is carried to the caller.
    assert caught.value.error_type == "server_error"
    assert caught.value.status_code == 500
    assert server in str(caught.value) and "top_k" in str(caught.value)
    ok = _value(registry, "tinyllm_inference_requests_total", model="gemma3-270m",
                status="success")
    bad = _value(registry, "tinyllm_inference_requests_total", model="gemma3-270m",
                 status="error")
    assert (ok, bad) == (0, 1)


def test_the_gateway_in_front_of_llama_cpps_server_counts_tokens_it_never_reports(
    server: str,
) -> None:
    # llama.cpp's server ignores stream_options.include_usage: the gateway's token
    # metrics come from the chunks it relayed, one token each.
    import openai
    from tests.support.servers import uvicorn_server

    from tinyllm.metrics import get_metrics_collector, reset_metrics_collector
    from tinyllm.resilience import reset_circuit_breakers
    from tinyllm.serve.app import Gateway
    from tinyllm.serve.config import parse_config

    reset_metrics_collector()
    reset_circuit_breakers()
    config = parse_config(f"models:\n  - name: llama\n    provider: openai\n"
                          f"    base_url: {server}\n    model: gemma3-270m\n")
    try:
        with uvicorn_server(Gateway(config)) as url, \
                openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "What is 2+2?"}],
                max_tokens=8, temperature=0, stream=True)
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            assert "".join(pieces)
            assert all(c.model == "llama" for c in client.chat.completions.create(
                model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                stream=True))
        registry = get_metrics_collector().registry
        counted = registry.get_sample_value("tinyllm_tokens_output_total",
                                            {"model": "llama", "graph": "gateway"})
        assert counted is not None and counted >= len([p for p in pieces if p])
    finally:
        reset_metrics_collector()
