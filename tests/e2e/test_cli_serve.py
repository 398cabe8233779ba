"""`tinyllm serve` as a user runs it: a real process, the embedded model, the official
openai SDK as the client, SIGTERM to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.servers import free_port, wait_ready

CLI = [sys.executable, "-m", "tinyllm"]
PROMPT = [{"role": "user", "content": "What is 2+2? Answer with one number."}]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def test_a_bad_config_is_exit_2_with_every_problem_and_nothing_started(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("models:\n  - name: big\n    provider: openai\n  - name: x\n"
                      "    provider: magic\n")
    port = free_port()
    result = run("serve", "--config", str(config), "--port", str(port))
    assert result.returncode == 2, result
    assert f"{config}: models[0] (big): base_url is required" in result.stderr
    assert f"{config}: models[1] (x): provider 'magic' is not one of" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_a_busy_port_is_one_line_exit_1() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "--log-format", "json", "serve", "--port", str(port)],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=120)  # the first start assembles the model file
    except AssertionError:
        proc.kill()
        raise
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_serve_alone_answers_the_official_sdk_with_the_embedded_model(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = served
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["gemma3-270m"]
        answer = client.chat.completions.create(model="gemma3-270m", messages=PROMPT,
                                                max_tokens=8, temperature=0)
        assert answer.model == "gemma3-270m" and answer.choices[0].message.content
        assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
        stream = client.chat.completions.create(
            model="gemma3-270m", messages=PROMPT, max_tokens=8, temperature=0,
            stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text and chunks[-1].usage is not None
        completion = client.completions.create(model="gemma3-270m", max_tokens=4,
                                               prompt="Question: What is 2+2?\nAnswer:")
        assert completion.choices[0].text
    metrics = httpx.get(f"{url}/metrics").text
    assert ('tinyllm_requests_total{graph="gateway",model="gemma3-270m",'
            'request_type="chat_stream"} 1.0') in metrics
    assert 'tinyllm_inference_ttft_seconds_count{model="gemma3-270m"}' in metrics
    assert 'tinyllm_queue_requests_total{priority="normal"} 3.0' in metrics


def test_the_ollama_sdk_gets_the_embedded_model_through_the_ollama_api(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    import ollama

    url, _ = served
    client = ollama.Client(host=url)
    assert [m.model for m in client.list().models] == ["gemma3-270m"]
    assert [m.model for m in client.ps().models] == ["gemma3-270m"]  # loaded
    parts = list(client.chat(model="gemma3-270m", messages=PROMPT, stream=True,
                             options={"num_predict": 6, "temperature": 0}))
    assert "".join(p.message.content or "" for p in parts)
    assert parts[-1].done and 0 < (parts[-1].eval_count or 0) <= 6
    answer = client.generate(model="gemma3-270m", prompt="Question: What is 2+2?\nAnswer:",
                             options={"num_predict": 4})
    assert answer.response and answer.done_reason in ("stop", "length")


def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = served
    with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        stream = client.chat.completions.create(model="gemma3-270m", messages=PROMPT,
                                                max_tokens=24, stream=True)
        first = next(iter(stream))
        proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the stream in flight finishes
    assert first.choices and rest
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "tinyllm serve stopped" in err and "Traceback" not in err


def test_workers_share_one_port_and_metrics_add_up_exactly(tmp_path: Path) -> None:
    from tests.support.fault_server import FaultServer, Reply

    answer = (b'{"id": "x", "object": "chat.completion", "created": 1, "model": "up", '
              b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, '
              b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 1, '
              b'"completion_tokens": 1, "total_tokens": 2}}')
    with FaultServer(fallback=Reply(body=answer)) as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(f"models:\n  - name: m\n    provider: openai\n"
                          f"    base_url: {upstream.url}/v1\n")
        port = free_port()
        proc = subprocess.Popen([*CLI, "serve", "--config", str(config), "--port", str(port),
                                 "--workers", "2"], text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            for _ in range(30):  # a new connection each: the kernel spreads them
                r = httpx.post(f"{url}/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
            line = ('tinyllm_requests_total{graph="gateway",model="m",'
                    'request_type="chat"} 30.0')
            for _ in range(6):  # whichever worker answers the scrape: the same totals
                assert line in httpx.get(f"{url}/metrics").text
            # The dashboard, whichever worker draws it, once each worker's sampler has
            # taken its next point (one every 2 s): the same totals.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and httpx.get(
                    f"{url}/dashboard/data").json()["totals"]["requests"] < 30:
                time.sleep(0.2)
            time.sleep(2.5)  # the other worker's sampler too
            for _ in range(6):
                data = httpx.get(f"{url}/dashboard/data").json()
                assert data["totals"] == {"requests": 30.0, "errors": 0.0, "error_rate": 0.0}
                assert "<title>" in httpx.get(f"{url}/dashboard").text
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "2 workers" in err and "tinyllm serve stopped" in err
    assert "Traceback" not in err
