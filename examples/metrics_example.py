"""A simulated LLM service that exercises every tinyllm metric family.

Run it and look at what it exports::

    python examples/metrics_example.py --port 9090
    curl http://127.0.0.1:9090/metrics

``TINYLLM_METRICS_NAMESPACE=ryot`` renames every family (``ryot_inference_ttft_seconds``...).
Nothing here talks to a real model: "generation" is a generator that sleeps a few ms per
token. Each round serves ``--requests`` requests on a small thread pool through a chat or a
RAG graph, using each of the three inference APIs in turn (the ``track_token_generation``
decorator, ``InferenceContext`` and the ``track_inference_request`` decorator); the RAG graph
embeds its prompt through the collector API. One request per round to the flaky
model fails (a timeout, an out-of-memory, a CUDA error, in turn) and is retried, so error
series exist; queue, cache, batch, KV-cache and GPU figures are simulated alongside.

It runs until Ctrl-C / SIGTERM (or ``--duration`` seconds) and then exits 0.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.metrics import (
    InferenceContext,
    get_metrics_collector,
    start_metrics_server,
    track_inference_request,
    track_token_generation,
    update_gpu_metrics,
)
from tinyllm.pricing import ModelPrice, PriceTable, default_prices
from tinyllm.slo import Objectives, SLOConfig

MODELS = ("gemma3:270m", "qwen2.5:0.5b")
FLAKY = "qwen2.5:0.5b"  # runs on an over-committed GPU: fails now and then
EMBEDDER = "nomic-embed-text"
GRAPHS = ("chat", "rag")
PRIORITIES = ("high", "normal", "low")
PROMPTS = ("Summarise this ticket", "Translate to French: good morning", "Why is the sky blue?")
FAILURES = (  # one per round, in turn; classified as timeout, oom and cuda
    (TimeoutError, "upstream model timed out after 30s"),
    (MemoryError, "KV cache allocation failed"),
    (RuntimeError, "CUDA error: an illegal memory access was encountered"),
)
BREAKER_CYCLE = ("closed", "closed", "open", "half-open")  # the flaky model's breaker, per round
TOKEN_DELAY = 0.002  # seconds per generated token
WORKERS = 4

# What the simulated models cost and the latency promised for them, set before the first
# metric (an SLO's thresholds become bucket boundaries when the families are built);
# $TINYLLM_PRICES / $TINYLLM_SLO, when set, win. The flaky model has no price: it is
# counted as unpriced, never as free.
if not os.environ.get("TINYLLM_PRICES"):
    configure_prices(PriceTable({"gemma3:270m": ModelPrice(input=0.05, output=0.20)})
                     .layered_over(default_prices()))
if not os.environ.get("TINYLLM_SLO"):
    configure_slo(SLOConfig(Objectives(ttft=0.02, tpot=0.004, e2e=0.08, target=0.95)))

metrics = get_metrics_collector()


def fake_tokens(prompt: str, fail: BaseException | None = None) -> Iterator[str]:
    """The "model": 8-24 tokens, a few ms apart; ``fail`` is raised halfway through."""
    n = random.randint(8, 24)
    for i in range(n):
        time.sleep(TOKEN_DELAY * random.uniform(0.5, 2.0))
        if fail is not None and i == n // 2:
            raise fail
        yield f"tok{i} "


@functools.cache
def streamer(model: str, graph: str) -> Callable[..., Iterator[str]]:
    """The inference-server API's generator decorator: each yielded item is one token."""
    return track_token_generation(model=model, graph=graph)(fake_tokens)


def complete(prompt: str, fail: BaseException | None = None) -> str:
    """A plain (non-streaming) completion."""
    return "".join(fake_tokens(prompt, fail))


@functools.cache
def completer(model: str, graph: str) -> Callable[..., str]:
    """The inference-server API's request decorator: each call is one request."""
    return track_inference_request(model=model, graph=graph)(complete)


def via_stream(model: str, graph: str, prompt: str, fail: BaseException | None) -> str:
    return "".join(streamer(model, graph)(prompt, fail))


def via_context(model: str, graph: str, prompt: str, fail: BaseException | None) -> str:
    out = []
    with InferenceContext(model=model, graph=graph) as ctx:
        ctx.record_input_tokens(len(prompt.split()))
        ctx.set_token_count(0)
        last = time.perf_counter()
        for token in fake_tokens(prompt, fail):
            now = time.perf_counter()
            if ctx.token_count:
                ctx.record_inter_token_latency(now - last)
            ctx.set_token_count(ctx.token_count + 1)
            last = now
            out.append(token)
    return "".join(out)


def via_complete(model: str, graph: str, prompt: str, fail: BaseException | None) -> str:
    return completer(model, graph)(prompt, fail)


STYLES = (via_stream, via_context, via_complete)


