"""What `tinyllm serve` costs, next to calling the upstream directly and to LiteLLM's proxy.

Run with ``make bench`` (or ``python benchmarks/bench_gateway.py``). One run, side by
side, on this machine, load generator and upstream included:

* a fast fake OpenAI upstream (this script, ``--upstream PORT``: uvicorn with uvloop and
  httptools answering a canned chat completion, or a 20-chunk stream plus usage);
* **direct**: ``wrk`` straight at the upstream;
* **tinyllm serve**: every sink on: metrics, the request log line (INFO, JSON, to
  /dev/null), the store (SQLite, in a temp dir);
* **tinyllm serve, 2 workers**: the same with ``--workers 2`` (what a worker adds, on
  a machine whose two cores also run the load generator and the upstream);
* **tinyllm serve + tracing**: the same, with a GenAI span per request (console
  exporter to /dev/null);
* **LiteLLM proxy** (``litellm[proxy]`` in a virtual environment of its own under
  ``.bench/``, installed on first use; skipped with the reason if it cannot be).

Cases: non-streamed at 16 connections (req/s), non-streamed at 1 connection (p50
latency: what a proxy adds), streamed (20 chunks and usage) at 16 connections; then the
gateway's memory over ``--memory-requests`` requests after warm-up. The load generator
is Debian's ``wrk`` (``make test``'s set-up installs it). The script only reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".bench"
PYTHON = sys.executable
MESSAGES = [{"role": "user", "content": "hi"}]
LITELLM_KEY = "sk-bench-master-key"


# -- the fake upstream ------------------------------------------------------------------


def serve_upstream(port: int) -> None:
    """A fast OpenAI-compatible upstream: canned answers, no work."""
    import orjson
    import uvicorn

    whole = orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "Hello there, how can I help?"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}})

    def chunk(content: str | None, finish: str | None = None) -> bytes:
        delta = {} if content is None else {"content": content}
        return b"data: " + orjson.dumps({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"

    usage = b"data: " + orjson.dumps({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
        "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 20,
                                 "total_tokens": 29}}) + b"\n\n"
    streamed = b"".join(chunk(f"tok{i} ") for i in range(20)) + chunk(None, "stop") + \
        usage + b"data: [DONE]\n\n"

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"stream":true' in body.replace(b" ", b""):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": streamed})
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(whole)).encode())]})
            await send({"type": "http.response.body", "body": whole})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                loop="uvloop", http="httptools")


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(url: str, timeout: float = 120.0, headers: dict[str, str] | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout:g} s")


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- load --------------------------------------------------------------------------------


def lua(model: str, stream: bool, key: str | None) -> Path:
    payload = json.dumps({"model": model, "messages": MESSAGES,
                          **({"stream": True} if stream else {})})
    script = (f"wrk.method = 'POST'\nwrk.body = '{payload}'\n"
              "wrk.headers['Content-Type'] = 'application/json'\n")
    if key:
        script += f"wrk.headers['Authorization'] = 'Bearer {key}'\n"
    path = Path(tempfile.mkstemp(suffix=".lua")[1])
    path.write_text(script)
    return path


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s",
         "--latency", "-s", str(script), url], capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": p50, "errors": float(errors.group(1)) if errors else 0.0,
            "requests": total}


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# -- LiteLLM -----------------------------------------------------------------------------


def litellm_binary() -> tuple[Path | None, str]:
    """LiteLLM's proxy in a venv of its own (its pins are not ours), installed once."""
    venv = BENCH_DIR / "litellm"
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return binary, ""
    try:
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]",
                        "prometheus_client"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"could not install litellm[proxy]: {exc}"[:200]
    return binary, ""


def litellm_config(upstream_port: int) -> Path:
    path = Path(tempfile.mkstemp(suffix=".yaml")[1])
    path.write_text(
        "model_list:\n  - model_name: fast\n    litellm_params:\n"
        f"      model: openai/up\n      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: unused\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n")
    return path


# -- the run -----------------------------------------------------------------------------


CASES = (("non-streamed, 16 connections", False, 16), ("non-streamed, 1 connection", False, 1),
         ("streamed 20 chunks + usage, 16 conn.", True, 16))


