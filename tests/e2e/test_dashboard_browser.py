"""The built-in dashboard in a real browser (Debian's chromium, driven by Playwright):
the empty state, every chart drawn, no console error, the figures equal to /metrics',
known traffic from the embedded model and a backend that fails, a screenshot kept."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tinyllm.http import dashboard
from tinyllm.metrics import MetricsCollector

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TINYLLM_TEST_ARTIFACTS", REPO / ".artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What the probe of this machine kind found Chromium needs here (no network, as root).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHARTS = 8


@pytest.fixture
def served(default_collector: MetricsCollector,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from tinyllm import start_metrics_server

    dashboard.reset_histories()
    monkeypatch.setattr(dashboard, "INTERVAL", 0.5)
    with start_metrics_server(port=0) as server:
        yield server.url
    dashboard.reset_histories()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/ensure-services.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/dashboard")
    page.wait_for_function("Number(document.body.dataset.refreshed || 0) >= 1",
                           timeout=15000)
    return page, errors


def scraped_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "tinyllm_requests_total")


def drive_traffic() -> None:
    """The embedded model (real tokens) and a backend that fails a third of the time."""
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.models import LocalClient

    with LocalClient(progress=False) as local:
        for _ in range(2):
            assert local.generate("Question: What is 2+2?\nAnswer:", max_tokens=6).text
    lc = get_lifecycle()
    for i in range(9):
        try:
            with lc.start("flaky-backend", request_type="stream") as req:
                req.token(4)
                if i % 3 == 0:
                    raise ConnectionError("backend refused")
        except ConnectionError:
            pass


def test_the_dashboard_from_empty_to_live_in_a_real_browser(served: str, browser: Any) -> None:
    page, errors = open_page(browser, served)
    # Empty: the empty state says so, the charts are still drawn, nothing fails.
    assert page.is_visible("#empty-state")
    assert page.text_content("#total-requests") == "0"
    assert page.eval_on_selector_all("[data-drawn='1']", "els => els.length") == CHARTS
    assert page.is_visible("#models-empty")

    drive_traffic()
    time.sleep(1.5)  # the sampler's next looks
    refreshed = int(page.evaluate("document.body.dataset.refreshed"))
    page.wait_for_function(f"Number(document.body.dataset.refreshed) >= {refreshed + 2}",
                           timeout=15000)
    assert not page.is_visible("#empty-state")
    assert float(page.text_content("#total-requests") or "nan") == scraped_requests(served)
    assert page.text_content("#total-errors") == "3"
    rows = page.eval_on_selector_all(
        "#models tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    by_model = {row[0]: row for row in rows}
    assert set(by_model) == {"gemma3-270m", "flaky-backend"}
    assert by_model["flaky-backend"][1] == "9" and by_model["flaky-backend"][3] == "33.3 %"
    assert by_model["gemma3-270m"][3] == "0.0 %"
    assert by_model["gemma3-270m"][6] != "—"  # a real TTFT from the embedded model
    assert "No GPU figures" in (page.text_content("#gpu") or "")
    assert page.eval_on_selector_all("canvas", "els => els.length") >= CHARTS
    assert errors == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("TINYLLM_UPDATE_SCREENSHOT"):  # refresh the README's picture
        shutil.copyfile(shot, REPO / "docs" / "images" / "dashboard.png")


def test_the_data_endpoint_with_a_store_and_on_the_asgi_app(
    default_collector: MetricsCollector, tmp_path: Path, browser: Any,
) -> None:
    from tests.support.servers import uvicorn_server
    from tinyllm.http import asgi_app
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.store import close_store, configure_store

    dashboard.reset_histories()
    db = configure_store(tmp_path / "store.db")
    assert db is not None
    try:
        with uvicorn_server(asgi_app()) as url:
            with get_lifecycle().start("stored-model", request_type="generate") as req:
                req.token(3)
            db.flush()
            data = httpx.get(f"{url}/dashboard/data").json()
            assert data["version"] == 1 and data["store"]["recent"][0]["model"] == \
                "stored-model"
            page, errors = open_page(browser, url)
            assert page.is_visible("#store-panel")
            assert "stored-model" in (page.text_content("#store tbody") or "")
            assert errors == []
    finally:
        close_store()
        dashboard.reset_histories()
