"""Faults over real sockets, for both HTTP clients (``OllamaClient`` and ``OpenAIClient``).

A scripted server (tests/support/fault_server.py) refuses, fails, rate-limits, stalls,
trickles, garbles and hangs up; each test checks the error the caller gets (its
``error_type`` and message), what reached the server, the retries, the circuit breaker,
and that the request accounting stays exact (every request started ends once, as a
success, an error or a timeout, and every failure counts one error).

Time limits are small (tenths of a second) and the server's stalls long (seconds), so a
limit that works ends the call long before the stall would; no test asserts a duration.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import tinyllm.models._base
from tests.support.fault_server import DONE, FaultServer, Reply, ndjson, sse
from tests.support.servers import free_port
from tinyllm.errors import CircuitOpenError, ModelError
from tinyllm.metrics import MetricsCollector
from tinyllm.models import ModelClient, OllamaClient, OpenAIClient
from tinyllm.resilience import CircuitBreaker, RetryPolicy, Timeouts, retry_call

MODEL = "fault-model"
TEXTS = ("Four", " is", " the", " answer", ".")
QUICK = Timeouts(connect=2.0, read=2.0, total=10.0, token_gap=2.0)
ONE_TRY = RetryPolicy(max_attempts=1)


def fast_retries(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, base_delay=0.001, max_delay=0.002)


# -- the two dialects --------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one client's server speaks: its path, a good answer, a failure body."""

    name: str
    path: str
    make: Callable[..., ModelClient]
    stream_pieces: Callable[[tuple[str, ...]], tuple[bytes, ...]]
    whole_body: Callable[[str], bytes]
    stream_type: str
    error_body: Callable[[str], bytes]

    def client(self, url: str, collector: MetricsCollector, **options: Any) -> ModelClient:
        options.setdefault("timeouts", QUICK)
        options.setdefault("retry", ONE_TRY)
        options.setdefault("breaker", False)
        return self.make(url, collector=collector, **options)

    def stream_reply(self, texts: tuple[str, ...] = TEXTS, **how: Any) -> Reply:
        return Reply(body=self.stream_pieces(texts), content_type=self.stream_type, **how)

    def whole_reply(self, text: str = "".join(TEXTS), **how: Any) -> Reply:
        return Reply(body=self.whole_body(text), **how)

    def error_reply(self, status: int, message: str, **how: Any) -> Reply:
        return Reply(status=status, body=self.error_body(message), **how)


def _ollama_pieces(texts: tuple[str, ...]) -> tuple[bytes, ...]:
    lines: list[dict[str, Any]] = [
        {"model": MODEL, "created_at": "2025-08-03T18:55:00.3928331Z", "response": t,
         "done": False} for t in texts]
    lines.append({"model": MODEL, "created_at": "2025-08-03T18:55:01.000401Z", "response": "",
                  "done": True, "done_reason": "stop", "prompt_eval_count": 9,
                  "eval_count": len(texts) + 1})
    return ndjson(*lines)


def _ollama_whole(text: str) -> bytes:
    return json.dumps({"model": MODEL, "created_at": "2025-08-03T18:54:41.2149398Z",
                       "response": text, "done": True, "done_reason": "stop",
                       "prompt_eval_count": 9, "eval_count": 6}).encode()


def _openai_pieces(texts: tuple[str, ...]) -> tuple[bytes, ...]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1735689600,
                "model": MODEL, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]}

    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": t}) for t in texts]
    events.append(chunk({}, "stop"))
    events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                   "created": 1735689600, "model": MODEL, "choices": [],
                   "usage": {"prompt_tokens": 9, "completion_tokens": len(texts) + 1,
                             "total_tokens": len(texts) + 10}})
    events.append(DONE)
    return sse(*events)


def _openai_whole(text: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1735689600,
        "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
    }).encode()


OLLAMA = Dialect(
    "ollama", "/api/generate",
    lambda url, **o: OllamaClient(url, MODEL, **o),
    _ollama_pieces, _ollama_whole, "application/x-ndjson",
    lambda message: json.dumps({"error": message}).encode(),
)
OPENAI = Dialect(
    "openai", "/v1/chat/completions",
    lambda url, **o: OpenAIClient(url + "/v1", MODEL, **o),
    _openai_pieces, _openai_whole, "text/event-stream",
    lambda message: json.dumps({"error": {"message": message, "type": "server_error"}}).encode(),
)


@pytest.fixture(params=[OLLAMA, OPENAI], ids=lambda d: d.name)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault:
        yield fault


