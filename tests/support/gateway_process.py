"""`tinyllm serve` (and `tinyllm metrics --db`) as real processes on free ports, with a
fake upstream that answers like an OpenAI-compatible server, or misbehaves on purpose.

The fake upstream (``ModelUpstream``) chooses its answer by the upstream model name the
gateway sends, so one gateway config fronts every fault at once:

* ``ok``: a correct answer for the path asked (chat, completion, embeddings), whole or
  streamed as the request says;
* ``slow``: a correct stream whose pieces come every ``SLOW_GAP`` seconds (for clients
  that go away mid-stream);
* ``badjson``: a 200 whose body is not JSON; ``badsse``: a stream of malformed events;
  ``badtype``: a 200 answered as ``text/html``; ``stall``: nothing, until the test ends.

Example:
    >>> with ModelUpstream() as up, GatewayProcess(up.url) as gw:       # doctest: +SKIP
    ...     httpx.post(gw.url + "/v1/chat/completions", json={...})
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from tests.support.fault_server import DONE, Exchange, FaultServer, Reply, sse
from tests.support.servers import free_port, wait_ready

__all__ = ["FAULT_MODELS", "SLOW_GAP", "GatewayProcess", "ModelUpstream", "StoreProcess",
           "process_figures"]

#: The models the gateway is configured with (each its own fault, as upstream model).
FAULT_MODELS = ("ok", "slow", "badjson", "badsse", "badtype", "stall")
#: Seconds between the ``slow`` model's streamed pieces.
SLOW_GAP = 0.2
CLI = [sys.executable, "-m", "tinyllm"]


def _chunk(model: str, text: str | None, *, chat: bool, finish: str | None = None) -> dict[
        str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["delta"] = {"content": text} if text is not None else {}
    else:
        choice["text"] = text or ""
    return {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1, "model": model, "choices": [choice]}


class ModelUpstream(FaultServer):
    """An OpenAI-compatible fake that answers by the model asked for (module docstring)."""

    def respond(self, exchange: Exchange) -> Reply:
        try:
            body = exchange.json
        except ValueError:
            return Reply(status=400, body=b'{"error": {"message": "not json"}}')
        model = body.get("model", "ok") if isinstance(body, dict) else "ok"
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
        chat = exchange.path.endswith("/chat/completions")
        if model == "badjson":
            return Reply(body=b'{"choices": [ this is not json')
        if model == "badtype":
            return Reply(body=b"<html><body>502 Bad Gateway</body></html>",
                         content_type="text/html")
        if model == "badsse":
            return Reply(body=(b"data: {not json\n\n", b"data: [1, 2\n\n", DONE.encode()),
                         content_type="text/event-stream")
        if model == "stall":
            return Reply(body=b"{}", stall_before=3600)
        if exchange.path.endswith("/embeddings"):
            return Reply(body=json.dumps({"object": "list", "model": model, "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode())
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if stream:
            pieces = sse(_chunk(model, "Hel", chat=chat), _chunk(model, "lo", chat=chat),
                         _chunk(model, None, chat=chat, finish="stop"),
                         {"id": "x", "object": "chat.completion.chunk", "created": 1,
                          "model": model, "choices": [], "usage": usage}, DONE)
            if model == "slow":
                pieces = (*sse(*[_chunk(model, "tok", chat=chat)] * 200), DONE.encode())
            return Reply(body=pieces, content_type="text/event-stream",
                         stall_between=SLOW_GAP if model == "slow" else 0.0)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": "Hello"}
        else:
            choice["text"] = "Hello"
        return Reply(body=json.dumps({
            "id": "x", "object": "chat.completion" if chat else "text_completion",
            "created": 1, "model": model, "choices": [choice], "usage": usage}).encode())


class _Process:
    """A CLI command serving on a free port until ``close()`` (SIGTERM)."""

    ready_path = "/ready"

    def __init__(self, args: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = args
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""
        self.env: dict[str, str] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Self:
        # stderr to a file, not a pipe: a pipe nobody reads fills up with the log lines
        # of thousands of requests, and the server then blocks writing the next one
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open until close()
            "w+", prefix="tinyllm-", suffix=".log")
        self.proc = subprocess.Popen(
            [*CLI, *self._args, "--port", str(self.port)], text=True,
            stdout=subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "COLUMNS": "200", **self.env})
        if self.ready_path == "/ready":
            wait_ready(self.url, self.proc, timeout=60)
        else:
            _wait_health(self.url, self.proc)
        return self

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.seek(0)
        self.stderr = self._log.read()
        self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class GatewayProcess(_Process):
    """``tinyllm serve`` fronting ``upstream_url`` with every model of ``FAULT_MODELS``."""

    def __init__(self, upstream_url: str, tmp: Path, *, db: Path | None = None,
                 models: tuple[str, ...] = FAULT_MODELS, key: str | None = None) -> None:
        config = tmp / "gateway.yaml"
        config.write_text("models:\n" + "".join(
            f"  - name: {m}\n    provider: openai\n    base_url: {upstream_url}/v1\n"
            for m in models) + (
            "keys:\n  - alias: test\n    key_env: TINYLLM_TEST_GATEWAY_KEY\n" if key else ""))
        args = ["serve", "--config", str(config), "--grace", "1"]
        if db is not None:
            args += ["--db", str(db)]
        super().__init__(args)
        self.env = {"TINYLLM_TEST_GATEWAY_KEY": key} if key else {}


class StoreProcess(_Process):
    """``tinyllm metrics --db PATH``: the store's summary and exports."""

    ready_path = "/health"

    def __init__(self, db: Path) -> None:
        super().__init__(["metrics", "--db", str(db)])


def _wait_health(url: str, proc: subprocess.Popen[str]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=2)
            return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered /health")


def process_figures(pid: int) -> dict[str, int]:
    """The process's resident memory (bytes), open fds and threads, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024,
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"].strip())}
