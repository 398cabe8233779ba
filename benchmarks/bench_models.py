"""What the model clients' instrumentation costs, next to the same work done raw.

Run with ``make bench`` (or ``python benchmarks/bench_models.py``). Two comparisons,
each side by side in one run, cases interleaved round by round so machine drift hits
them alike, MEDIANS reported:

1. **Embedded model** (Gemma 3 270M through llama-cpp-python, 32 streamed tokens,
   temperature 0): ``LocalClient.stream`` against the raw ``Llama.create_completion``
   stream of the same prompt. The end-to-end difference is within the machine's noise
   (generation is ~1 s), so the instrumentation is also measured on its own: the same
   client flow fed by a backend that replays 32 recorded pieces instantly, against a
   bare loop over those pieces. That cost, per request and per token, is then set
   against the real generation time: the goal is under 1 %.
2. **OpenAI-compatible server** (a minimal local server answering a canned chat
   completion, in a subprocess, keep-alive): ``OpenAIClient.generate`` against a bare
   ``httpx.Client.post`` + ``.json()`` of the same request. The difference is the
   client-side overhead per request: the goal is under 0.3 ms.

Both sides log like a production process would: the per-request line at INFO, JSON,
to /dev/null (so the terminal is not measured). The script only reports; it exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import version
from time import perf_counter
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from tinyllm.logging import configure_logging
from tinyllm.metrics import MetricsCollector
from tinyllm.models import GenerationRequest, LocalClient, ModelClient, OpenAIClient
from tinyllm.models._types import Delta
from tinyllm.resilience import Deadline

PROMPT = "Question: Why is the sky blue?\nAnswer:"
TOKENS = 32


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Each case timed once per round, the order rotated every round."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = perf_counter()
            cases[name]()
            times[name].append(perf_counter() - start)
    return times


def per_call(fn: Callable[[], Any], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            fn()
    return run


# -- 1. the embedded model ----------------------------------------------------------------
class Replay(ModelClient):
    """The client flow with a backend that costs nothing: recorded pieces, instantly."""

    provider = "local"

    def __init__(self, pieces: list[Delta], **options: Any) -> None:
        super().__init__("gemma3-270m", **options)
        self._pieces = pieces

    def _deltas(self, request: GenerationRequest, streamed: bool,
                deadline: Deadline) -> Iterator[Delta]:
        yield from self._pieces


def bench_embedded(rounds: int, collector: MetricsCollector) -> dict[str, float]:
    client = LocalClient(collector=collector, breaker=False)
    llama = client.load()

    def raw() -> str:
        return "".join(chunk["choices"][0]["text"] for chunk in llama.create_completion(
            PROMPT, max_tokens=TOKENS, temperature=0, stream=True))

    def ours() -> str:
        return "".join(client.stream(PROMPT, max_tokens=TOKENS, temperature=0))

    raw(), ours()  # warm: first-call allocations inside llama.cpp
    times = interleaved({"raw": raw, "tinyllm": ours}, rounds)
    raw_s, ours_s = statistics.median(times["raw"]), statistics.median(times["tinyllm"])

    # The instrumentation alone: the same flow, a backend that costs nothing.
    pieces = [Delta(text=f" t{i}", tokens=1) for i in range(TOKENS)]
    pieces.append(Delta(finish_reason="length", input_tokens=12, output_tokens=TOKENS))
    replay = Replay(pieces, collector=collector, breaker=True)
    calls = 2000

    def bare() -> str:
        return "".join(d.text for d in pieces)

    def flow() -> str:
        return "".join(replay.stream(PROMPT, max_tokens=TOKENS, temperature=0))

    micro = interleaved({"bare": per_call(bare, calls), "flow": per_call(flow, calls)},
                        max(5, rounds))
    overhead = (statistics.median(micro["flow"]) - statistics.median(micro["bare"])) / calls
    return {"raw_s": raw_s, "ours_s": ours_s, "overhead_s": overhead}


# -- 2. an OpenAI-compatible server -------------------------------------------------------
SERVER = textwrap.dedent('''
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    BODY = json.dumps({"id": "c1", "object": "chat.completion", "created": 0,
        "model": "bench", "choices": [{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "Rayleigh scattering."}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}).encode()
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(server.server_address[1], flush=True)
    server.serve_forever()
''')


def bench_http(rounds: int, collector: MetricsCollector) -> dict[str, float]:
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        base = f"http://127.0.0.1:{process.stdout.readline().strip()}/v1"
        bare_client = httpx.Client()
        payload = {"model": "bench", "messages": [{"role": "user", "content": PROMPT}],
                   "max_tokens": 8, "stream": False}

        def bare() -> str:
            body = bare_client.post(f"{base}/chat/completions", json=payload).json()
            usage = body["usage"]
            assert usage["completion_tokens"] == 4
            text: str = body["choices"][0]["message"]["content"]
            return text

        client = OpenAIClient(base, "bench", collector=collector)

        def ours() -> str:
            return client.generate(PROMPT, max_tokens=8).text

        assert bare() == ours()
        calls = 200
        times = interleaved({"bare": per_call(bare, calls), "ours": per_call(ours, calls)},
                            rounds)
        bare_s = statistics.median(times["bare"]) / calls
        ours_s = statistics.median(times["ours"]) / calls
        client.close()
        bare_client.close()
        return {"bare_s": bare_s, "ours_s": ours_s}
    finally:
        process.terminate()
        process.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timings per case (median)")
    parser.add_argument("--skip-model", action="store_true", help="only the HTTP comparison")
    args = parser.parse_args()
    configure_logging(log_level="INFO", log_format="json", log_file=os.devnull)
    collector = MetricsCollector(registry=CollectorRegistry())
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} cores; llama-cpp-python {version('llama-cpp-python')}, "
          f"httpx {version('httpx')}; medians of {args.rounds} interleaved rounds; "
          "request log line on (INFO, JSON, to /dev/null)")
    if not args.skip_model:
        e = bench_embedded(args.rounds, collector)
        per_token = e["raw_s"] / TOKENS
        print(f"\nembedded model, {TOKENS} streamed tokens per request")
        print(f"  raw llama.cpp stream        {e['raw_s'] * 1000:9.1f} ms/request "
              f"({per_token * 1000:.1f} ms/token)")
        print(f"  LocalClient.stream          {e['ours_s'] * 1000:9.1f} ms/request "
              f"(ratio {e['ours_s'] / e['raw_s']:.3f}x, within noise)")
        print(f"  instrumentation alone       {e['overhead_s'] * 1e6:9.1f} us/request "
              f"= {e['overhead_s'] / TOKENS * 1e6:.2f} us/token "
              f"= {e['overhead_s'] / e['raw_s'] * 100:.3f} % of generation (goal < 1 %)")
    h = bench_http(args.rounds, collector)
    print("\nOpenAI-compatible server (local, canned answer), non-streamed request")
    print(f"  bare httpx post + json      {h['bare_s'] * 1000:9.3f} ms/request")
    print(f"  OpenAIClient.generate       {h['ours_s'] * 1000:9.3f} ms/request "
          f"(ratio {h['ours_s'] / h['bare_s']:.2f}x)")
    print(f"  client-side overhead        {(h['ours_s'] - h['bare_s']) * 1000:9.3f} ms/request "
          "(goal < 0.3 ms)")
    print(json.dumps({"embedded": None if args.skip_model else e, "http": h}))


if __name__ == "__main__":
    main()
