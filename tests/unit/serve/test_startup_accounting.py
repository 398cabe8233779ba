"""The gateway config's prices and SLO are in force before anything builds the metric
families: the SLO's thresholds are bucket boundaries of what ``/metrics`` exposes.
Checked in a fresh process each (the families of this one are built already), the way
``tinyllm serve`` (``make_server``) and each worker of ``--workers`` start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm.settings import ENV_PRICES, ENV_SLO

START = """
import os, sys
from prometheus_client import generate_latest

mode, config_file = sys.argv[1], sys.argv[2]
if mode == "worker":
    from tinyllm.serve.workers import WorkerSpec, app
    from tinyllm.settings import ENV_SERVE_WORKER

    os.environ[ENV_SERVE_WORKER] = WorkerSpec(config_file, None, None).to_env()
    gateway = app()
else:
    from tinyllm.serve.config import load_config
    from tinyllm.serve.server import make_server

    gateway = make_server(load_config(config_file), port=0).config.app
req = gateway.lifecycle.start("m", "gateway", "chat_stream", provider="openai")
req.token()
req.end()
from tinyllm.accounting import get_prices

print("prices", get_prices().lookup("m").input, get_prices().lookup("other").input)
sys.stdout.write(generate_latest().decode())
"""

CONFIG = """
models:
  - name: m
    provider: openai
    base_url: http://127.0.0.1:9/v1
prices:
  m: {input: 2.5, output: 10}
slo:
  models:
    m: {ttft: 120ms, e2e: 2s}
"""


@pytest.mark.parametrize("mode", ["make_server", "worker"])
def test_the_slo_thresholds_are_bucket_boundaries_and_the_prices_are_layered(
    mode: str, tmp_path: Path,
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    # --prices (or $TINYLLM_PRICES) prices another model and m too: the config wins for m.
    outer = tmp_path / "prices.yaml"
    outer.write_text("prices:\n  m: {input: 99, output: 99}\n  other: {input: 7, output: 7}\n")
    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_SLO, "PROMETHEUS_MULTIPROC_DIR")}
    env[ENV_PRICES] = str(outer)
    done = subprocess.run([sys.executable, "-c", START, mode, str(config)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "prices 2.5 7.0" in lines
    # 0.12 s and 2 s are in none of the catalog's own buckets: only the SLO put them there.
    assert 'tinyllm_inference_ttft_seconds_bucket{le="0.12",model="m"} 1.0' in lines
    assert any(line.startswith('tinyllm_inference_request_duration_seconds_bucket{le="2.0",'
                               'model="m"}') for line in lines)
    assert any(line.startswith('tinyllm_request_latency_seconds_bucket{graph="gateway",'
                               'le="2.0",model="m"}') for line in lines)
    assert "not bucket boundaries" not in done.stderr
