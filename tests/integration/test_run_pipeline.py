"""`tinyllm run` end to end, as a newcomer runs it: a real answer from the embedded
model, its metrics scraped from --metrics-port while the command keeps serving, its
spans at a real OTLP/gRPC receiver, its row in the store, JSON logs on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from otlp_receiver import GrpcReceiver
from tests.support.servers import free_port

from tinyllm.store import MetricsDatabase

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("TINYLLM_", "OTEL_"))}


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """stderr lines up to and including the first that contains ``needle``."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} on stderr within {timeout}s: {''.join(seen)[-3000:]}")


def dashboard_after_a_request(url: str, timeout: float = 10) -> dict[str, Any]:
    """``/dashboard/data`` once its history has the run's request's tokens (the sampler
    takes a point every 2 s; a request is counted when it starts, its tokens when it
    ends, so they may fall in different points)."""
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = httpx.get(url, timeout=5).json()
        if any(data["series"]["tokens_out_per_s"]) or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_run_feeds_every_pillar(tmp_path: Path) -> None:
    port, db = free_port(), tmp_path / "run.db"
    with GrpcReceiver() as receiver:
        process = subprocess.Popen(
            [sys.executable, "-m", "tinyllm", "run", "What is 2+2?", "--max-tokens", "8",
             "--metrics-port", str(port), "--db", str(db), "--tracing",
             "--otlp-endpoint", receiver.endpoint, "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        try:
            stderr = wait_for_line(process, "Ctrl-C to stop", 120)
            scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            summary = httpx.get(f"http://127.0.0.1:{port}/api/metrics", timeout=5).json()
            board = dashboard_after_a_request(f"http://127.0.0.1:{port}/dashboard/data")
            process.send_signal(signal.SIGINT)
            out, rest = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 0, rest
        stderr += rest.splitlines(keepends=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.spans()) < 3:
            time.sleep(0.1)
        spans = receiver.spans()

    # stdout: the answer only.
    assert out.strip() and "{" not in out

    # Metrics, scraped while the command kept serving after the answer.
    labels = 'graph="default",model="gemma3-270m"'
    assert f'tinyllm_requests_total{{{labels},request_type="stream"}} 1.0' in scrape
    assert 'tinyllm_graph_executions_total{graph="default",status="success"} 1.0' in scrape
    assert 'tinyllm_node_executions_total{graph="default",node="answer"} 1.0' in scrape
    assert 'tinyllm_inference_ttft_seconds_count{model="gemma3-270m"} 1.0' in scrape
    assert 'tinyllm_model_load_duration_seconds_count{model="gemma3-270m"}' in scrape

    # The store: served on /api/metrics during the run, and durable after it.
    assert summary["overall"]["total_requests"] == 1
    with MetricsDatabase(str(db)) as store:
        assert store.get_summary()["overall"]["total_requests"] == 1

    # The dashboard, opened after the answer, shows the run's request.
    assert any("/dashboard" in line for line in stderr)
    assert board["totals"]["requests"] == 1.0
    assert board["store"]["recent"][0]["model"] == "gemma3-270m"
    assert [row["model"] for row in board["models"]] == ["gemma3-270m"]
    assert board["models"][0]["requests"] == 1.0
    assert max(v or 0 for v in board["series"]["tokens_out_per_s"]) > 0
    assert sum(board["series"]["requests_per_s"]) * board["interval_seconds"] == \
        pytest.approx(1.0, rel=0.05)  # the one request, in one of the points

    # Traces: graph -> node -> GenAI request, one trace, at the OTLP receiver.
    names = {s.name: s for s in spans}
    assert "graph_execution" in names and "node_execution" in names
    genai = [s for s in spans if s.attributes.get("gen_ai.provider.name") == "local"]
    assert len(genai) == 1
    assert genai[0].parent_span_id == names["node_execution"].span_id
    assert len({s.trace_id for s in spans}) == 1

    # Logs: JSON lines on stderr, the request's line carrying the same trace id.
    records = [json.loads(line) for line in stderr if line.startswith("{")]
    request_lines = [r for r in records if r.get("event") == "llm_request"]
    assert len(request_lines) == 1
    assert request_lines[0]["trace_id"] == genai[0].trace_id
    assert request_lines[0]["output_tokens"] >= 1
    assert "What is 2+2?" not in "".join(stderr)  # no prompt text unless opted in
