"""Each request priced and judged once as it ends: hand-computed against a controlled clock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tinyllm import accounting
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig, parse_slo

PRICES = PriceTable({
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60, cached_input=0.075),
    "self-hosted": ModelPrice(per_hour=36.0),  # a cent a second
})
SLO = parse_slo({"slo": {"default": {"ttft": "70ms", "tpot": "15ms", "e2e": 0.3, "target": 0.95},
                         "models": {"strict": {"ttft": "20ms", "target": 0.999}}}})


class Clock:
    """perf_counter under the test's control: timings are exact, so outcomes are too."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("tinyllm.lifecycle.perf_counter", fake)
    return fake


@pytest.fixture
def configured() -> Iterator[None]:
    accounting.configure_prices(PRICES)
    accounting.configure_slo(SLO)
    try:
        yield
    finally:
        accounting.configure_prices(None)
        accounting.configure_slo(None)


@pytest.fixture
def registry(configured: None) -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def lifecycle(registry: CollectorRegistry) -> RequestLifecycle:
    # Built after the SLO is configured: its thresholds are bucket boundaries.
    return RequestLifecycle(MetricsCollector(registry=registry))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def stream(lc: RequestLifecycle, clock: Clock, model: str, *, ttft: float, gaps: list[float],
           provider: str | None = "openai", usage: tuple[int, int, int] | None = None,
           fail: bool = False) -> object:
    """A streamed request whose first token comes after ``ttft`` and each next after a gap."""
    req = lc.start(model, request_type="stream", provider=provider)
    clock.advance(ttft)
    req.token()
    for gap in gaps:
        clock.advance(gap)
        req.token()
    if usage is not None:
        req.usage(usage[0], usage[1], usage[2])
    req.end(RuntimeError("upstream broke") if fail else None)
    return req


