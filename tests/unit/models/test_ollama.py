"""``OllamaClient`` against recorded real Ollama responses, replayed over a real socket.

The recordings (tests/fixtures/ollama, sources in its README) are what real Ollama
servers sent; the expected text and counts below are read from them or quoted from them,
so a change in how the client reads Ollama's fields shows up here.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.support.fault_server import Reply
from tests.support.ollama_replay import FIXTURES, OllamaReplayServer, read_recording
from tinyllm.errors import ModelError
from tinyllm.metrics import MetricsCollector
from tinyllm.models import OllamaClient
from tinyllm.resilience import CircuitBreaker, RetryPolicy

MODEL = "granite3.3:2b"
ONE_TRY = RetryPolicy(max_attempts=1)


@pytest.fixture
def replay() -> Iterator[OllamaReplayServer]:
    with OllamaReplayServer() as server:
        yield server


@pytest.fixture
def client(replay: OllamaReplayServer, collector: MetricsCollector) -> Iterator[OllamaClient]:
    ollama = OllamaClient(replay.url, MODEL, collector=collector, breaker=False, retry=ONE_TRY)
    yield ollama
    ollama.close()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    return sum(
        s.value for family in registry.collect() for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def assert_accounting(registry: CollectorRegistry) -> None:
    """Every request started ended exactly once, and every failed one counted one error."""
    started = total(registry, "tinyllm_requests_total")
    ended = total(registry, "tinyllm_inference_requests_total")
    failed = (total(registry, "tinyllm_inference_requests_total", status="error")
              + total(registry, "tinyllm_inference_requests_total", status="timeout"))
    assert started == ended
    assert total(registry, "tinyllm_errors_total") == failed
    assert total(registry, "tinyllm_active_requests") == 0


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_recording(name).splitlines()]


def recorded_text(name: str, chat: bool) -> str:
    return "".join((o["message"]["content"] if chat else o["response"]) for o in recorded(name))


# -- the recordings themselves ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.*json")))
def test_recordings_are_kept_in_ollamas_wire_format(name: str) -> None:
    data = read_recording(name)
    lines = data.decode().split("\n")
    if name.endswith(".ndjson"):  # a stream: every line ends in "\n"
        assert lines[-1] == "" and len(lines) > 2
        lines = lines[:-1]
    else:  # a whole answer or an error: one object, no trailing newline
        assert len(lines) == 1
    for line in lines:
        obj = json.loads(line)
        go = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            go = go.replace(raw, escaped)
        assert line == go  # compact, keys in the recorded order, Go's escaping


# -- /api/generate ---------------------------------------------------------------------


def test_stream_prompt_replays_the_recording_with_ollamas_counts(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    stream = client.stream("Describe a rabbit in 2 short sentences", system="Be brief.",
                           max_tokens=64, temperature=0.2, top_p=0.9, seed=7, stop="\n\n")
    pieces = list(stream)

    lines = recorded("generate_stream.ndjson")
    assert "".join(pieces) == recorded_text("generate_stream.ndjson", chat=False)
    assert "".join(pieces).startswith("Rabbits are small to medium-sized mammals")
    text_lines = [o for o in lines if o["response"]]
    assert len(pieces) == len(text_lines) == 63
    done = stream.completion
    assert done is not None
    # eval_count (64: the stop token too) wins over the 63 counted chunks.
    assert (done.input_tokens, done.output_tokens) == (51, 64) == (
        lines[-1]["prompt_eval_count"], lines[-1]["eval_count"])
    assert done.finish_reason == "stop" and done.ttft is not None and done.ttft > 0

    assert replay.bodies == [{
        "model": MODEL, "stream": True, "prompt": "Describe a rabbit in 2 short sentences",
        "system": "Be brief.",
        "options": {"num_predict": 64, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                    "stop": ["\n\n"]},
    }]
    assert value(registry, "tinyllm_requests_total", model=MODEL, graph="default",
                 request_type="stream") == 1
    assert value(registry, "tinyllm_inference_requests_total", model=MODEL,
                 status="success") == 1
    assert value(registry, "tinyllm_tokens_input_total", model=MODEL, graph="default") == 51
    assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph="default") == 64
    assert value(registry, "tinyllm_tokens_generated_total", model=MODEL) == 64
    assert value(registry, "tinyllm_inference_ttft_seconds_count", model=MODEL) == 1
    assert value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=MODEL) == 63 - 1
    # load_duration 1158842800 ns: a cold load, observed once, in seconds.
    assert value(registry, "tinyllm_model_load_duration_seconds_count", model=MODEL) == 1
    assert value(registry, "tinyllm_model_load_duration_seconds_sum",
                 model=MODEL) == pytest.approx(1.1588428)
    assert_accounting(registry)


def test_generate_prompt_reads_the_whole_recorded_answer(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    done = client.generate("Describe a rabbit in 2 short sentences")

    (answer,) = recorded("generate.json")
    assert done.text == answer["response"]
    assert done.text.startswith("A rabbit is a small, furry animal")
    assert (done.input_tokens, done.output_tokens, done.finish_reason) == (28, 25, "stop")
    assert done.ttft is None  # nothing was seen arriving token by token
    assert replay.bodies == [{"model": MODEL, "stream": False,
                              "prompt": "Describe a rabbit in 2 short sentences"}]
    assert value(registry, "tinyllm_requests_total", model=MODEL, graph="default",
                 request_type="generate") == 1
    assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph="default") == 25
    assert value(registry, "tinyllm_inference_ttft_seconds_count", model=MODEL) == 0
    assert value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=MODEL) == 0
    assert value(registry, "tinyllm_model_load_duration_seconds_sum",
                 model=MODEL) == pytest.approx(2.1757011)
    assert_accounting(registry)


def test_thinking_chunks_count_as_generated_tokens_but_not_as_text(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    replay.use("/api/generate", stream=True, recording="generate_thinking_stream.ndjson")
    stream = client.stream("Describe a rabbit in 3 words")
    text = "".join(stream)

    lines = recorded("generate_thinking_stream.ndjson")
    thinking = [o for o in lines if o.get("thinking")]
    answering = [o for o in lines if o["response"]]
    assert (len(thinking), len(answering)) == (86, 6)
    assert text == "Fluffy, swift, curious" == recorded_text(
        "generate_thinking_stream.ndjson", chat=False)
    done = stream.completion
    assert done is not None and (done.input_tokens, done.output_tokens) == (81, 102)
    # TTFT is the first generated token, a thinking one; every thinking or answer chunk
    # is one token for the inter-token histogram; eval_count still wins for the totals.
    assert value(registry, "tinyllm_inference_ttft_seconds_count", model=MODEL) == 1
    assert value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=MODEL) == 86 + 6 - 1
    assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph="default") == 102
    # ollama.com's hosted server reports no load_duration: nothing to observe.
    assert value(registry, "tinyllm_model_load_duration_seconds_count", model=MODEL) == 0
    assert_accounting(registry)


# -- /api/chat ---------------------------------------------------------------------------


def test_stream_chat_replays_the_recording(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    messages = [{"role": "user", "content": "Reply the result of 1+1"}]
    stream = client.stream(messages=messages, temperature=0.7)
    pieces = list(stream)

    assert pieces == ["The", " answer", " is", ":", " ", "2"]
    assert "".join(pieces) == recorded_text("chat_stream.ndjson", chat=True)
    done = stream.completion
    assert done is not None
    assert (done.input_tokens, done.output_tokens, done.finish_reason) == (18, 7, "stop")
    assert replay.exchanges[0].path == "/api/chat"
    assert replay.bodies == [{"model": MODEL, "stream": True, "messages": messages,
                              "options": {"temperature": 0.7}}]
    assert value(registry, "tinyllm_inference_inter_token_latency_seconds_count",
                 model=MODEL) == 5
    assert value(registry, "tinyllm_model_load_duration_seconds_sum",
                 model=MODEL) == pytest.approx(8.402298769)
    assert_accounting(registry)


def test_generate_chat_with_a_warm_model_observes_no_load(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "The secret word is RABBIT. Understand?"},
    ]
    done = client.generate(messages=messages, max_tokens=16)

    assert done.text == "Understood."
    assert (done.input_tokens, done.output_tokens) == (44, 4)
    assert replay.bodies == [{"model": MODEL, "stream": False, "messages": messages,
                              "options": {"num_predict": 16}}]
    # load_duration 63843375 ns: a warm model, below the 0.1 s that counts as a load.
    assert value(registry, "tinyllm_model_load_duration_seconds_count", model=MODEL) == 0
    assert_accounting(registry)


def test_a_prompt_with_a_system_message_goes_to_chat_as_messages(
        client: OllamaClient, replay: OllamaReplayServer) -> None:
    client.generate(messages=[{"role": "user", "content": "hi"}], system="Be brief.")
    assert replay.bodies[0]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_client_options_keep_alive_and_extra_fields_reach_ollama(
        replay: OllamaReplayServer, collector: MetricsCollector) -> None:
    with OllamaClient(replay.url, MODEL, collector=collector, breaker=False, retry=ONE_TRY,
                      options={"num_ctx": 2048, "temperature": 1.0},
                      keep_alive="10m") as ollama:
        ollama.generate("hi", temperature=0.0, format="json")
    body = replay.bodies[0]
    # The call's temperature wins over the client's default options.
    assert body["options"] == {"num_ctx": 2048, "temperature": 0.0}
    assert (body["keep_alive"], body["format"]) == ("10m", "json")


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
def test_model_not_found_is_a_bad_request_that_is_not_retried(
        replay: OllamaReplayServer, collector: MetricsCollector, registry: CollectorRegistry,
        streamed: bool) -> None:
    replay.script(OllamaReplayServer.recorded_error(404), OllamaReplayServer.recorded_error(404))
    breaker = CircuitBreaker("ollama-404", failure_threshold=1, collector=collector)
    with OllamaClient(replay.url, "custom-phi3-32k-Q4_K_M", collector=collector,
                      breaker=breaker, retry=RetryPolicy(max_attempts=3, base_delay=0.001)
                      ) as ollama, pytest.raises(ModelError) as caught:
        if streamed:
            list(ollama.stream("hi"))
        else:
            ollama.generate("hi")

    error = caught.value
    assert (error.error_type, error.status_code) == ("bad_request", 404)
    assert "model 'custom-phi3-32k-Q4_K_M' not found" in str(error)
    assert f"{replay.url}/api/generate" in str(error)
    assert replay.requests == 1  # a 404 is not worth another try
    assert breaker.state == "closed" and breaker.failure_count == 0  # the backend is up
    model = "custom-phi3-32k-Q4_K_M"
    assert value(registry, "tinyllm_errors_total", error_type="bad_request", model=model,
                 graph="default") == 1
    assert value(registry, "tinyllm_inference_requests_total", model=model,
                 status="error") == 1
    assert value(registry, "tinyllm_inference_retries_total", model=model) == 0
    assert_accounting(registry)


def test_an_error_line_mid_stream_is_a_server_error(
        client: OllamaClient, replay: OllamaReplayServer, registry: CollectorRegistry) -> None:
    # Ollama reports a failure after streaming began as a line of its own.
    first = read_recording("generate_stream.ndjson").splitlines(keepends=True)[0]
    replay.script(Reply(body=(first, b'{"error":"an error was encountered while running '
                                     b'the model: unexpected EOF"}\n'),
                        content_type="application/x-ndjson"))
    stream = client.stream("hi")
    with pytest.raises(ModelError) as caught:
        for _ in stream:
            pass
    assert caught.value.error_type == "server_error"
    assert "unexpected EOF" in str(caught.value)
    assert value(registry, "tinyllm_errors_total", error_type="server_error", model=MODEL,
                 graph="default") == 1
    assert_accounting(registry)


# -- labels, async, early close --------------------------------------------------------------


def test_set_graph_context_labels_the_requests(
        client: OllamaClient, registry: CollectorRegistry) -> None:
    client.set_graph_context("rag")
    client.generate("hi")
    client.generate("hi", graph="triage")  # a per-call graph wins

    for graph in ("rag", "triage"):
        assert value(registry, "tinyllm_requests_total", model=MODEL, graph=graph,
                     request_type="generate") == 1
        assert value(registry, "tinyllm_tokens_output_total", model=MODEL, graph=graph) == 25
    assert value(registry, "tinyllm_requests_total", model=MODEL, graph="default",
                 request_type="generate") == 0
    with pytest.raises(ValueError, match="graph"):
        client.set_graph_context("")
    assert_accounting(registry)


def test_agenerate_and_astream_answer_without_blocking_the_loop(
        client: OllamaClient, registry: CollectorRegistry) -> None:
    async def main() -> tuple[str, list[str], int | None]:
        done = await client.agenerate("Describe a rabbit in 2 short sentences")
        stream = client.astream(messages=[{"role": "user", "content": "1+1?"}])
        pieces = [piece async for piece in stream]
        assert stream.completion is not None
        return done.text, pieces, stream.completion.output_tokens

    text, pieces, out = asyncio.run(main())
    assert text == recorded("generate.json")[0]["response"]
    assert "".join(pieces) == "The answer is: 2" and out == 7
    assert value(registry, "tinyllm_requests_total", model=MODEL, graph="default",
                 request_type="stream") == 1
    assert_accounting(registry)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off: what a test sees is what the code does, not
    what a collection that happened to run in between cleaned up."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


@pytest.mark.usefixtures("no_cyclic_gc")
def test_a_stream_closed_early_ends_cancelled_and_frees_the_connection(
        collector: MetricsCollector, registry: CollectorRegistry) -> None:
    with OllamaReplayServer(line_delay=0.05) as slow, \
            OllamaClient(slow.url, MODEL, collector=collector, breaker=False,
                         retry=ONE_TRY) as ollama:
        stream = ollama.stream("Describe a rabbit in 2 short sentences")
        assert [next(stream) for _ in range(3)] == ["R", "ab", "bits"]
        stream.close()

        assert stream.completion is None
        # Cancelled: its own outcome, never an error.
        assert value(registry, "tinyllm_errors_total", error_type="cancelled", model=MODEL,
                     graph="default") == 0
        assert value(registry, "tinyllm_inference_requests_total", model=MODEL,
                     status="cancelled") == 1
        # The client hung up at once (Ollama stops generating when it does): the server
        # sees it long before its 60 remaining lines (3 s at this pace) are written.
        assert slow.hung_up.wait(5.0), "the closed stream still holds its connection"
        assert not slow.exchanges[0].completed
        # And the client is still usable: the pool has a free connection.
        assert ollama.generate("again").output_tokens == 25
        assert slow.requests == 2
    assert_accounting(registry)
