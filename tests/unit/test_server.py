"""start_metrics_server: formats, compression, health, errors."""

from __future__ import annotations

import gzip
import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tinyllm import MetricsServerError, start_metrics_server
from tinyllm.metrics import MetricsCollector
from tinyllm.metrics.server import Response


@pytest.fixture
def served(collector: MetricsCollector, registry: CollectorRegistry):  # type: ignore[no-untyped-def]
    collector.increment_request_count("m", "g", "generate")
    with start_metrics_server(port=0, registry=registry) as server:
        yield server


def test_serves_prometheus_text(served) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{served.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'tinyllm_requests_total{graph="g",model="m",request_type="generate"} 1.0' in r.text


def test_serves_openmetrics_when_asked(served) -> None:  # type: ignore[no-untyped-def]
    accept = "application/openmetrics-text; version=1.0.0"
    r = httpx.get(f"{served.url}/metrics", headers={"Accept": accept})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_gzip_when_allowed(served) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection((served.host, served.port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                  b"Connection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert b"tinyllm_requests_total" in gzip.decompress(body)


def test_name_filter(served) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{served.url}/metrics", params={"name[]": "tinyllm_requests_total"})
    assert "tinyllm_requests_total" in r.text
    assert "tinyllm_errors_total" not in r.text


def test_health_and_unknown_paths(served) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{served.url}/health").json()["status"] == "healthy"
    r = httpx.get(f"{served.url}/nope")
    assert r.status_code == 404 and "/metrics" in r.json()["error"]
    assert httpx.head(f"{served.url}/metrics").status_code == 200


def test_keep_alive_connections_are_reused(served) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{served.url}/metrics").status_code == 200


def test_extra_routes_and_bad_query(registry: CollectorRegistry) -> None:
    def route(query: dict[str, list[str]], headers: object) -> Response:
        if "x" not in query:
            raise ValueError("missing x; valid: x=<int>")
        return Response.json({"x": query["x"]})

    with start_metrics_server(port=0, registry=registry, routes={"/api/x": route}) as s:
        assert httpx.get(f"{s.url}/api/x", params={"x": "1"}).json() == {"x": ["1"]}
        r = httpx.get(f"{s.url}/api/x")
        assert r.status_code == 400 and "valid" in r.json()["error"]


def test_busy_port_raises_one_clear_error(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as first:
        expected = f"port {first.port} is already in use"
        with pytest.raises(MetricsServerError, match=expected):
            start_metrics_server(port=first.port, registry=registry)


def test_stop_frees_the_port(registry: CollectorRegistry) -> None:
    server = start_metrics_server(port=0, registry=registry)
    port = server.port
    server.stop()
    again = start_metrics_server(port=port, registry=registry)
    again.stop()


@pytest.mark.parametrize("bad", [-1, 70000, "9090"])
def test_bad_port_values(bad: object) -> None:
    with pytest.raises(ValueError, match="port"):
        start_metrics_server(port=bad)  # type: ignore[arg-type]


def test_binds_loopback_by_default(registry: CollectorRegistry) -> None:
    with start_metrics_server(port=0, registry=registry) as s:
        assert s.host == "127.0.0.1"


def test_health_reports_the_health_checks(registry: CollectorRegistry) -> None:
    from tinyllm.health import register_health_check, unregister_health_check

    with start_metrics_server(port=0, registry=registry) as s:
        body = httpx.get(f"{s.url}/health").json()
        assert body["status"] == "healthy" and "metrics" in body["checks"]
        register_health_check("broken", lambda timeout: ("unhealthy", "disk gone"))
        try:
            r = httpx.get(f"{s.url}/health")
        finally:
            unregister_health_check("broken")
        assert r.status_code == 503
        assert r.json()["checks"]["broken"] == {"status": "unhealthy", "detail": "disk gone"}
