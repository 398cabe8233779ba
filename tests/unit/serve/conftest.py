"""A gateway in front of a scripted upstream (a real socket), under a real uvicorn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from tests.support.fault_server import FaultServer
from tests.support.servers import uvicorn_server
from tinyllm.metrics import MetricsCollector
from tinyllm.resilience import RetryPolicy, Timeouts, reset_circuit_breakers
from tinyllm.serve.app import Gateway
from tinyllm.serve.config import GatewayConfig, parse_config

#: Short limits, so a stalled upstream fails the test in well under a second.
FAST = Timeouts(connect=1.0, read=1.0, total=10.0, token_gap=0.5)


def config_for(upstream_url: str, name: str = "m", upstream_model: str = "up") -> GatewayConfig:
    return parse_config(f"""
models:
  - name: {name}
    provider: openai
    base_url: {upstream_url}/v1
    model: {upstream_model}
""")


@pytest.fixture
def upstream() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def gateway_url(
    upstream: FaultServer, default_collector: MetricsCollector,
) -> Iterator[str]:
    reset_circuit_breakers()
    app = Gateway(config_for(upstream.url), timeouts=FAST,
                  retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=False))
    with uvicorn_server(app) as url:
        yield url
    reset_circuit_breakers()


@pytest.fixture
def client(gateway_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0,
                       timeout=10) as c:
        yield c


@contextmanager
def gateway(config: GatewayConfig, **options: Any) -> Iterator[str]:
    reset_circuit_breakers()
    with uvicorn_server(Gateway(config, **options)) as url:
        yield url
    reset_circuit_breakers()


def sample(collector: MetricsCollector) -> Callable[..., float]:
    def value(name: str, **labels: str) -> float:
        return collector.registry.get_sample_value(name, labels) or 0.0

    return value
