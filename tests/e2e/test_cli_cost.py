"""``tinyllm --prices FILE --slo FILE ...``: one cost file priced and judged a real program's
calls, and a bad file stops the command with every problem named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fault_server import FaultServer, Reply

CLI = [sys.executable, "-m", "tinyllm"]

COST_FILE = """\
effective_date: 2026-11-30
prices:
  house-model: {input: 0.15, output: 0.60, cached_input: 0.075, source: our contract}
slo:
  default: {e2e: 4.5s, target: 0.99}
"""

APP = """
import sys
import openai
from prometheus_client import REGISTRY, generate_latest

client = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
client.chat.completions.create(model="house-model", messages=[{"role": "user", "content": "hi"}])
value = REGISTRY.get_sample_value
print(value("tinyllm_cost_usd_total", {"model": "house-model"}))
print(value("tinyllm_slo_requests_total",
            {"model": "house-model", "objective": "e2e", "outcome": "met"}))
print('le="4.5"' in generate_latest().decode())
"""

ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "created": 1, "model": "house-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
              "prompt_tokens_details": {"cached_tokens": 200}}}).encode()


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env or dict(os.environ))


def test_one_cost_file_prices_and_judges_a_programs_calls(tmp_path: Path) -> None:
    cost = tmp_path / "cost.yaml"
    cost.write_text(COST_FILE)
    (tmp_path / "app.py").write_text(APP)
    with FaultServer(fallback=Reply(body=ANSWER)) as server:
        done = run("--prices", str(cost), "--slo", str(cost), "instrument", "--",
                   sys.executable, str(tmp_path / "app.py"), f"{server.url}/v1")
    assert done.returncode == 0, done.stderr
    usd, met, boundary = done.stdout.split()
    # 800 uncached input tokens at 0.15, 200 cached at 0.075, 10 output at 0.60, per million.
    assert float(usd) == pytest.approx((800 * 0.15 + 200 * 0.075 + 10 * 0.60) / 1e6)
    assert (met, boundary) == ("1.0", "True")


def test_the_options_reach_the_processes_a_command_starts(tmp_path: Path) -> None:
    cost = tmp_path / "cost.yaml"
    cost.write_text(COST_FILE)
    probe = "import os; print(os.environ['TINYLLM_PRICES'], os.environ['TINYLLM_SLO'])"
    done = subprocess.run(
        [*CLI, "--prices", "cost.yaml", "--slo", str(cost), "instrument", "--",
         sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(cost), str(cost)]  # made absolute for the child


@pytest.mark.parametrize(("option", "text", "message"), [
    ("--prices", "prices: {m: {input: -1}}\n",
     "--prices: {path}: prices.m: input must be a number >= 0 (USD), got -1"),
    ("--slo", "slo: {default: {ttft: soon}}\n",
     "--slo: {path}: slo.default: ttft: expected seconds"),
    ("--prices", "prices: [\n", "--prices: {path}: line 2: not valid YAML or JSON"),
])
def test_a_bad_file_stops_the_command_with_its_problems(
        tmp_path: Path, option: str, text: str, message: str) -> None:
    path = tmp_path / "cost.yaml"
    path.write_text(text)
    done = run(option, str(path), "health")
    assert done.returncode == 2
    assert message.format(path=path) in done.stderr and "Traceback" not in done.stderr


def test_a_bad_file_named_by_the_environment_stops_the_command_too(tmp_path: Path) -> None:
    path = tmp_path / "slo.yaml"
    path.write_text("slo: {models: {m: {target: 2}}}\n")
    done = run("health", env={**os.environ, "TINYLLM_SLO": str(path)})
    assert done.returncode == 2
    assert f"$TINYLLM_SLO: {path}: slo.models.m: target must be a ratio" in done.stderr


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    done = run("--prices", str(tmp_path / "nope.yaml"), "health")
    assert done.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: no such file" in done.stderr
