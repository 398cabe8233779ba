"""An Ollama server as the gateway's upstream, over Ollama's own API: real recorded
Ollama answers replayed byte for byte (no Ollama server runs here), the official openai
and ollama SDKs as clients."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.support.ollama_replay import OllamaReplayServer
from tinyllm.metrics import MetricsCollector
from tinyllm.serve.config import parse_config

from .conftest import gateway, sample

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def replay() -> Iterator[OllamaReplayServer]:
    with OllamaReplayServer() as server:
        yield server


@pytest.fixture
def url(replay: OllamaReplayServer, default_collector: MetricsCollector) -> Iterator[str]:
    config = parse_config(f"models:\n  - name: llama\n    provider: ollama\n"
                          f"    base_url: {replay.url}\n    model: llama3\n")
    with gateway(config) as base:
        yield base


def test_the_openai_sdk_streams_from_ollama_with_its_counts(
    url: str, replay: OllamaReplayServer, default_collector: MetricsCollector,
) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(
            model="llama", messages=MESSAGES, stream=True, max_tokens=20, temperature=0,
            stream_options={"include_usage": True}))
        whole = client.chat.completions.create(model="llama", messages=MESSAGES)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is: 2"  # the recording's own words
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (18, 7)
    assert whole.choices[0].message.content == "The answer is: 2"
    assert whole.choices[0].finish_reason == "stop" and whole.model == "llama"
    sent = replay.bodies[0]
    assert sent["model"] == "llama3" and sent["stream"] is True
    assert sent["options"] == {"num_predict": 20, "temperature": 0}
    v = sample(default_collector)
    assert v("tinyllm_tokens_output_total", model="llama", graph="gateway") == 14
    assert v("tinyllm_requests_total", model="llama", graph="gateway",
             request_type="chat_stream") == 1


def test_the_ollama_sdk_gets_ollamas_own_timings_passed_through(url: str) -> None:
    final = list(ollama.Client(host=url).chat(model="llama", messages=MESSAGES,
                                               stream=True))[-1]
    # The recording's final line: load 8.4 s, prompt 4.5 s, eval 23.7 s.
    assert (final.load_duration, final.prompt_eval_duration, final.eval_duration) == (
        8402298769, 4548739000, 23725236000)
    assert (final.prompt_eval_count, final.eval_count) == (18, 7)


def test_generate_through_the_completions_api(url: str, replay: OllamaReplayServer) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
        answer = client.completions.create(model="llama", prompt="Describe a rabbit")
    assert answer.choices[0].text.startswith("Rabbits are small to medium-sized mammals")
    assert answer.usage is not None and answer.usage.completion_tokens == 64
    assert replay.bodies[0]["prompt"] == "Describe a rabbit"


def test_ollamas_errors_reach_the_client_with_their_status(
    url: str, replay: OllamaReplayServer,
) -> None:
    replay.script(replay.recorded_error(404))
    with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client, \
            pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="llama", messages=MESSAGES)
