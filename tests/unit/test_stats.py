"""The summariser behind `tinyllm stats`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tinyllm.accounting import configure_prices, configure_slo
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics import MetricsCollector, update_gpu_metrics
from tinyllm.metrics.stats import histogram_quantile, summarize
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.slo import Objectives, SLOConfig


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 10 / 20)
    assert histogram_quantile(1.0, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0


def test_summary_of_a_workload() -> None:
    reg = CollectorRegistry()
    c = MetricsCollector(registry=reg, namespace="ryot")
    lc = RequestLifecycle(c)
    for _i in range(4):
        with lc.start("m") as req:
            req.token(5)
            req.usage(input_tokens=3)
    try:
        with lc.start("m"):
            raise TimeoutError
    except TimeoutError:
        pass
    c.increment_cache_hit()
    c.increment_cache_miss()
    c.update_circuit_breaker_state("open", model="m")
    update_gpu_metrics("m", 0, 1.0, 2.0, 50, collector=c)
    s = summarize(generate_latest(reg).decode(), namespace="ryot")
    assert s["requests"]["total"] == 5
    assert s["requests"]["errors"] == 1
    assert s["requests"]["error_rate"] == pytest.approx(0.2)
    assert s["tokens"] == {"input": 12.0, "output": 20.0,
                           "per_second_by_model": s["tokens"]["per_second_by_model"]}
    assert s["cache"]["hit_rate"] == 0.5
    assert s["circuit_breakers"] == {"m": "open"}
    assert s["errors_by_type"] == {"timeout": 1.0}
    assert s["gpus"] == [{"model": "m", "gpu_id": "0", "used_bytes": 1.0,
                          "reserved_bytes": 2.0, "utilization_percent": 50.0}]
    assert s["latency_seconds"]["p95"] is not None
    assert s["ttft_seconds"]["p50"] is not None


def test_summary_of_another_namespace_is_empty() -> None:
    reg = CollectorRegistry()
    MetricsCollector(registry=reg).increment_request_count()
    assert summarize(generate_latest(reg).decode(), namespace="ryot")["requests"]["total"] == 0


@pytest.fixture
def accounting() -> Iterator[None]:
    """Model ``m`` priced (1 USD per million input tokens, 2 per million output), every
    other model unpriced; every model held to TTFT <= 0.5 s and e2e <= 5 s, target 90 %."""
    configure_prices(PriceTable({"m": ModelPrice(input=1.0, output=2.0)}))
    configure_slo(SLOConfig(Objectives(ttft=0.5, e2e=5.0, target=0.9)))
    yield
    configure_prices(None)
    configure_slo(None)


def _priced_workload(reg: CollectorRegistry) -> None:
    lc = RequestLifecycle(MetricsCollector(registry=reg))
    for model in ("m", "m", "other"):
        with lc.start(model, request_type="stream") as req:
            req.token(3)
            req.usage(input_tokens=1000, output_tokens=500)
    with pytest.raises(TimeoutError), lc.start("m"):
        raise TimeoutError


def test_spend_is_summed_and_an_unpriced_model_is_never_free(accounting: None) -> None:
    reg = CollectorRegistry()
    _priced_workload(reg)
    cost = summarize(generate_latest(reg).decode())["cost"]
    # Two priced requests of m: 1000 in at 1 USD/M + 500 out at 2 USD/M = 0.002 each.
    assert cost["total_usd"] == pytest.approx(0.004)
    assert cost["by_model_usd"] == {"m": pytest.approx(0.004)}  # "other" is not $0...
    assert cost["unpriced_by_model"] == {"other": 1.0}  # ...it is unpriced
    assert cost["unpriced_requests"] == 1.0
    assert cost["by_key_usd"] == {} and cost["budget_remaining_usd_by_key"] == {}


def test_slo_per_model_and_objective_against_the_target(accounting: None) -> None:
    reg = CollectorRegistry()
    _priced_workload(reg)
    slo = summarize(generate_latest(reg).decode())["slo"]
    m = slo["by_model"]["m"]
    assert m["target_ratio"] == 0.9
    assert list(m["objectives"]) == ["ttft", "e2e", "all"]
    ttft = m["objectives"]["ttft"]
    # The failed request misses every objective.
    assert (ttft["threshold_seconds"], ttft["met"], ttft["missed"]) == (0.5, 2.0, 1.0)
    assert ttft["ratio"] == pytest.approx(2 / 3) and ttft["meets_target"] is False
    assert m["objectives"]["all"]["threshold_seconds"] is None
    assert slo["by_model"]["other"]["objectives"]["all"]["meets_target"] is True
    assert slo["requests"] == {"met": 3.0, "missed": 1.0, "ratio": 0.75}
    # Two good requests of m in the trailing minute: 2/60 per second.
    assert m["goodput_requests_per_second"] == pytest.approx(2 / 60)
    assert m["goodput_tokens_per_second"] == pytest.approx(1000 / 60)
    assert slo["goodput_requests_per_second"] == pytest.approx(3 / 60)


def test_no_slo_and_no_prices_are_empty_not_errors() -> None:
    reg = CollectorRegistry()
    MetricsCollector(registry=reg).increment_request_count(model="m")
    s = summarize(generate_latest(reg).decode())
    assert s["slo"] == {"requests": {"met": 0.0, "missed": 0.0, "ratio": None},
                        "goodput_requests_per_second": None, "by_model": {}}
    assert s["cost"]["total_usd"] == 0 and s["cost"]["unpriced_by_model"] == {}


def test_the_stats_table_shows_spend_unpriced_and_slo(accounting: None) -> None:
    from rich.console import Console

    from tinyllm.cli.metrics import _render, _usd

    reg = CollectorRegistry()
    _priced_workload(reg)
    summary = summarize(generate_latest(reg).decode())
    summary["source"] = "test"
    console = Console(width=160, record=True, color_system=None)
    console.print(_render(summary, "no GPU here"))
    lines = {" ".join(line.strip("│ ").split("│")[0].split()):
             " ".join(line.strip("│ ").split("│")[-1].split())
             for line in console.export_text().splitlines() if "│" in line}
    assert lines["spend (USD)"] == "$0.0040 + 1 unpriced request"
    assert lines["spend [m]"] == "$0.0040"
    assert lines["spend [other]"] == "unpriced (1 request)"
    assert lines["SLO met, every objective"] == "75.0 % of 4 judged"
    assert lines["SLO [m] ttft <= 500.0 ms"] == (
        "2 met / 1 missed: 66.7 % vs target 90.0 % BELOW TARGET")
    assert lines["SLO [other] all objectives"].endswith("100.0 % vs target 90.0 % meets target")
    assert lines["goodput [m]"] == "0.03 req/s, 16.67 tokens/s (last minute)"
    assert [_usd(v) for v in (0.0, 0.004, 0.0123, 12.3, 1234.5, 0.000012)] == [
        "$0.00", "$0.0040", "$0.01", "$12.30", "$1,234.50", "$0.000012"]
