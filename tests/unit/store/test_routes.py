"""The HTTP routes on a real metrics server: answers, content types, 400s, never 500."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError

from tinyllm.metrics.server import MetricsServer, start_metrics_server
from tinyllm.store import MetricsDatabase, store_routes

from .conftest import seed_example


@pytest.fixture
def server(db: MetricsDatabase) -> Iterator[MetricsServer]:
    seed_example(db)
    with start_metrics_server(port=0, registry=CollectorRegistry(),
                              routes=store_routes(db)) as srv:
        yield srv


def test_summary_route(server: MetricsServer) -> None:
    r = httpx.get(f"{server.url}/api/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["overall"]["total_requests"] == 15
    r = httpx.get(f"{server.url}/api/metrics", params={"since": "1700000020"})
    assert r.json()["overall"]["total_requests"] == 5


@pytest.mark.parametrize(("fmt", "ctype", "marker"), [
    ("prometheus", "text/plain; version=0.0.4; charset=utf-8", "# TYPE diffusion_llm_"),
    ("influxdb", "text/plain; charset=utf-8", "diffusion_llm,type=requests"),
    ("json", "application/json", '"events"'),
])
def test_export_route(server: MetricsServer, fmt: str, ctype: str, marker: str) -> None:
    r = httpx.get(f"{server.url}/api/metrics/export",
                  params={"format": fmt, "prefix": "diffusion_llm"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    assert marker in r.text


def test_export_defaults_to_json(server: MetricsServer) -> None:
    r = httpx.get(f"{server.url}/api/metrics/export")
    assert len(r.json()["events"]) == 15


@pytest.mark.parametrize(("path", "query", "word"), [
    ("/api/metrics/export", "format=xml", "json, prometheus, influxdb"),
    ("/api/metrics/export", "prefix=9x", "prefix"),
    ("/api/metrics/export", "format=json&format=json", "once"),
    ("/api/metrics/export", "fromat=json", "valid: format, prefix"),
    ("/api/metrics", "model_id=" + "a" * 300, "at most 256"),
    ("/api/metrics", "model_id=a%00b", "control characters"),
    ("/api/metrics", "model_id=a%0Ab", "control characters"),
    ("/api/metrics", "since=10&until=5", "since must be <= until"),
    ("/api/metrics", "since=yesterday", "epoch seconds"),
    ("/api/metrics", "until=nan", "finite"),
    ("/api/metrics", "since=-5", "finite epoch seconds >= 0"),
    ("/api/metrics", "until=1e400", "finite"),
])
def test_bad_parameters_are_400_naming_the_valid_values(
    server: MetricsServer, path: str, query: str, word: str
) -> None:
    r = httpx.get(f"{server.url}{path}?{query}")
    assert r.status_code == 400, r.text
    assert word in r.json()["error"]


def test_a_broken_database_is_503_not_500(
    db: MetricsDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gone(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(db.engine, "connect", gone)
    routes = store_routes(db)
    for path in ("/api/metrics", "/api/metrics/export"):
        response = routes[path]({"format": ["prometheus"]} if "export" in path else {}, {})
        assert response.status == 503
        assert json.loads(response.body) == {"error": "metrics store unavailable"}


@pytest.mark.parametrize("bad", ["api", "/api/", "", "/a b", "/"])
def test_bad_api_prefix(db: MetricsDatabase, bad: str) -> None:
    with pytest.raises(ValueError, match="api_prefix"):
        store_routes(db, bad)


def test_custom_prefix_like_the_seed(db: MetricsDatabase) -> None:
    assert sorted(store_routes(db, "/api/diffusion")) == [
        "/api/diffusion/metrics", "/api/diffusion/metrics/export"]