def gateway_config(upstream_port: int) -> Path:
    path = Path(tempfile.mkstemp(suffix=".yaml")[1])
    path.write_text(f"models:\n  - name: fast\n    provider: openai\n"
                    f"    base_url: http://127.0.0.1:{upstream_port}/v1\n    model: up\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one wrk run")
    parser.add_argument("--memory-requests", type=int, default=100_000,
                        help="requests sent to measure the gateway's memory (0: skip)")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    args = parser.parse_args(argv)
    if args.upstream:
        serve_upstream(args.upstream)
        return 0
    if shutil.which("wrk") is None:
        print("bench_gateway: wrk is not installed (apt-get install wrk; make test's set-up "
              "does it); nothing measured")
        return 0
    print("tinyllm serve against the upstream direct and LiteLLM's proxy (wrk, same machine)")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}; {args.seconds:g} s per run")
    up_port = free_port()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with process([PYTHON, __file__, "--upstream", str(up_port)]), \
            tempfile.TemporaryDirectory() as tmp:
        wait_for(f"http://127.0.0.1:{up_port}/")
        config = gateway_config(up_port)
        targets = [("direct", f"http://127.0.0.1:{up_port}", "up", None, None)]
        common = [PYTHON, "-m", "tinyllm", "--log-format", "json"]
        targets.append(("tinyllm serve", None, "fast", [
            *common, "serve", "--config", str(config), "--db", f"{tmp}/store.db"], None))
        targets.append(("tinyllm serve, 2 workers", None, "fast", [
            *common, "serve", "--config", str(config), "--db", f"{tmp}/workers.db",
            "--workers", "2"], None))
        targets.append(("tinyllm serve + tracing", None, "fast", [
            *common, "--tracing", "serve", "--config", str(config), "--db",
            f"{tmp}/traced.db"], None))
        skipped = ""
        if not args.no_litellm:
            binary, skipped = litellm_binary()
            if binary is not None:
                targets.append(("LiteLLM proxy", None, "fast", [
                    str(binary), "--config", str(litellm_config(up_port)), "--num_workers",
                    "1"], LITELLM_KEY))
        for name, base, model, command, key in targets:
            results[name] = run_target(name, base, model, command, key, args.seconds)
        if args.memory_requests:
            memory = run_memory(config, tmp, args.memory_requests)
    report(results, skipped)
    if args.memory_requests:
        print(f"\nmemory of tinyllm serve (every sink on) over {args.memory_requests:,} "
              f"non-streamed requests after {memory['warmup']:,} of warm-up: RSS "
              f"{memory['before']:.1f} -> {memory['after']:.1f} MB "
              f"(+{memory['after'] - memory['before']:.1f} MB; goal < 20 MB)")
    return 0


def run_target(name: str, base: str | None, model: str, command: list[str] | None,
               key: str | None, seconds: float) -> dict[str, dict[str, float]]:
    port = None
    ctx: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if command is not None:
        port = free_port()
        command = [*command, "--port", str(port)] if "litellm" not in command[0] else \
            [*command, "--port", str(port), "--host", "127.0.0.1"]
        ctx = process(command)
    with ctx:
        if base is None:
            base = f"http://127.0.0.1:{port}"
            probe = "/health/liveliness" if "LiteLLM" in name else "/ready"
            wait_for(base + probe, timeout=300)
        url = f"{base}/v1/chat/completions"
        out: dict[str, dict[str, float]] = {}
        for label, stream, connections in CASES:
            script = lua(model, stream, key)
            wrk(url, script, connections, 2)  # warm-up: connections, caches, first children
            out[label] = wrk(url, script, connections, seconds)
    return out


def run_memory(config: Path, tmp: str, requests: int) -> dict[str, float]:
    port = free_port()
    command = [PYTHON, "-m", "tinyllm", "--log-format", "json", "serve", "--config",
               str(config), "--db", f"{tmp}/memory.db", "--port", str(port)]
    with process(command) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/ready")
        script = lua("fast", False, None)
        warmup = 0
        while warmup < 10_000:
            warmup += int(wrk(base + "/v1/chat/completions", script, 16, 3)["requests"])
        time.sleep(1)
        before = rss_mb(proc.pid)
        sent = 0
        while sent < requests:
            sent += int(wrk(base + "/v1/chat/completions", script, 16, 10)["requests"])
        time.sleep(2)  # the store's writer drains its queue
        after = rss_mb(proc.pid)
    return {"warmup": warmup, "before": before, "after": after, "sent": sent}


def report(results: dict[str, dict[str, dict[str, float]]], skipped: str) -> None:
    names = list(results)
    print()
    for label, _stream, connections in CASES:
        metric = "p50_ms" if connections == 1 else "rps"
        unit = "p50 ms" if connections == 1 else "req/s"
        print(f"{label} ({unit})")
        direct = results["direct"][label][metric]
        litellm = results.get("LiteLLM proxy", {}).get(label, {}).get(metric)
        for name in names:
            r = results[name][label]
            value = r[metric]
            extra = ""
            if name != "direct":
                if connections == 1:
                    extra = f"  +{value - direct:.3f} ms over direct"
                else:
                    extra = f"  {value / direct:.2f}x direct"
                if litellm and name != "LiteLLM proxy":
                    extra += (f", {litellm / value:.1f}x faster than LiteLLM"
                              if connections == 1 else f", {value / litellm:.1f}x LiteLLM")
            errors = f"  ({r['errors']:.0f} errors)" if r["errors"] else ""
            print(f"  {name:<26} {value:10.{3 if connections == 1 else 0}f}{extra}{errors}")
    if skipped:
        print(f"  LiteLLM proxy: skipped ({skipped})")
    goals = results.get("tinyllm serve")
    if goals:
        checks = [
            ("non-streamed, 16 connections >= 1,000 req/s",
             goals["non-streamed, 16 connections"]["rps"] >= 1000),
            ("non-streamed, 1 connection <= 1 ms p50 added",
             goals["non-streamed, 1 connection"]["p50_ms"]
             - results["direct"]["non-streamed, 1 connection"]["p50_ms"] <= 1.0),
            ("streamed, 16 connections >= 400 req/s",
             goals["streamed 20 chunks + usage, 16 conn."]["rps"] >= 400),
        ]
        print("\ngoals: " + "; ".join(f"{text}: {'yes' if ok else 'NO'}" for text, ok in checks))


if __name__ == "__main__":
    sys.exit(main())