@pytest.fixture(autouse=True)
def exact_accounting(registry: CollectorRegistry) -> Iterator[None]:
    """After every scenario: requests = successes + errors + timeouts, and errors match."""
    yield
    started = total(registry, "tinyllm_requests_total")
    ended = total(registry, "tinyllm_inference_requests_total")
    failed = (total(registry, "tinyllm_inference_requests_total", status="error")
              + total(registry, "tinyllm_inference_requests_total", status="timeout"))
    assert started == ended, "a request started but never ended"
    assert total(registry, "tinyllm_errors_total") == failed
    assert total(registry, "tinyllm_inference_errors_total") == failed
    assert total(registry, "tinyllm_active_requests") == 0


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        s.value for family in registry.collect() for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def errors(registry: CollectorRegistry, error_type: str) -> float:
    return total(registry, "tinyllm_errors_total", error_type=error_type, model=MODEL)


def outcome(registry: CollectorRegistry, status: str) -> float:
    return total(registry, "tinyllm_inference_requests_total", model=MODEL, status=status)


def retries(registry: CollectorRegistry) -> float:
    return total(registry, "tinyllm_inference_retries_total", model=MODEL)


def drain(stream: Iterator[str], got: list[str]) -> None:
    for piece in stream:
        got.append(piece)


# -- the good path, as a baseline for the faults ----------------------------------------------


