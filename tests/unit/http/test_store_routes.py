"""The store's routes, one implementation on both transports (the standard-library
thread server and the ASGI app under a real uvicorn): answers, content types, streaming,
400s, 503s, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from tests.support.servers import TRANSPORTS, http_1_0_get, serving, uvicorn_server
from tests.unit.store.conftest import record_priced, seed_example
from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase, store_asgi_app, store_routes


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsDatabase]:
    """The diffusion service's example data, shared by the read-only tests of this module."""
    db = MetricsDatabase(tmp_path_factory.mktemp("routes") / "metrics.db",
                         collector=MetricsCollector(registry=CollectorRegistry()))
    seed_example(db)
    yield db
    db.close()


@pytest.fixture(scope="module", params=TRANSPORTS)
def url(request: pytest.FixtureRequest, seeded: MetricsDatabase) -> Iterator[str]:
    """The seeded store's routes on each transport in turn; the base URL."""
    with serving(request.param, store_routes(seeded)) as base:
        yield base


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_summary_route(url: str) -> None:
    r = httpx.get(f"{url}/api/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["overall"]["total_requests"] == 15
    r = httpx.get(f"{url}/api/metrics", params={"since": "1700000020"})
    assert r.json()["overall"]["total_requests"] == 5


@pytest.mark.parametrize(("fmt", "ctype", "marker"), [
    ("prometheus", "text/plain; version=0.0.4; charset=utf-8", "# TYPE diffusion_llm_"),
    ("influxdb", "text/plain; charset=utf-8", "diffusion_llm,type=requests"),
    ("json", "application/json", '"events"'),
])
def test_export_route(url: str, fmt: str, ctype: str, marker: str) -> None:
    r = httpx.get(f"{url}/api/metrics/export",
                  params={"format": fmt, "prefix": "diffusion_llm"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    assert marker in r.text


def test_export_defaults_to_json(url: str) -> None:
    r = httpx.get(f"{url}/api/metrics/export")
    assert len(r.json()["events"]) == 15


def test_the_export_is_streamed_a_page_at_a_time(
    transport: str, make_db: Callable[..., MetricsDatabase],
) -> None:
    db = make_db()
    for i in range(3500):
        db.record_event("diffusion_generate", 0.25, model_id="dream", timestamp=1e9 + i,
                        metadata={"token_count": i, "note": "ünïcode \"quoted\""})
    assert db.flush()
    with serving(transport, store_routes(db)) as url, \
            httpx.stream("GET", f"{url}/api/metrics/export?format=json&since=1000000500",
                         headers={"Accept-Encoding": "identity"}) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        chunks = list(r.iter_raw())
    doc = json.loads(b"".join(chunks))
    assert len(doc["events"]) == 3000
    assert doc["events"][-1]["metadata"] == {"token_count": 3499, "note": "ünïcode \"quoted\""}
    assert len(chunks) >= 3  # the head, then pages of events


def test_an_export_that_fails_midway_is_cut_short_and_logged(
    transport: str, db: MetricsDatabase, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def failing_export(fmt: str, **_kw: object) -> Iterator[str]:
        yield '{"events": ['
        raise OSError("disk I/O error")

    monkeypatch.setattr(db, "iter_export", failing_export)
    with serving(transport, store_routes(db)) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{url}/api/metrics/export", timeout=5)
        assert httpx.get(f"{url}/api/metrics", timeout=5).status_code == 200
    assert "export stopped part way: disk I/O error" in caplog.text


def test_a_streamed_export_is_gzipped_when_asked(
    url: str, seeded: MetricsDatabase,
) -> None:
    r = httpx.get(f"{url}/api/metrics/export", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    got, want = r.json(), json.loads(seeded.export("json"))
    assert got.pop("generated_at") <= want.pop("generated_at") and got == want
    head = httpx.head(f"{url}/api/metrics/export")
    assert head.status_code == 200 and head.content == b""


def test_an_http_1_0_client_gets_the_export_and_the_connection_closed(
    transport: str, seeded: MetricsDatabase,
) -> None:
    # h11: uvicorn's httptools protocol answers HTTP/1.0 with chunked encoding.
    with serving(transport, store_routes(seeded), http="h11") as url:
        head, body = http_1_0_get(url, "/api/metrics/export?format=prometheus")
    assert head.split(b"\r\n")[0].endswith(b" 200 OK") and b"chunked" not in head.lower()
    assert body.decode() == seeded.export("prometheus")


# Every bad parameter, for both transports: (path, raw query string, words the error names).
BAD_PARAMETERS = [
    # unknown, repeated or misspelt parameters
    ("/api/metrics/export", "format=xml", "json, prometheus, influxdb"),
    ("/api/metrics/export", "format=JSON", "json, prometheus, influxdb"),
    ("/api/metrics/export", "format=json%27%3B%20DROP%20TABLE%20performance_events%3B--",
     "json, prometheus, influxdb"),
    ("/api/metrics/export", "prefix=9x", "prefix"),
    ("/api/metrics/export", "prefix=x%20y", "letters, digits or underscores"),
    ("/api/metrics/export", "format=json&format=json", "once"),
    ("/api/metrics/export", "fromat=json", "valid: format, prefix"),
    ("/api/metrics", "format=json", "valid: since, until, model_id"),
    ("/api/metrics", "x" * 5000 + "=1", "valid: since, until, model_id"),
    # absurd lengths
    ("/api/metrics", "model_id=" + "a" * 300, "at most 256"),
    ("/api/metrics/export", "format=" + "j" * 60_000, "at most 256"),
    ("/api/metrics", "since=" + "9" * 257, "at most 256"),
    # control and invisible characters
    ("/api/metrics", "model_id=a%00b", "control characters"),
    ("/api/metrics", "model_id=a%0Ab", "control characters"),
    ("/api/metrics", "model_id=a%0D%0AX-Injected:%201", "control characters"),
    ("/api/metrics", "model_id=a%C2%85b", "control characters"),  # NEL, a C1 control
    ("/api/metrics", "model_id=a%E2%80%AEb", "control characters"),  # right-to-left override
    ("/api/metrics", "since=1%E2%80%8B7", "control characters"),  # zero-width space
    # injection attempts (values only ever reach SQL as bound parameters anyway)
    ("/api/metrics", "model_id=x%27%20OR%20%271%27%3D%271", "letters, digits and"),
    ("/api/metrics", "model_id=x%22%3B%20DELETE%20FROM%20performance_events", "letters, digits"),
    ("/api/metrics", "model_id=%3Cscript%3E", "letters, digits and"),
    ("/api/metrics", "model_id=a%2Fb%5C..", "letters, digits and"),
    ("/api/metrics", "since=1%20OR%201%3D1", "ISO 8601"),
    ("/api/metrics", "until=0x10", "ISO 8601"),
    # bad time ranges
    ("/api/metrics", "since=10&until=5", "since must be <= until"),
    ("/api/metrics", "since=yesterday", "ISO 8601"),
    ("/api/metrics", "since=2026-13-45", "ISO 8601"),
    ("/api/metrics", "until=nan", "1970-01-01 to 9999-12-31"),
    ("/api/metrics", "until=inf", "1970-01-01 to 9999-12-31"),
    ("/api/metrics", "since=-5", "1970-01-01 to 9999-12-31"),
    ("/api/metrics", "until=1e400", "1970-01-01 to 9999-12-31"),
    ("/api/metrics", "until=1e300", "1970-01-01 to 9999-12-31"),
    ("/api/metrics/export", "format=prometheus&until=253402300800", "9999-12-31"),
    ("/api/metrics", "since=99999999999999999999999", "1970-01-01 to 9999-12-31"),
    ("/api/metrics", "since=5000000d", "ISO 8601"),  # a duration reaching before 1970
    ("/api/metrics/export", "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
     "since must be <= until"),
]


@pytest.mark.parametrize(("path", "query", "words"), BAD_PARAMETERS)
def test_bad_parameters_are_400_naming_the_valid_values(
    url: str, path: str, query: str, words: str
) -> None:
    r = httpx.get(f"{url}{path}?{query}")
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    assert len(r.json()["error"]) < 400  # the input is quoted cut short, not echoed whole


@pytest.mark.parametrize("query", [
    "since=1700000020", "since=1.70000002e9", "since=2023-11-14T22:13:40Z",
    "since=2023-11-14T22:13:40%2B00:00", "until=1700000020&since=", "since=20000d",
])
def test_time_parameters_take_the_clis_forms(url: str, query: str) -> None:
    r = httpx.get(f"{url}/api/metrics?{query}")
    assert r.status_code == 200, r.text
    total = r.json()["overall"]["total_requests"]
    assert total == (10 if query.startswith("until") else 5 if "20000d" not in query else 15)


@pytest.mark.parametrize("model_id", [
    "dream", "meta-llama/Llama-3.1-8B-Instruct", "llama3.1:8b", "ft:gpt-4o:org:x@rev",
    "a=1", "--", "~/x+y", "modèle",
])
def test_user_values_reach_sql_only_as_bound_parameters(
    seeded: MetricsDatabase, url: str, model_id: str
) -> None:
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(seeded.engine, "before_cursor_execute", seen)
    try:
        for path in ("/api/metrics", "/api/metrics/export?format=prometheus",
                     "/api/metrics/export?format=json"):
            sep = "&" if "?" in path else "?"
            r = httpx.get(f"{url}{path}{sep}model_id={quote(model_id, safe='')}"
                          "&since=1700000001.25")
            assert r.status_code == 200, r.text
    finally:
        event.remove(seeded.engine, "before_cursor_execute", seen)
    assert statements
    assert not [s for s in statements if model_id in s or "1700000001.25" in s]
    expected = 13 if model_id == "dream" else 0
    assert r.json()["summary"]["overall"]["total_requests"] == expected


def test_a_broken_database_is_503_not_500(
    transport: str, make_db: Callable[..., MetricsDatabase], monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = make_db()

    def gone(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(db.engine, "connect", gone)
    with serving(transport, store_routes(db)) as url:
        for path in ("/api/metrics", *(f"/api/metrics/export?format={fmt}"
                                       for fmt in ("json", "prometheus", "influxdb"))):
            r = httpx.get(f"{url}{path}")
            assert r.status_code == 503
            assert r.json() == {"error": "metrics store unavailable"}


@pytest.mark.parametrize("bad", ["api", "/api/", "", "/a b", "/"])
def test_bad_api_prefix(db: MetricsDatabase, bad: str) -> None:
    with pytest.raises(ValueError, match="api_prefix"):
        store_routes(db, bad)


def test_custom_prefix_like_the_diffusion_service(db: MetricsDatabase) -> None:
    assert sorted(store_routes(db, "/api/diffusion")) == [
        "/api/diffusion/metrics", "/api/diffusion/metrics/export"]


def seeded_small(make_db: Callable[..., MetricsDatabase]) -> MetricsDatabase:
    db = make_db()
    for i in range(10):
        db.record_event("diffusion_generate", 1.5, model_id="dream",
                        metadata={"token_count": 2, "success": i >= 2})
    db.record_event("diffusion_infill", 2.0, model_id="dream", metadata={"token_count": 6})
    assert db.flush()
    return db


def test_one_line_mount_in_a_starlette_app_serves_the_diffusion_endpoints(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    db = seeded_small(make_db)

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("the host app")

    app = Starlette(routes=[StarletteRoute("/", home)])
    app.mount("/api/diffusion", store_asgi_app(db, "/api/diffusion", "diffusion_llm"))
    with uvicorn_server(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "the host app"
        summary = client.get("/api/diffusion/metrics").json()
        assert summary["overall"]["total_requests"] == 11
        assert summary["endpoints"]["generate"]["errors"] == 2
        prom = client.get("/api/diffusion/metrics/export", params={"format": "prometheus"})
        assert prom.headers["content-type"].startswith("text/plain")
        assert 'diffusion_llm_requests_total{endpoint="generate"} 10' in prom.text
        influx = client.get("/api/diffusion/metrics/export?format=influxdb")
        assert influx.text.startswith("diffusion_llm,type=requests,endpoint=generate count=10 ")
        bad = client.get("/api/diffusion/metrics/export?format=bogus")
        assert bad.status_code == 400 and "json, prometheus, influxdb" in bad.json()["error"]
        assert client.get("/api/diffusion/nope").status_code == 404
        assert client.post("/api/diffusion/metrics").status_code == 405


def test_standalone_asgi_app_with_the_default_prefix(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    with uvicorn_server(store_asgi_app(seeded_small(make_db))) as url:
        assert httpx.get(f"{url}/api/metrics").json()["overall"]["total_requests"] == 11
        assert httpx.get(f"{url}/api/metrics?since=yesterday").status_code == 400


def test_summary_and_exports_carry_spend_by_model(
    transport: str, make_db: Callable[..., MetricsDatabase]
) -> None:
    db = make_db()
    record_priced(db)
    gpt = 0.0123 + 0.0456 + 1e-7 + 0.3  # PRICED's gpt-4o costs, by hand
    with serving(transport, store_routes(db, "/api/diffusion", "diffusion_llm")) as base:
        url = f"{base}/api/diffusion/metrics"
        cost = httpx.get(url).json()["cost"]
        assert cost["total_usd"] == pytest.approx(gpt, abs=1e-9)
        assert cost["by_model"]["mystery"]["unpriced_requests"] == 3
        one = httpx.get(url, params={"model_id": "gpt-4o", "since": "1700000001"}).json()
        assert one["cost"]["total_usd"] == pytest.approx(gpt - 0.0123, abs=1e-9)
        assert one["slo"]["by_model"] == {
            "gpt-4o": {"requests": 2, "met": 1, "goodput_ratio": 0.5}}
        prom = httpx.get(f"{url}/export", params={"format": "prometheus"}).text
        samples = {(s.name, s.labels.get("model_id")): s.value
                   for f in text_string_to_metric_families(prom) for s in f.samples}
        assert samples[("diffusion_llm_cost_usd_total", "gpt-4o")] == pytest.approx(gpt)
        assert samples[("diffusion_llm_unpriced_requests_total", "mystery")] == 3
        influx = httpx.get(f"{url}/export", params={"format": "influxdb",
                                                    "model_id": "local"}).text
        assert influx.splitlines()[-1].startswith(
            "diffusion_llm,type=cost,model_id=local cost_usd=0.0,unpriced_requests=0,"
            "requests=2,slo_requests=2,slo_met=2 ")
        doc = httpx.get(f"{url}/export").json()
        assert doc["summary"]["cost"]["by_model"]["gpt-4o"]["cost_usd"] == pytest.approx(gpt)
