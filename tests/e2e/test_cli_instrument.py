"""``tinyllm instrument -- python app.py``: a program that never imports tinyllm has its
openai calls observed, in a real process, against a real socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fault_server import FaultServer, Reply

CLI = [sys.executable, "-m", "tinyllm"]

APP = """
import sys
import openai
from prometheus_client import REGISTRY

client = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
print(REGISTRY.get_sample_value("tinyllm_requests_total",
                                {"model": "m", "graph": "default", "request_type": "chat"}))
print("tinyllm" in sys.modules and "app-site" in sys.modules)
"""

ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    site = tmp_path / "site"  # the program's own sitecustomize must still run
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['app-site'] = sys\n")
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env or dict(os.environ))


def test_a_program_is_observed_without_a_code_change(app: Path) -> None:
    with FaultServer(fallback=Reply(body=ANSWER)) as server:
        env = {**os.environ, "PYTHONPATH": str(app / "site")}
        done = run("instrument", "--", sys.executable, str(app / "app.py"),
                   f"{server.url}/v1", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["1.0", "True"]
        plain = subprocess.run([sys.executable, str(app / "app.py"), f"{server.url}/v1"],
                               capture_output=True, text=True, timeout=60, env=env)
        assert plain.stdout.split()[0] == "None"  # without it: not observed


def test_the_environment_switch_for_process_managers(app: Path) -> None:
    done = run("instrument", "--print-env", "--sdk", "openai")
    assert done.returncode == 0
    env = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert env["TINYLLM_INSTRUMENT"] == "openai"
    with FaultServer(fallback=Reply(body=ANSWER)) as server:
        ran = subprocess.run([sys.executable, str(app / "app.py"), f"{server.url}/v1"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split()[0] == "1.0"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["instrument", "--sdk", "anthropic", "--", "true"], 2, "--sdk 'anthropic' is not valid"),
    (["instrument"], 2, "no command given"),
    (["instrument", "--", "no-such-program-here"], 127, "command not found"),
])
def test_bad_use_is_a_clear_error(args: list[str], code: int, message: str) -> None:
    done = run(*args)
    assert done.returncode == code
    assert message in done.stderr and "Traceback" not in done.stderr