def test_a_good_server_answers_both_ways(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(dialect.stream_reply(), dialect.whole_reply())
    with dialect.client(server.url, collector) as client:
        stream = client.stream("What is 2+2?")
        assert list(stream) == list(TEXTS)
        assert client.generate("What is 2+2?").text == "".join(TEXTS)
    assert [e.path for e in server.exchanges] == [dialect.path] * 2
    assert outcome(registry, "success") == 2


# -- connection refused -------------------------------------------------------------------------


def test_connection_refused_is_a_connection_error_naming_the_url(
        dialect: Dialect, collector: MetricsCollector, registry: CollectorRegistry) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with dialect.client(url, collector, retry=fast_retries(2)) as client, \
            pytest.raises(ModelError) as caught:
        client.generate("hi")
    assert caught.value.error_type == "connection"
    assert f"{url}{dialect.path}" in str(caught.value)
    assert retries(registry) == 1  # connection errors are worth another try
    assert errors(registry, "connection") == 1 and outcome(registry, "error") == 1


# -- 5xx -------------------------------------------------------------------------------------------


def test_a_500_is_retried_and_a_later_answer_wins(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(dialect.error_reply(500, "llama runner process has terminated"),
                  dialect.error_reply(502, "bad gateway"),
                  dialect.whole_reply())
    with dialect.client(server.url, collector, retry=fast_retries(3)) as client:
        assert client.generate("hi").text == "".join(TEXTS)
    assert server.requests == 3
    assert retries(registry) == 2
    assert outcome(registry, "success") == 1 and errors(registry, "server_error") == 0


def test_500s_to_the_last_attempt_end_as_one_server_error(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.fallback = dialect.error_reply(500, "llama runner process has terminated")
    with dialect.client(server.url, collector, retry=fast_retries(3)) as client, \
            pytest.raises(ModelError) as caught:
        list(client.stream("hi"))
    error = caught.value
    assert (error.error_type, error.status_code) == ("server_error", 500)
    assert "llama runner process has terminated" in str(error)
    assert f"{server.url}{dialect.path}" in str(error)
    assert server.requests == 3 and retries(registry) == 2
    assert errors(registry, "server_error") == 1 and outcome(registry, "error") == 1


# -- 429 -------------------------------------------------------------------------------------------


def test_a_429_carries_retry_after_and_is_rate_limited(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(dialect.error_reply(429, "Rate limit reached", headers={"Retry-After": "1"}))
    with dialect.client(server.url, collector) as client, pytest.raises(ModelError) as caught:
        client.generate("hi")
    error = caught.value
    assert (error.error_type, error.status_code, error.retry_after) == ("rate_limited", 429, 1.0)
    assert errors(registry, "rate_limited") == 1


def test_the_retry_after_a_429_waits_at_least_retry_after(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    # The client has no sleep seam of its own; the real retry_call gets a recording sleep,
    # so the test checks the wait without spending it.
    slept: list[float] = []
    monkeypatch.setattr(tinyllm.models._base, "retry_call",
                        functools.partial(retry_call, sleep=slept.append))
    server.script(dialect.error_reply(429, "Rate limit reached", headers={"Retry-After": "1"}),
                  dialect.whole_reply())
    breaker = CircuitBreaker(f"{dialect.name}-429", failure_threshold=1, collector=collector)
    with dialect.client(server.url, collector, retry=fast_retries(2), breaker=breaker) as client:
        assert client.generate("hi").text == "".join(TEXTS)
    assert len(slept) == 1 and slept[0] >= 1.0  # the backoff alone would be ~0.001 s
    assert server.requests == 2 and retries(registry) == 1
    assert breaker.state == "closed"  # a 429 is a healthy backend pushing back


# -- stalls and trickles ---------------------------------------------------------------------------


def test_a_stall_mid_stream_longer_than_token_gap_is_a_timeout(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(dialect.stream_reply(stall_between=30.0))
    got: list[str] = []
    with dialect.client(server.url, collector, timeouts=Timeouts(token_gap=0.2),
                        retry=fast_retries(3)) as client, pytest.raises(ModelError) as caught:
        drain(client.stream("hi"), got)
    assert caught.value.error_type == "timeout"
    assert "next token" in str(caught.value) and server.url in str(caught.value)
    # The answer had begun (OpenAI's first piece is the empty role chunk): no retry.
    assert server.requests == 1 and retries(registry) == 0
    assert outcome(registry, "timeout") == 1 and errors(registry, "timeout") == 1


def test_a_stall_before_the_first_byte_longer_than_read_is_a_timeout(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.fallback = dialect.whole_reply(stall_before=30.0)
    with dialect.client(server.url, collector, timeouts=Timeouts(read=0.2),
                        retry=fast_retries(2)) as client, pytest.raises(ModelError) as caught:
        client.generate("hi")
    assert caught.value.error_type == "timeout"
    assert "waiting for the answer" in str(caught.value)
    assert server.requests == 2 and retries(registry) == 1  # nothing arrived: retried
    assert outcome(registry, "timeout") == 1


def test_a_stream_waits_for_its_first_byte_as_long_as_token_gap(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    # On a stream every wait, the first one included, is bounded by token_gap (the read
    # limit is for whole answers): a model still loading must fit in token_gap.
    server.script(dialect.stream_reply(stall_before=30.0))
    with dialect.client(server.url, collector,
                        timeouts=Timeouts(read=60.0, token_gap=0.2)) as client, \
            pytest.raises(ModelError) as caught:
        list(client.stream("hi"))
    assert caught.value.error_type == "timeout"
    assert outcome(registry, "timeout") == 1


def test_total_caps_a_server_that_trickles_lines(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    # Each line comes well inside token_gap, but 40 of them take 2 s: total stops it.
    server.script(dialect.stream_reply(texts=("tick",) * 40, stall_between=0.05))
    got: list[str] = []
    with dialect.client(server.url, collector,
                        timeouts=Timeouts(token_gap=5.0, total=0.3)) as client, \
            pytest.raises(ModelError) as caught:
        drain(client.stream("hi"), got)
    assert caught.value.error_type == "timeout"
    assert "timeouts.total" in str(caught.value)
    assert len(got) < 40
    assert server.hung_up.wait(10.0) and not server.exchanges[0].completed
    assert outcome(registry, "timeout") == 1


def test_total_caps_a_server_that_trickles_one_line_byte_by_byte(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    # A whole answer sent a few bytes at a time: every read is quick, the line never
    # ends. total must end the call while the server is still sending (a server that
    # trickled for ever would otherwise hold the caller for ever).
    body = dialect.whole_body("".join(TEXTS))
    pieces = tuple(body[i:i + 8] for i in range(0, len(body), 8))
    server.script(Reply(body=pieces, framing="length", stall_between=0.05))
    with dialect.client(server.url, collector,
                        timeouts=Timeouts(read=5.0, total=0.3)) as client, \
            pytest.raises(ModelError) as caught:
        client.generate("hi")
    assert caught.value.error_type == "timeout"
    assert server.hung_up.wait(5.0), "the client read the whole trickle, past total"
    assert not server.exchanges[0].completed
    assert outcome(registry, "timeout") == 1


# -- garbage and hang-ups -----------------------------------------------------------------------


def test_a_malformed_line_mid_stream_is_a_server_error(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    good = dialect.stream_pieces(TEXTS)
    garbage = b"data: {not json\n\n" if dialect is OPENAI else b"{not json\n"
    server.script(Reply(body=(*good[:2], garbage, *good[2:]),
                        content_type=dialect.stream_type))
    got: list[str] = []
    with dialect.client(server.url, collector, retry=fast_retries(3)) as client, \
            pytest.raises(ModelError) as caught:
        drain(client.stream("hi"), got)
    assert caught.value.error_type == "server_error"
    assert "not a JSON object" in str(caught.value) and server.url in str(caught.value)
    assert server.requests == 1  # half an answer had gone out: not retried
    assert errors(registry, "server_error") == 1


def test_a_malformed_whole_answer_is_a_server_error(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(Reply(body=b"<html><body>502 Bad Gateway</body></html>",
                        content_type="text/html"))
    with dialect.client(server.url, collector) as client, pytest.raises(ModelError) as caught:
        client.generate("hi")
    assert caught.value.error_type == "server_error"
    assert errors(registry, "server_error") == 1


def test_a_connection_dropped_mid_stream_is_a_connection_error(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.script(dialect.stream_reply(close_after=3))
    got: list[str] = []
    with dialect.client(server.url, collector, retry=fast_retries(3)) as client, \
            pytest.raises(ModelError) as caught:
        drain(client.stream("hi"), got)
    assert caught.value.error_type == "connection"
    assert "broke" in str(caught.value) and server.url in str(caught.value)
    assert got and server.requests == 1
    assert errors(registry, "connection") == 1


def test_a_stream_cut_short_by_closing_the_connection_is_not_a_success(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    # Close-delimited framing (HTTP/1.0 servers, some proxies): the cut looks like the end
    # of the body, so only the protocol's own end marker (Ollama's "done" line, OpenAI's
    # "data: [DONE]") tells a whole answer from a truncated one.
    server.script(dialect.stream_reply(close_after=3, framing="close"))
    with dialect.client(server.url, collector) as client, pytest.raises(ModelError) as caught:
        list(client.stream("hi"))
    assert caught.value.error_type in ("connection", "server_error")
    assert outcome(registry, "success") == 0


@pytest.mark.parametrize("separator", ["\u2028", "\u0085"], ids=["U+2028", "U+0085"])
def test_unicode_line_separators_inside_json_strings_arrive_intact(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        separator: str) -> None:
    # JSON carries U+2028 and U+0085 raw inside strings (Go escapes U+2028 but not U+0085;
    # Python and Rust JSON writers escape neither), and models do emit them (U+0085 is a
    # cp1252 ellipsis decoded as Latin-1). Only "\n" ends an NDJSON or SSE line.
    texts = ("one", f"two{separator}three", " four")
    whole = "".join(texts)

    def raw(body: bytes) -> bytes:  # the separator unescaped, as those servers send it
        return body.replace(json.dumps(separator).strip('"').encode(), separator.encode())

    server.script(Reply(body=tuple(raw(p) for p in dialect.stream_pieces(texts)),
                        content_type=dialect.stream_type),
                  Reply(body=raw(dialect.whole_body(whole))))
    with dialect.client(server.url, collector) as client:
        assert "".join(client.stream("hi")) == whole
        assert client.generate("hi").text == whole


# -- the circuit breaker -------------------------------------------------------------------------


def test_the_breaker_opens_after_consecutive_failures_then_fails_fast(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.fallback = dialect.error_reply(503, "loading model")
    breaker = CircuitBreaker(f"{dialect.name}-breaker", failure_threshold=2,
                             reset_timeout=60.0, collector=collector)
    with dialect.client(server.url, collector, breaker=breaker) as client:
        for _ in range(2):
            with pytest.raises(ModelError) as caught:
                client.generate("hi")
            assert caught.value.error_type == "server_error"
        assert breaker.state == "open" and server.requests == 2

        with pytest.raises(CircuitOpenError) as fast:
            list(client.stream("hi"))
    assert fast.value.error_type == "circuit_open"
    assert f"{dialect.name}-breaker" in str(fast.value)
    assert server.requests == 2  # failed fast: nothing reached the server
    assert errors(registry, "server_error") == 2 and errors(registry, "circuit_open") == 1
    assert total(registry, "tinyllm_circuit_breaker_failures_total",
                 model=f"{dialect.name}-breaker") == 2
    assert total(registry, "tinyllm_circuit_breaker_state",
                 model=f"{dialect.name}-breaker") == 2  # open


def test_a_breaker_that_opens_during_retries_stops_them(
        dialect: Dialect, server: FaultServer, collector: MetricsCollector,
        registry: CollectorRegistry) -> None:
    server.fallback = dialect.error_reply(500, "boom")
    breaker = CircuitBreaker(f"{dialect.name}-retry-breaker", failure_threshold=2,
                             reset_timeout=60.0, collector=collector)
    with dialect.client(server.url, collector, breaker=breaker,
                        retry=fast_retries(5)) as client, \
            pytest.raises(CircuitOpenError):
        client.generate("hi")
    assert server.requests == 2  # the third attempt met an open breaker
    assert retries(registry) == 2
    assert errors(registry, "circuit_open") == 1 and outcome(registry, "error") == 1
