"""One route table, two transports: the standard-library thread server and the ASGI app
under a real uvicorn give the same answers. Every test here runs on both."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterator, Mapping

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.support.servers import TRANSPORTS, http_1_0_get, serving
from tinyllm.health import register_health_check, unregister_health_check
from tinyllm.http import Response, Route
from tinyllm.metrics import MetricsCollector


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(transport: str, collector: MetricsCollector,
        registry: CollectorRegistry) -> Iterator[str]:
    collector.increment_request_count("m", "g", "generate")
    with serving(transport, {}, registry) as base:
        yield base


def test_serves_prometheus_text(url: str) -> None:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'tinyllm_requests_total{graph="g",model="m",request_type="generate"} 1.0' in r.text


def test_serves_openmetrics_when_asked(url: str) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    r = httpx.get(f"{url}/metrics", headers={"Accept": accept})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_gzip_when_allowed(url: str) -> None:
    r = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
    assert "tinyllm_requests_total" in r.text  # httpx decoded it
    plain = httpx.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_name_filter(url: str) -> None:
    r = httpx.get(f"{url}/metrics", params={"name[]": "tinyllm_requests_total"})
    assert "tinyllm_requests_total" in r.text
    assert "tinyllm_errors_total" not in r.text


def test_health_unknown_paths_head_and_other_methods(url: str) -> None:
    assert httpx.get(f"{url}/health").json()["status"] == "healthy"
    r = httpx.get(f"{url}/nope")
    assert r.status_code == 404 and "/metrics" in r.json()["error"]
    head = httpx.head(f"{url}/metrics")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 1000  # the length GET would have
    post = httpx.post(f"{url}/metrics", content=b"x" * 100)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


def test_keep_alive_connections_are_reused(url: str) -> None:
    with httpx.Client() as client:
        for _ in range(20):
            assert client.get(f"{url}/metrics").status_code == 200
        assert client.post(f"{url}/health", content=b"body").status_code == 405
        assert client.get(f"{url}/health").status_code == 200  # the POST body left no trace


def test_health_reports_the_health_checks(url: str) -> None:
    body = httpx.get(f"{url}/health").json()
    assert body["status"] == "healthy" and list(body["checks"])[:3] == [
        "metrics", "events", "telemetry"]
    register_health_check("broken", lambda timeout: ("unhealthy", "disk gone"))
    try:
        r = httpx.get(f"{url}/health")
    finally:
        unregister_health_check("broken")
    assert r.status_code == 503
    assert r.json()["checks"]["broken"] == {"status": "unhealthy", "detail": "disk gone"}


def echo_x(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
    if "x" not in query:
        raise ValueError("missing x; valid: x=<int>")
    return Response.json({"x": query["x"], "ua": headers.get("user-agent")})


def test_extra_routes_and_bad_query(transport: str) -> None:
    with serving(transport, {"/api/x": echo_x}) as url:
        assert httpx.get(f"{url}/api/x", params={"x": "1"},
                         headers={"User-Agent": "t"}).json() == {"x": ["1"], "ua": "t"}
        r = httpx.get(f"{url}/api/x")
        assert r.status_code == 400 and r.json() == {"error": "missing x; valid: x=<int>"}


def slow_route(release: threading.Event) -> Route:
    def route(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        def rest() -> Iterator[bytes]:
            assert release.wait(10)
            yield b"1, 2]"

        return Response(200, b"[", rest=rest())

    return route


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_stream_reaches_the_client_piece_by_piece(transport: str, encoding: str) -> None:
    # The client gets the first piece while the rest does not exist yet.
    release = threading.Event()
    with serving(transport, {"/s": slow_route(release)}) as url, \
            httpx.stream("GET", f"{url}/s", timeout=5,
                         headers={"Accept-Encoding": encoding}) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        decode = zlib.decompressobj(31).decompress if encoding == "gzip" else bytes
        pieces = r.iter_raw()
        first = decode(next(pieces))
        release.set()
        assert first == b"["
        assert json.loads(first + decode(b"".join(pieces))) == [1, 2]


def test_a_stream_that_fails_midway_is_cut_short_and_the_server_carries_on(
    transport: str,
) -> None:
    # The 200 is already out: the body ends without chunked encoding's last chunk, so the
    # client sees a broken answer, never a complete-looking truncated one.
    def failing(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        def rest() -> Iterator[bytes]:
            yield b'{"events": ['
            raise OSError("disk I/O error")

        return Response(200, b"", rest=rest())

    with serving(transport, {"/f": failing}) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{url}/f", timeout=5)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200


def test_an_http_1_0_client_gets_a_stream_and_the_connection_closed(transport: str) -> None:
    release = threading.Event()
    release.set()
    # uvicorn's httptools protocol answers an HTTP/1.0 request with chunked encoding (its
    # own limitation, not the app's); its h11 protocol follows the RFC.
    with serving(transport, {"/s": slow_route(release)}, http="h11") as url:
        head, body = http_1_0_get(url, "/s")
    assert head.split(b"\r\n")[0].endswith(b" 200 OK") and b"chunked" not in head.lower()
    assert body == b"[1, 2]"


def test_a_client_gone_mid_stream_is_counted_and_the_stream_released(
    transport: str, default_collector: MetricsCollector,
) -> None:
    closed = threading.Event()

    def endless(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        def rest() -> Iterator[bytes]:
            try:
                while True:
                    time.sleep(0.01)
                    yield b"x" * 65536
            finally:
                closed.set()

        return Response(200, b"", "text/plain", rest=rest())

    def counted() -> float:
        value = default_collector.registry.get_sample_value(
            "tinyllm_http_disconnects_total", {"transport": transport})
        return value or 0.0

    with serving(transport, {"/endless": endless}) as url:
        with httpx.stream("GET", f"{url}/endless", timeout=5) as r:
            next(r.iter_raw())
        assert closed.wait(10), "the stream was not closed after the client left"
        deadline = time.monotonic() + 5
        while not counted() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert counted() >= 1
