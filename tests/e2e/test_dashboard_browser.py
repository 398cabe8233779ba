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

from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.http import dashboard
from tinyllm.metrics import MetricsCollector
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TINYLLM_TEST_ARTIFACTS", REPO / ".artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What the probe of this machine kind found Chromium needs here (no network, as root).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHARTS = 11  # eight in the grid; spend, goodput and attainment in their panels
#: USD per million output tokens of the failing backend: 4 tokens a request, 0.004 USD.
FLAKY_PRICE = ModelPrice(input=0.0, output=1000.0)


@pytest.fixture
def accounting() -> Iterator[None]:
    """Before the process-wide collector exists: the failing backend priced, the
    embedded model free (it runs here), a third model unpriced; every model held to
    generous objectives (a failed request still misses them), target 90 %."""
    configure_prices(PriceTable({"flaky-backend": FLAKY_PRICE}))
    configure_slo(SLOConfig(Objectives(ttft=30.0, e2e=60.0, target=0.9)))
    yield
    configure_prices(None)
    configure_slo(None)


@pytest.fixture
def served(accounting: None, default_collector: MetricsCollector,
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


def scraped(url: str, name: str = "tinyllm_requests_total", **where: str) -> float:
    """The sum of ``name``'s samples (those whose labels match ``where``) in /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == name
               and all(s.labels.get(k) == v for k, v in where.items()))


def table(page: Any, selector: str) -> dict[str, list[str]]:
    """A table's rows by their first cell, each as the texts of its cells."""
    rows = page.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    return {row[0]: row for row in rows}


def drive_traffic() -> None:
    """The embedded model (real tokens) and a backend that fails a third of the time."""
    from tinyllm.lifecycle import get_lifecycle
    from tinyllm.models import LocalClient

    with LocalClient(progress=False) as local:
        for _ in range(2):
            assert local.generate("Question: What is 2+2?\nAnswer:", max_tokens=6).text
    lc = get_lifecycle()
    with lc.start("mystery-model", request_type="chat") as req:  # no price anywhere
        req.usage(input_tokens=5, output_tokens=2)
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
    assert page.text_content("#spent-total") == "$0.00"
    assert page.is_visible("#spend-empty") and page.is_visible("#slo-empty")
    assert not page.is_visible("#unpriced-figure")

    drive_traffic()
    time.sleep(1.5)  # the sampler's next looks
    refreshed = int(page.evaluate("document.body.dataset.refreshed"))
    page.wait_for_function(f"Number(document.body.dataset.refreshed) >= {refreshed + 2}",
                           timeout=15000)
    assert not page.is_visible("#empty-state")
    assert float(page.text_content("#total-requests") or "nan") == scraped(served)
    assert page.text_content("#total-errors") == "3"
    by_model = table(page, "#models")
    assert set(by_model) == {"gemma3-270m", "flaky-backend", "mystery-model"}
    assert by_model["flaky-backend"][1] == "9" and by_model["flaky-backend"][3] == "33.3 %"
    assert by_model["gemma3-270m"][3] == "0.0 %"
    assert by_model["gemma3-270m"][6] != "—"  # a real TTFT from the embedded model
    assert "No GPU figures" in (page.text_content("#gpu") or "")
    assert page.eval_on_selector_all("canvas", "els => els.length") >= CHARTS

    # Spend: what /metrics counted, 9 failing-backend requests at 0.004 USD; the
    # embedded model runs here (free); the third model has no price: unpriced, never $0.
    spent = scraped(served, "tinyllm_cost_usd_total")
    assert spent == pytest.approx(9 * 0.004)
    assert page.text_content("#spent-total") == "$0.04"  # 0.036, to the cent
    assert page.text_content("#unpriced-total") == "1" and page.is_visible("#unpriced-figure")
    spend = table(page, "#spend-models")
    assert set(spend) == {"gemma3-270m", "flaky-backend", "mystery-model"}
    assert spend["flaky-backend"][1] == "$0.04" and spend["gemma3-270m"][1] == "$0.00"
    assert spend["mystery-model"][1:] == ["unpriced", "unpriced", "1"]
    assert spend["flaky-backend"][2].startswith("$")  # USD/h over the last minute
    per_hour = [v for v in httpx.get(f"{served}/dashboard/data").json()["series"][
        "cost_usd_per_h"] if v]
    assert per_hour and sum(per_hour) > 0  # the chart has real points
    legend = page.eval_on_selector_all("#chart-spend .u-legend .u-label",
                                       "els => els.map(e => e.textContent)")
    assert "total" in legend and "flaky-backend" in legend and "mystery-model" not in legend

    # Goodput: every request judged; the failing backend's 3 errors miss their objectives.
    slo = table(page, "#slo-models")
    assert set(slo) == {"gemma3-270m", "flaky-backend", "mystery-model"}
    met = scraped(served, "tinyllm_slo_requests_total", model="flaky-backend",
                  objective="all", outcome="met")
    assert met == 6
    assert slo["flaky-backend"][1] == "90.0 %"  # the target
    assert slo["flaky-backend"][2] == "66.7 %"  # attained over the last minute
    assert page.eval_on_selector_all(
        "#slo-models td[data-model='flaky-backend'] ~ td.lines div",
        "els => els.map(e => e.textContent)") == [
        "ttft ≤ 30.00 s: 66.7 % (6/9)", "e2e ≤ 60.00 s: 66.7 % (6/9)", "all: 66.7 % (6/9)"]
    assert slo["gemma3-270m"][2] == "100.0 %"
    assert page.text_content("#slo-target") == "90.0 %"
    assert not page.is_visible("#slo-empty")
    assert page.eval_on_selector_all("#chart-goodput .u-legend .u-label",
                                     "els => els.map(e => e.textContent)") == [
        "Time", "good", "judged"]
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
