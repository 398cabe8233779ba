"""`tinyllm run`: user errors print one clear line, exit non-zero, never a traceback;
a real answer streams to stdout with the summary on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli_debug import assert_no_traceback, run
from tests.support.servers import free_port


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["   "], 2, "the query is empty"),
    (["hi", "--provider", "bard"], 2, "use one of: local, ollama, openai"),
    (["hi", "--base-url", "http://x:1"], 2, "--base-url applies to --provider ollama or openai"),
    (["hi", "--max-tokens", "0"], 2, "--max-tokens"),
])
def test_usage_errors(args: list[str], code: int, expected: str) -> None:
    result = run("run", *args)
    assert result.returncode == code, result.stderr
    assert expected in result.stderr
    assert_no_traceback(result)
    assert result.stdout == ""


def test_unreachable_backend_names_the_url() -> None:
    port = free_port()
    result = run("run", "hi", "--provider", "ollama", "--base-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        f"error: cannot reach http://127.0.0.1:{port}/api/generate: Connection refused")
    assert result.stdout == ""
    assert_no_traceback(result)


def test_missing_model_file(tmp_path: Path) -> None:
    result = run("run", "hi", "--model", str(tmp_path / "absent.gguf"))
    assert result.returncode == 1
    assert f"model file not found: {tmp_path / 'absent.gguf'}" in error_line(result.stderr)
    assert_no_traceback(result)


def test_invalid_graph_names_file_node_and_reason(tmp_path: Path) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text("name: bad\nnodes:\n  a: {type: teleport}\n  done: {type: exit}\n"
                     "edges:\n  - {from: a, to: done}\n")
    result = run("run", "hi", "--graph", str(graph))
    assert result.returncode == 2
    line = error_line(result.stderr)
    assert str(graph) in line and "'a'" in line and "teleport" in line
    assert_no_traceback(result)


def test_missing_graph_file(tmp_path: Path) -> None:
    result = run("run", "hi", "--graph", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in error_line(result.stderr)
    assert_no_traceback(result)


def test_answer_streams_to_stdout_and_the_summary_to_stderr() -> None:
    result = run("run", "What is 2+2?", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    answer = result.stdout
    assert answer.strip() and answer.endswith("\n")
    assert "llm_request" not in answer  # logs never reach stdout
    summary = [line for line in result.stderr.splitlines() if line.startswith("tokens in ")]
    assert len(summary) == 1
    assert "TTFT" in summary[0] and "tokens/s" in summary[0] and "total" in summary[0]


def test_no_stream_prints_the_whole_answer() -> None:
    result = run("run", "What is 2+2?", "--max-tokens", "6", "--no-stream")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "TTFT" in result.stderr  # the embedded model streams internally either way


def test_openai_provider_sends_the_options_and_the_api_key() -> None:
    import json

    from tests.support.fault_server import FaultServer, Reply

    answer = {"choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "4"}}],
              "usage": {"prompt_tokens": 9, "completion_tokens": 1}}
    with FaultServer(fallback=Reply(body=json.dumps(answer).encode())) as server:
        result = run("run", "What is 2+2?", "--provider", "openai", "--base-url",
                     f"{server.url}/v1", "--model", "served-model", "--api-key", "sk-test-123",
                     "--max-tokens", "5", "--temperature", "0.5", "--no-stream")
        exchanges = list(server.exchanges)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "4\n"
    assert "tokens in 9 / out 1" in result.stderr
    assert len(exchanges) == 1
    sent = exchanges[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers.get("authorization") == "Bearer sk-test-123"
    body = sent.json
    assert (body["model"], body["max_tokens"], body["temperature"], body["stream"]) == (
        "served-model", 5, 0.5, False)
    assert body["messages"][-1]["content"].endswith("Question: What is 2+2?\nAnswer:")
    assert "sk-test-123" not in result.stderr
