"""What ``tinyllm.instrument()`` adds to an SDK call, next to the bare SDK.

Run with ``make bench`` (or ``python benchmarks/bench_instrument.py``). Two views, one run:

1. **What is added** (the goals: <= 50 us per non-streamed call, <= 3 us per streamed
   chunk): the instrumentation's own work around the SDK's method, on the SDK's real
   answer objects (a ``ChatCompletion``, ``ChatCompletionChunk``s in the SDK's own
   ``Stream``; Ollama's ``ChatResponse`` parts), against the same method bare. Precise
   to a fraction of a microsecond.
2. **End to end**: the official ``openai`` and ``ollama`` SDKs calling a fast fake server
   inside the process (each SDK's own HTTP library with a mock transport answering canned
   bytes), bare and instrumented in paired, alternating rounds. The SDKs' own cost per
   call (0.2-1 ms) and per chunk (~5-100 us) is so much larger than what is added that
   on a shared machine this view carries more noise than signal; it is the ratio a user
   sees.

Times are the calling thread's CPU time (``time.thread_time``): the fake server answers
in the same thread, and time the shared machine gives to other processes is left out.

Instrumented means every default sink on: metrics, and the request log line (INFO, JSON,
to /dev/null), or filtered out by the level (WARNING), as a service runs in production.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

CHUNKS = 200
MESSAGES = [{"role": "user", "content": "hi"}]


def _openai_bytes() -> tuple[bytes, bytes]:
    whole = json.dumps({
        "id": "c", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}).encode()
    events = []
    for i in range(CHUNKS):
        events.append({"id": "c", "object": "chat.completion.chunk", "created": 1,
                       "model": "up", "choices": [{"index": 0, "delta": {"content": f"t{i}"},
                                                   "finish_reason": None}]})
    events.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": CHUNKS,
                                            "total_tokens": CHUNKS + 5}})
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return whole, stream + b"data: [DONE]\n\n"


def _ollama_bytes() -> tuple[bytes, bytes]:
    whole = json.dumps({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                        "message": {"role": "assistant", "content": "Hello there"},
                        "done_reason": "stop", "done": True, "prompt_eval_count": 5,
                        "eval_count": 3}).encode()
    lines = [json.dumps({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                         "message": {"role": "assistant", "content": f"t{i}"}, "done": False})
             for i in range(CHUNKS)]
    lines.append(json.dumps({"model": "m", "created_at": "2025-01-01T00:00:00Z",
                             "message": {"role": "assistant", "content": ""},
                             "done_reason": "stop", "done": True, "prompt_eval_count": 5,
                             "eval_count": CHUNKS}))
    return whole, ("\n".join(lines) + "\n").encode()


def openai_calls() -> dict[str, Callable[[], Any]]:
    import httpx2
    import openai

    whole, stream = _openai_bytes()

    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, content=stream,
                                   headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, content=whole, headers={"content-type": "application/json"})

    client = openai.OpenAI(base_url="http://fake/v1", api_key="x", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))
    api = client.chat.completions
    return {
        "openai chat": lambda: api.create(model="m", messages=MESSAGES),
        "openai chat stream": lambda: sum(1 for _ in api.create(
            model="m", messages=MESSAGES, stream=True)),
    }


def ollama_calls() -> dict[str, Callable[[], Any]]:
    import httpx
    import ollama

    whole, stream = _ollama_bytes()

    def answer(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=stream,
                                  headers={"content-type": "application/x-ndjson"})
        return httpx.Response(200, content=whole, headers={"content-type": "application/json"})

    client = ollama.Client(host="http://fake", transport=httpx.MockTransport(answer))
    return {
        "ollama chat": lambda: client.chat(model="m", messages=MESSAGES, stream=False),
        "ollama chat stream": lambda: sum(1 for _ in client.chat(
            model="m", messages=MESSAGES, stream=True)),
    }


def added_work() -> list[tuple[str, float, float, int]]:
    """(case, bare seconds, instrumented seconds, chunks) for the instrumentation's own
    work on the SDKs' real objects."""
    import openai
    from ollama import ChatResponse
    from openai import _streaming
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from tinyllm.instrumentation import ollama as ours_ollama
    from tinyllm.instrumentation import openai as ours_openai
    from tinyllm.instrumentation._call import Call
    from tinyllm.lifecycle import get_lifecycle

    whole_bytes, stream_bytes = _openai_bytes()
    whole = ChatCompletion.model_validate_json(whole_bytes)
    chunks = [ChatCompletionChunk.model_validate_json(line[6:])
              for line in stream_bytes.split(b"\n\n")[:CHUNKS]]
    types = ours_openai._Types(openai)

    class Resource:
        _client = None

    resource = Resource()

    def sdk_create(self: Any, **kwargs: Any) -> Any:
        return whole

    create = ours_openai._wrap(sdk_create, kind="chat", on_chunk=ours_openai._chat_chunk,
                               types=types, stream_usage=True)

    class Response:
        def close(self) -> None:
            pass

    def stream(observed: bool) -> Any:
        made = object.__new__(_streaming.Stream)
        made.response, made._iterator = Response(), iter(chunks)
        if observed:
            call = Call.begin(get_lifecycle(), "m", "chat_stream", "openai")
            assert call is not None
            ours_openai._attach(types, call, made, ours_openai._chat_chunk)
        return made

    o_whole_bytes, o_stream_bytes = _ollama_bytes()
    o_whole = ChatResponse.model_validate_json(o_whole_bytes)
    parts = [ChatResponse.model_validate_json(line)
             for line in o_stream_bytes.splitlines()]

    def ollama_chat(self: Any, *args: Any, **kwargs: Any) -> Any:
        return o_whole

    def ollama_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return iter(parts)

    chat = ours_ollama._wrap(ollama_chat, kind="chat")
    chat_stream = ours_ollama._wrap(ollama_stream, kind="chat")
    cases = [
        ("openai chat", lambda: sdk_create(resource, model="m", messages=MESSAGES),
         lambda: create(resource, model="m", messages=MESSAGES), 0),
        ("openai chat stream", lambda: sum(1 for _ in stream(False)),
         lambda: sum(1 for _ in stream(True)), CHUNKS),
        ("ollama chat", lambda: ollama_chat(None, "m", messages=MESSAGES),
         lambda: chat(None, "m", messages=MESSAGES), 0),
        ("ollama chat stream", lambda: sum(1 for _ in ollama_stream(None, "m", stream=True)),
         lambda: sum(1 for _ in chat_stream(None, "m", stream=True)), len(parts)),
    ]
    out = []
    for name, bare, ours, n in cases:
        calls = 20 if n else 2000
        bare_s = statistics.median(per_call(bare, calls) for _ in range(9))
        ours_s = statistics.median(per_call(ours, calls) for _ in range(9))
        out.append((name, bare_s, ours_s, n))
    return out