def embed(graph: str, prompt: str, throttled: bool) -> None:
    """The RAG graph's embedding call, recorded through the collector API."""
    metrics.increment_request_count(model=EMBEDDER, graph=graph, request_type="embed")
    if throttled:  # the embedding API answered 429: count it, wait, go on without context
        metrics.increment_error_count(error_type="rate_limited", model=EMBEDDER, graph=graph)
        metrics.increment_node_error_count(node="retrieve", error_type="rate_limited", graph=graph)
        metrics.record_rate_limit_wait(wait_time=0.02, model=EMBEDDER)
        return
    if random.random() < 0.05:  # the shared cache (Redis) did not answer: no cache this time
        metrics.increment_cache_errors(cache_type="redis", operation="get")
    elif random.random() < 0.5:
        metrics.increment_cache_hit(cache_type="embedding")
        return
    else:
        metrics.increment_cache_miss(cache_type="embedding")
    with metrics.track_request_latency(model=EMBEDDER, graph=graph):
        time.sleep(0.003)
    metrics.record_tokens(input_tokens=len(prompt.split()), model=EMBEDDER, graph=graph)


def serve(i: int, round_no: int, fail: BaseException | None = None) -> None:
    """One request: queue, rate limiter, then the graph's nodes; the model runs in 'generate'."""
    model, graph = MODELS[i % 2], GRAPHS[(i // 2) % 2]
    style, priority = STYLES[(i // 4) % 3], PRIORITIES[i % 3]
    prompt = random.choice(PROMPTS)
    metrics.increment_queue_requests(priority=priority)
    metrics.record_queue_wait_time(wait_time=random.uniform(0.001, 0.3), priority=priority)
    metrics.record_rate_limit_wait(wait_time=random.uniform(0.0, 0.01), model=model)
    with metrics.track_graph_execution(graph=graph):
        with metrics.track_node_execution(node="router", graph=graph):
            metrics.increment_memory_operation(operation_type="get")
            hit = random.random() < 0.3
            (metrics.increment_cache_hit if hit else metrics.increment_cache_miss)("response")
        if graph == "rag":
            with metrics.track_node_execution(node="retrieve", graph=graph):
                embed(graph, prompt, throttled=i == 2 and round_no % 2 == 0)
        with metrics.track_node_execution(node="generate", graph=graph):
            style(model, graph, prompt, fail)
        metrics.increment_memory_operation(operation_type="add")


def serve_flaky(round_no: int) -> None:
    """The flaky model fails one request per round; the breaker counts it, the caller retries."""
    kind = round_no % len(FAILURES)
    i = 1 + 4 * kind  # a request index that sends FAILURES[kind] through STYLES[kind]
    error_class, message = FAILURES[kind]
    try:
        serve(i, round_no, fail=error_class(message))
    except (TimeoutError, MemoryError, RuntimeError):
        metrics.increment_circuit_breaker_failures(model=FLAKY)
        metrics.increment_retry_count(model=FLAKY)
        serve(i, round_no)


def run_round(pool: ThreadPoolExecutor, round_no: int, requests: int) -> None:
    for priority in PRIORITIES:
        metrics.set_queue_size(size=random.randint(0, 20), priority=priority)
    if round_no % 4 == 0:  # the low-priority queue overflows now and then
        metrics.increment_queue_rejections(priority="low")
    metrics.set_queue_active_workers(count=min(WORKERS, requests))
    list(pool.map(serve, range(requests), [round_no] * requests))
    serve_flaky(round_no)
    metrics.set_queue_active_workers(count=0)
    metrics.update_circuit_breaker_state(state="closed", model="gemma3:270m")
    metrics.update_circuit_breaker_state(BREAKER_CYCLE[round_no % len(BREAKER_CYCLE)], FLAKY)
    for gpu_id, model in enumerate(MODELS):
        metrics.record_batch(batch_size=random.choice((1, 2, 4, 8, 16)), model=model)
        metrics.set_kv_cache_hit_ratio(ratio=random.uniform(0.5, 0.95), model=model)
        # The flaky model uses under half of what it reserved: GPUMemoryPressure pends.
        fill = random.uniform(0.3, 0.45) if model == FLAKY else random.uniform(0.6, 0.9)
        update_gpu_metrics(model, gpu_id, used_bytes=fill * 8e9, reserved_bytes=8e9,
                           utilization=random.uniform(20, 95))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9090, help="metrics port (default 9090)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds "
                        "(default: run until Ctrl-C or SIGTERM)")
    parser.add_argument("--requests", type=int, default=12, help="requests per round (default 12)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="pause between rounds in seconds (default 1.0)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.interval < 0:
        parser.error("--requests must be at least 1 and --interval at least 0")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    try:
        server = start_metrics_server(port=args.port, addr=args.host)
    except OSError as exc:  # e.g. the port is in use; the message says which and what to do
        parser.exit(1, f"{parser.prog}: {exc}\n")
    print(f"serving {metrics.namespace}_* metrics; try: curl {server.url}/metrics",
          file=sys.stderr, flush=True)
    for model in MODELS:
        with metrics.track_model_load(model=model):
            time.sleep(random.uniform(0.02, 0.05))
    try:  # a model too big for the GPU: the failed load is counted by its error type
        with metrics.track_model_load(model="llama3.1:70b"):
            raise MemoryError("CUDA out of memory while loading weights")
    except MemoryError:
        pass

    deadline = None if args.duration is None else time.monotonic() + args.duration
    round_no = 0
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            run_round(pool, round_no, args.requests)
            round_no += 1
            pause = args.interval
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            stop.wait(pause)
    server.stop()
    print(f"stopped after {round_no} rounds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
