"""Fixtures shared by every test: fresh registries and a clean process-wide collector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tests.support.servers import free_port
from tinyllm.metrics import MetricsCollector, reset_metrics_collector


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of this test's own."""
    return CollectorRegistry()


@pytest.fixture
def collector(registry: CollectorRegistry) -> MetricsCollector:
    """A collector over the test's own registry (default namespace)."""
    return MetricsCollector(registry=registry, namespace="tinyllm")


@pytest.fixture
def default_collector() -> Iterator[MetricsCollector]:
    """The process-wide collector, fresh for this test and forgotten after it."""
    reset_metrics_collector()
    from tinyllm.metrics import get_metrics_collector

    yield get_metrics_collector()
    reset_metrics_collector()


@pytest.fixture
def port() -> int:
    return free_port()
