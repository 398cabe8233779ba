"""Two `tinyllm serve` processes as a fleet: one PostgreSQL store, one set of key limits
in Redis (both the real services the set-up starts), one upstream."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from tests.support.fault_server import FaultServer, Reply
from tests.support.servers import free_port, wait_ready

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "tinyllm"]
REDIS = "redis://127.0.0.1:6379/0"
ANSWER = (b'{"id": "x", "object": "chat.completion", "created": 1, "model": "up", '
          b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, '
          b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 3, '
          b'"completion_tokens": 2, "total_tokens": 5}}')
KEY = "fleet-key"


def _clean_redis() -> None:
    client = redis.Redis.from_url(REDIS)
    for name in client.scan_iter("tinyllm:limits:*"):
        client.delete(name)
    client.close()


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], FaultServer]]:
    _clean_redis()
    with FaultServer(fallback=Reply(body=ANSWER)) as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(f"""
models:
  - name: m
    provider: openai
    base_url: {upstream.url}/v1
keys:
  - alias: fleet
    key_sha256: '{hashlib.sha256(KEY.encode()).hexdigest()}'
    rpm: 12
""")
        procs, urls = [], []
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [*CLI, "--log-format", "json", "serve", "--config", str(config), "--port",
                 str(port), "--db", pg_url, "--redis-url", REDIS],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        try:
            for url, proc in zip(urls, procs, strict=True):
                wait_ready(url, proc)
            yield urls, upstream
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                _out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err[-2000:]
            _clean_redis()


def test_two_instances_write_one_store_and_enforce_one_limit(
    fleet: tuple[list[str], FaultServer],
) -> None:
    (a, b), upstream = fleet
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    statuses = [httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth,
                           timeout=10).status_code
                for url in (a, b) * 7]
    # 12 a minute for the key across the fleet, not 12 per instance.
    assert statuses.count(200) == 12 and statuses.count(429) == 2
    assert upstream.requests == 12
    # One store: either instance's summary counts every request of both.
    deadline = time.monotonic() + 20
    totals: list[int] = []
    while time.monotonic() < deadline:
        totals = [httpx.get(f"{url}/api/metrics", headers=auth).json()["overall"]
                  ["total_requests"] for url in (a, b)]
        if totals == [12, 12]:
            break
        time.sleep(0.3)
    assert totals == [12, 12]
    # Each instance's /metrics is its own (Prometheus scrapes every instance).
    per_instance = []
    for url in (a, b):
        text = httpx.get(f"{url}/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith(
            'tinyllm_gateway_key_requests_total{key="fleet"}'))
        per_instance.append(float(line.rsplit(" ", 1)[1]))
    assert sum(per_instance) == 12
