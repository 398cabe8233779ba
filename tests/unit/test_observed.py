"""What the process already observes: the open request and the gateway's addresses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tinyllm._observed import (
    forget_endpoint,
    observe_endpoint,
    observed_endpoint,
    observing_endpoints,
    open_request,
)
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics.collector import MetricsCollector


@pytest.fixture
def endpoint() -> Iterator[tuple[str, int]]:
    observe_endpoint("0.0.0.0", 18081)
    try:
        yield "0.0.0.0", 18081
    finally:
        forget_endpoint("0.0.0.0", 18081)


def test_an_address_on_every_interface_matches_the_local_names(
        endpoint: tuple[str, int]) -> None:
    assert observing_endpoints()
    assert observed_endpoint("http://127.0.0.1:18081/v1")
    assert observed_endpoint("http://localhost:18081")
    assert observed_endpoint("http://[::1]:18081/v1")
    assert not observed_endpoint("http://127.0.0.1:18082/v1")
    assert not observed_endpoint("http://example.com:18081/v1")  # another machine
    assert not observed_endpoint("http://[bad")  # not a URL: not ours


def test_the_gateway_registers_the_address_it_serves() -> None:
    from tinyllm.serve.server import server_config

    server_config(lambda *a: None, host="127.0.0.1", port=18083)
    try:
        assert observed_endpoint("http://127.0.0.1:18083/v1")
    finally:
        forget_endpoint("127.0.0.1", 18083)


def test_a_request_used_as_a_block_is_the_open_request() -> None:
    lifecycle = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
    assert open_request.get() is None
    with lifecycle.start("m") as outer:
        assert open_request.get() is outer
        with lifecycle.start("n") as inner:
            assert open_request.get() is inner
        assert open_request.get() is outer
    assert open_request.get() is None
    with pytest.raises(KeyError), lifecycle.start("m"):
        raise KeyError
    assert open_request.get() is None