def test_cost_is_computed_from_the_token_counts(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    req = stream(lifecycle, clock, "gpt-4o-mini", ttft=0.05, gaps=[0.01] * 9,
                 usage=(1000, 10, 200))
    expected = (800 * 0.15 + 200 * 0.075 + 10 * 0.60) / 1e6
    assert req.cost_usd == pytest.approx(expected, abs=1e-15)
    stream(lifecycle, clock, "gpt-4o-mini-2024-07-18", ttft=0.05, gaps=[], usage=(100, 1, 0))
    second = (100 * 0.15 + 1 * 0.60) / 1e6
    assert value(registry, "tinyllm_cost_usd_total", model="gpt-4o-mini") == pytest.approx(
        expected, abs=1e-15)
    assert value(registry, "tinyllm_cost_usd_total", model="gpt-4o-mini-2024-07-18") == \
        pytest.approx(second, abs=1e-15)


def test_the_model_that_answered_is_the_one_priced(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    req = lifecycle.start("my-alias", provider="openai")
    req.response_model = "gpt-4o-mini-2024-07-18"
    req.usage(1_000_000, 0)
    req.end()
    assert req.cost_usd == pytest.approx(0.15)
    assert value(registry, "tinyllm_cost_usd_total", model="my-alias") == pytest.approx(0.15)
    assert value(registry, "tinyllm_unpriced_requests_total", model="my-alias") == 0


def test_an_unpriced_model_is_counted_as_unpriced_never_as_free(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    for _ in range(3):
        req = stream(lifecycle, clock, "mystery", ttft=0.01, gaps=[], usage=(10, 1, 0))
        assert req.cost_usd is None
    assert value(registry, "tinyllm_unpriced_requests_total", model="mystery") == 3
    assert registry.get_sample_value("tinyllm_cost_usd_total", {"model": "mystery"}) == 0.0


@pytest.mark.parametrize("provider", ["local", "ollama"])
def test_local_models_cost_nothing_unless_priced(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock,
        provider: str) -> None:
    req = stream(lifecycle, clock, "gemma3", ttft=0.01, gaps=[], provider=provider)
    assert req.cost_usd == 0.0
    assert value(registry, "tinyllm_unpriced_requests_total", model="gemma3") == 0


def test_an_hourly_price_is_spread_over_the_requests_served(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    # 36 USD an hour is 0.01 USD a second: each request pays for the time since the
    # previous one ended (the first, since it began), so the sum is the time served.
    first = lifecycle.start("self-hosted", provider="openai")
    clock.advance(2.0)
    first.end()
    clock.advance(8.0)  # idle, still running
    second = lifecycle.start("self-hosted", provider="openai")
    clock.advance(1.0)
    second.end()
    assert first.cost_usd == pytest.approx(0.02)
    assert second.cost_usd == pytest.approx(0.09)
    assert value(registry, "tinyllm_cost_usd_total", model="self-hosted") == pytest.approx(0.11)


def test_slo_outcomes_per_objective_and_all(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    # Default objectives: ttft 0.07, tpot 0.015, e2e 0.3.
    met = stream(lifecycle, clock, "m", ttft=0.05, gaps=[0.01] * 10)        # e2e 0.15
    slow_start = stream(lifecycle, clock, "m", ttft=0.1, gaps=[0.01] * 10)  # ttft missed
    slow_tokens = stream(lifecycle, clock, "m", ttft=0.05, gaps=[0.02] * 5)  # tpot missed
    long = stream(lifecycle, clock, "m", ttft=0.05, gaps=[0.014] * 20)     # e2e 0.33 missed
    failed = stream(lifecycle, clock, "m", ttft=0.01, gaps=[0.01], fail=True)
    assert met.slo == {"ttft": True, "tpot": True, "e2e": True, "all": True}
    assert slow_start.slo == {"ttft": False, "tpot": True, "e2e": True, "all": False}
    assert slow_tokens.slo == {"ttft": True, "tpot": False, "e2e": True, "all": False}
    assert long.slo == {"ttft": True, "tpot": True, "e2e": False, "all": False}
    assert failed.slo == {"ttft": False, "tpot": False, "e2e": False, "all": False}
    assert slow_tokens.tpot == pytest.approx(0.02)
    counts = {(o, out): value(registry, "tinyllm_slo_requests_total", model="m",
                              objective=o, outcome=out)
              for o in ("ttft", "tpot", "e2e", "all") for out in ("met", "missed")}
    assert counts == {
        ("ttft", "met"): 3, ("ttft", "missed"): 2,
        ("tpot", "met"): 3, ("tpot", "missed"): 2,
        ("e2e", "met"): 3, ("e2e", "missed"): 2,
        ("all", "met"): 1, ("all", "missed"): 4,
    }
    # Goodput: one good request (11 tokens) over the trailing minute.
    assert value(registry, "tinyllm_goodput_requests_per_second", model="m") == \
        pytest.approx(1 / 60)
    assert value(registry, "tinyllm_goodput_tokens_per_second", model="m") == \
        pytest.approx(11 / 60)
    assert value(registry, "tinyllm_slo_objective_seconds", model="m", objective="ttft") == 0.07
    assert value(registry, "tinyllm_slo_target_ratio", model="m") == 0.95


def test_a_named_model_has_its_own_objectives(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    req = stream(lifecycle, clock, "strict", ttft=0.05, gaps=[0.01])
    # ttft 0.02 (its own) is missed; tpot and e2e inherit the default's and are met.
    assert req.slo == {"ttft": False, "tpot": True, "e2e": True, "all": False}
    assert value(registry, "tinyllm_slo_target_ratio", model="strict") == 0.999


def test_cancelled_requests_are_not_judged_and_cost_what_they_used(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    req = lifecycle.start("gpt-4o-mini", request_type="stream", provider="openai")
    req.usage(input_tokens=1000)
    clock.advance(0.01)
    req.token(5)
    req.cancel()
    assert req.slo is None and req.cost_usd == pytest.approx((1000 * 0.15 + 5 * 0.6) / 1e6)
    assert value(registry, "tinyllm_slo_requests_total", model="gpt-4o-mini", objective="all",
                 outcome="met") == 0


def test_thresholds_are_exact_bucket_boundaries(lifecycle: RequestLifecycle,
                                                 registry: CollectorRegistry,
                                                 clock: Clock) -> None:
    for ttft in (0.06, 0.069, 0.071, 0.02):
        stream(lifecycle, clock, "m", ttft=ttft, gaps=[0.01])
    # le="0.07" counts exactly the requests at or under the threshold: the met count.
    assert value(registry, "tinyllm_inference_ttft_seconds_bucket", model="m", le="0.07") == 3
    assert value(registry, "tinyllm_slo_requests_total", model="m", objective="ttft",
                 outcome="met") == 3
    text = generate_latest(registry).decode()
    for family, le in (("inference_ttft_seconds", "0.02"),
                       ("inference_time_per_output_token_seconds", "0.015"),
                       ("inference_request_duration_seconds", "0.3"),
                       ("request_latency_seconds", "0.3")):
        assert any(line.startswith(f"tinyllm_{family}_bucket{{") and f'le="{le}"' in line
                   for line in text.splitlines()), family


def test_a_chunk_gap_is_counted_once_and_per_token_as_its_share(
        lifecycle: RequestLifecycle, registry: CollectorRegistry, clock: Clock) -> None:
    req = lifecycle.start("m", request_type="stream", provider="openai")
    clock.advance(0.05)
    req.token(2)          # first chunk, two tokens: TTFT, one gap of 0 inside it
    clock.advance(0.03)
    req.token(3)          # a chunk of three tokens 30 ms after the previous one
    clock.advance(0.01)
    req.token()           # a single token
    req.end()

    def hist(family: str, suffix: str) -> float:
        return value(registry, f"tinyllm_{family}_{suffix}", model="m")

    assert hist("inference_time_per_output_chunk_seconds", "count") == 2
    assert hist("inference_time_per_output_chunk_seconds", "sum") == pytest.approx(0.04)
    assert hist("inference_inter_token_latency_seconds", "count") == 5  # 6 tokens, 5 gaps
    assert hist("inference_inter_token_latency_seconds", "sum") == pytest.approx(0.04)
    # Per request: (duration - ttft) / (tokens - 1) = 0.04 / 5.
    assert req.tpot == pytest.approx(0.008)
    assert hist("inference_time_per_output_token_seconds", "sum") == pytest.approx(0.008)


def test_reconfiguring_prices_takes_effect_for_the_next_request(
        lifecycle: RequestLifecycle, clock: Clock) -> None:
    first = stream(lifecycle, clock, "gpt-4o-mini", ttft=0.01, gaps=[], usage=(1_000_000, 0, 0))
    accounting.configure_prices(PriceTable({"gpt-4o-mini": ModelPrice(input=1.0)}))
    second = stream(lifecycle, clock, "gpt-4o-mini", ttft=0.01, gaps=[], usage=(1_000_000, 0, 0))
    assert (first.cost_usd, second.cost_usd) == (pytest.approx(0.15), pytest.approx(1.0))


def test_an_slo_configured_too_late_is_a_warning_not_a_silent_gap(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    MetricsCollector(registry=registry)
    with caplog.at_level(logging.WARNING, logger="tinyllm.accounting"):
        accounting.configure_slo(SLOConfig(Objectives(ttft=0.123)))
    assert "0.123" in caplog.text and "not bucket boundaries" in caplog.text


def test_the_shipped_prices_are_the_default(clock: Clock) -> None:
    registry = CollectorRegistry()
    lc = RequestLifecycle(MetricsCollector(registry=registry))
    req = stream(lc, clock, "gpt-4o-mini", ttft=0.01, gaps=[], usage=(1_000_000, 0, 0))
    assert req.cost_usd == pytest.approx(0.15)


def test_a_broken_settle_never_reaches_the_caller(
        lifecycle: RequestLifecycle, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(accounting.ModelAccounting, "settle", broken)
    req = stream(lifecycle, clock, "m", ttft=0.01, gaps=[])
    assert req.status == "success" and lifecycle.observer_failures == 1


ENV_PROBE = textwrap.dedent("""
    from prometheus_client import generate_latest
    from tinyllm.lifecycle import get_lifecycle
    with get_lifecycle().start("house-model", request_type="stream", provider="openai") as r:
        r.token(); r.token(); r.usage(1_000_000, 2)
    print(r.cost_usd, r.slo["all"])
    print('le="0.333"' in generate_latest().decode())
""")


def test_the_environment_names_the_cost_files(tmp_path: Path) -> None:
    cost = tmp_path / "cost.yaml"
    cost.write_text("prices:\n  house-model: {input: 2.0, output: 4.0}\n"
                    "slo:\n  default: {ttft: 0.333}\n")
    env = {**os.environ, "TINYLLM_PRICES": str(cost), "TINYLLM_SLO": str(cost)}
    out = subprocess.run([sys.executable, "-c", ENV_PROBE], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["2.000008", "True", "True"]


def test_a_bad_file_in_the_environment_is_logged_and_left_out(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("prices: {house-model: {input: -2}}\n")
    env = {**os.environ, "TINYLLM_PRICES": str(bad)}
    probe = ("import logging; logging.basicConfig()\n"
             "from tinyllm.accounting import get_prices\n"
             "print(get_prices().lookup('gpt-4o-mini') is not None)")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"  # the shipped table still prices
    assert "TINYLLM_PRICES" in done.stderr and "input must be a number >= 0" in done.stderr