def per_call(fn: Callable[[], Any], n: int) -> float:
    """CPU seconds of this thread per call: the fake server answers in this thread, and
    time the shared machine gives to others while we wait is not ours."""
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n


def measure(fn: Callable[[], Any], rounds: int, n: int) -> tuple[float, float, float]:
    """Seconds per call: the bare median, the instrumented median, and the median of
    each round's difference (paired rounds: a noisy neighbour hits both sides alike)."""
    import tinyllm

    bare, ours = [], []
    for _ in range(3):  # warm both paths (imports, caches, the children of the series)
        fn()
        tinyllm.instrument()
        fn()
        tinyllm.uninstrument()
    for i in range(rounds):
        first_bare = i % 2 == 0  # alternate which side goes first
        if first_bare:
            bare.append(per_call(fn, n))
        tinyllm.instrument()
        ours.append(per_call(fn, n))
        tinyllm.uninstrument()
        if not first_bare:
            bare.append(per_call(fn, n))
    added = statistics.median(o - b for o, b in zip(ours, bare, strict=True))
    return statistics.median(bare), statistics.median(ours), added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--calls", type=int, default=100, help="non-streamed calls per round")
    parser.add_argument("--streams", type=int, default=4, help="streams per round")
    args = parser.parse_args()

    from tinyllm.logging import configure_logging

    print("What tinyllm.instrument() adds to an SDK call")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{platform.python_version()}; streams of {CHUNKS} chunks; every default sink on "
          "(metrics, the request log line: INFO, JSON, to /dev/null, or filtered by level)")
    print("goal: <= 50 us added per non-streamed call, <= 3 us per streamed chunk")
    for log_on in (True, False):
        configure_logging(log_level="info" if log_on else "warning", log_format="json",
                          log_file=os.devnull)
        print(f"\n1. What is added, on the SDKs' real objects (log line "
              f"{'on' if log_on else 'filtered'}); median of 9 rounds")
        header = f"{'case':<22} {'bare':>10} {'instrumented':>13} {'added':>16}  goal"
        print(header)
        print("-" * len(header))
        for name, bare, ours, chunks in added_work():
            print(_row(name, bare, ours, ours - bare, chunks))
    calls = {**openai_calls(), **ollama_calls()}
    for log_on in (True, False):
        configure_logging(log_level="info" if log_on else "warning", log_format="json",
                          log_file=os.devnull)
        print(f"\n2. End to end: the SDK, its HTTP library and a fake in-process server (log "
              f"line {'on' if log_on else 'filtered'}); added = median of {args.rounds} "
              "paired rounds' differences")
        header = f"{'case':<22} {'bare':>10} {'instrumented':>13} {'added':>16} {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for name, fn in calls.items():
            streamed = name.endswith("stream")
            bare, ours, added = measure(fn, args.rounds,
                                        args.streams if streamed else args.calls)
            print(_row(name, bare, ours, added, CHUNKS if streamed else 0, goal=False)
                  + f" {ours / bare:5.2f}x")


def _row(name: str, bare: float, ours: float, added: float, chunks: int,
         goal: bool = True) -> str:
    if chunks:
        unit, limit, shown = added / chunks, 3e-6, f"{added / chunks * 1e6:6.2f} us/chunk"
    else:
        unit, limit, shown = added, 50e-6, f"{added * 1e6:6.1f} us/call"
    verdict = ("  ok" if unit <= limit else "  MISSED") if goal else ""
    return f"{name:<22} {bare * 1e6:8.0f}us {ours * 1e6:11.0f}us {shown:>16}{verdict}"


if __name__ == "__main__":
    main()
