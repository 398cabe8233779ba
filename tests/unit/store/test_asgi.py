"""The store's endpoints mounted in a Starlette app (real Starlette, real HTTP semantics)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tinyllm.store import MetricsDatabase, store_asgi_app


def seeded(make_db: Callable[..., MetricsDatabase]) -> MetricsDatabase:
    db = make_db()
    for i in range(10):
        db.record_event("diffusion_generate", 1.5, model_id="dream",
                        metadata={"token_count": 2, "success": i >= 2})
    db.record_event("diffusion_infill", 2.0, model_id="dream", metadata={"token_count": 6})
    assert db.flush()
    return db


def test_one_line_mount_serves_seed_004_endpoints(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    db = seeded(make_db)

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("the host app")

    app = Starlette(routes=[Route("/", home)])
    app.mount("/api/diffusion", store_asgi_app(db, "/api/diffusion", "diffusion_llm"))
    with TestClient(app) as client:
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
    with TestClient(store_asgi_app(seeded(make_db))) as client:
        assert client.get("/api/metrics").json()["overall"]["total_requests"] == 11
        assert client.get("/api/metrics?since=yesterday").status_code == 400


def test_the_export_is_streamed_a_page_at_a_time(
    make_db: Callable[..., MetricsDatabase],
) -> None:
    db = make_db()
    for i in range(3500):
        db.record_event("diffusion_generate", 0.25, model_id="dream", timestamp=1e9 + i,
                        metadata={"token_count": i, "note": "ünïcode \"quoted\""})
    assert db.flush()
    with TestClient(store_asgi_app(db)) as client, \
            client.stream("GET", "/api/metrics/export?format=json&since=1000000500") as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers  # sent chunked, as it is read
        chunks = list(r.iter_bytes())
    doc = json.loads(b"".join(chunks))
    assert len(doc["events"]) == 3000
    assert doc["events"][-1]["metadata"] == {"token_count": 3499, "note": "ünïcode \"quoted\""}
    assert len(chunks) >= 3  # the head, then pages of events


def test_a_broken_database_is_503_on_the_streamed_export(
    make_db: Callable[..., MetricsDatabase], monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = seeded(make_db)

    def gone(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(db.engine, "connect", gone)
    with TestClient(store_asgi_app(db)) as client:
        for fmt in ("json", "prometheus", "influxdb"):
            r = client.get(f"/api/metrics/export?format={fmt}")
            assert r.status_code == 503
            assert r.json() == {"error": "metrics store unavailable"}


def test_an_export_that_fails_midway_leaves_the_answer_unfinished(
    make_db: Callable[..., MetricsDatabase], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Under a real ASGI server (uvicorn): the 200 went out, so the app leaves the body
    # unfinished and the server closes the connection without the last chunk; the
    # client sees a broken answer, not a short one that looks whole.
    db = make_db()

    def failing_export(fmt: str, **_kw: object) -> Iterator[str]:
        yield '{"events": ['
        raise OSError("disk I/O error")

    monkeypatch.setattr(db, "iter_export", failing_export)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # log_config=None: uvicorn leaves the process's logging (and other tests') alone.
    server = uvicorn.Server(uvicorn.Config(store_asgi_app(db), host="127.0.0.1", port=port,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{port}/api/metrics/export", timeout=5)
        assert httpx.get(f"http://127.0.0.1:{port}/api/metrics", timeout=5).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
    assert "export stopped part way: disk I/O error" in caplog.text

