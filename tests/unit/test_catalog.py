"""The catalog: the spec's families and label sets, and the files rendered from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm.metrics.catalog import CATALOG, Kind, MetricSpec
from tinyllm.metrics.render import render_alert_rules, render_metrics_reference

ROOT = Path(__file__).resolve().parents[2]

# Seed 001's 24 families, with seed 003's label sets where it gives them.
SEED_001 = {
    "requests_total": ("model", "graph", "request_type"),
    "request_latency_seconds": ("model", "graph"),
    "active_requests": ("model", "graph"),
    "tokens_input_total": ("model", "graph"),
    "tokens_output_total": ("model", "graph"),
    "model_load_duration_seconds": ("model",),
    "errors_total": ("error_type", "model", "graph"),
    "circuit_breaker_state": ("model",),
    "circuit_breaker_failures_total": ("model",),
    "node_executions_total": ("node", "graph"),
    "node_execution_duration_seconds": ("node", "graph"),
    "node_errors_total": ("node", "graph", "error_type"),
    "graph_executions_total": None,
    "graph_execution_duration_seconds": ("graph",),
    "cache_hits_total": ("cache_type",),
    "cache_misses_total": ("cache_type",),
    "queue_size": ("priority",),
    "queue_wait_time_seconds": ("priority",),
    "queue_requests_total": None,
    "queue_requests_rejected_total": None,
    "queue_active_workers": None,
    "system_info": ("version", "python_version", "platform"),
    "rate_limit_wait_seconds": None,
    "memory_operations_total": ("operation_type",),
}


def test_seed_001_has_24_families_with_seed_003_labels() -> None:
    assert len(SEED_001) == 24
    for name, labels in SEED_001.items():
        assert name in CATALOG, name
        if labels is not None:
            assert CATALOG[name].labels == labels, name


@pytest.mark.parametrize(
    ("name", "kind", "labels", "buckets"),
    [
        ("inference_requests_total", Kind.COUNTER, ("model", "status"), None),
        ("inference_request_duration_seconds", Kind.HISTOGRAM, ("model",),
         (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)),
        ("inference_ttft_seconds", Kind.HISTOGRAM, ("model",),
         (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)),
        ("inference_inter_token_latency_seconds", Kind.HISTOGRAM, ("model",),
         (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)),
        ("tokens_generated_total", Kind.COUNTER, ("model",), None),
        ("tokens_per_request", Kind.HISTOGRAM, ("model",),
         (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000)),
        ("tokens_per_second", Kind.GAUGE, ("model",), None),
        ("average_tokens_per_minute", Kind.GAUGE, ("model",), None),
        ("kv_cache_hit_ratio", Kind.GAUGE, ("model",), None),
        ("batch_size", Kind.HISTOGRAM, ("model",), None),
        ("batches_processed_total", Kind.COUNTER, ("model",), None),
        ("gpu_memory_used_bytes", Kind.GAUGE, ("model", "gpu_id"), None),
        ("gpu_memory_reserved_bytes", Kind.GAUGE, ("model", "gpu_id"), None),
        ("gpu_utilization_percent", Kind.GAUGE, ("model", "gpu_id"), None),
        ("memory_efficiency_ratio", Kind.GAUGE, ("model", "gpu_id"), None),
        ("inference_errors_total", Kind.COUNTER, ("model", "error_type"), None),
        ("inference_retries_total", Kind.COUNTER, ("model",), None),
        ("circuit_breaker_transitions_total", Kind.COUNTER,
         ("model", "from_state", "to_state"), None),
    ],
)
def test_seed_002_and_issue_families(
    name: str, kind: Kind, labels: tuple[str, ...], buckets: tuple[float, ...] | None
) -> None:
    spec = CATALOG[name]
    assert spec.kind is kind
    assert spec.labels == labels
    if buckets is not None:
        assert spec.buckets == buckets


def test_gauges_have_multiprocess_modes_that_make_sense() -> None:
    modes = {s.name: s.multiprocess_mode for s in CATALOG.values() if s.kind is Kind.GAUGE}
    assert modes["active_requests"] == "livesum"
    assert modes["queue_size"] == "livesum"
    assert modes["circuit_breaker_state"] in {"max", "mostrecent"}
    for gpu in ("gpu_memory_used_bytes", "gpu_utilization_percent", "memory_efficiency_ratio"):
        assert modes[gpu] in {"max", "mostrecent"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "requests", "kind": Kind.COUNTER}, "must end in _total"),
        ({"name": "h", "kind": Kind.HISTOGRAM}, "buckets"),
        ({"name": "g", "kind": Kind.GAUGE}, "multiprocess_mode"),
        ({"name": "c_total", "kind": Kind.COUNTER, "buckets": (1.0,)}, "buckets"),
    ],
)
def test_spec_rejects_inconsistent_entries(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MetricSpec(help="x", **kwargs)  # type: ignore[arg-type]


def test_docs_metrics_md_is_rendered_from_the_catalog() -> None:
    committed = (ROOT / "docs/metrics.md").read_text()
    assert committed == render_metrics_reference(), "run `make docs` and commit"
    for spec in CATALOG.values():
        assert f"`tinyllm_{spec.name}`" in committed


def test_alert_rules_file_is_rendered_from_the_catalog() -> None:
    committed = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert committed == render_alert_rules("tinyllm"), "run `make docs` and commit"


def test_alert_rules_fix_the_seed_002_mistakes() -> None:
    ryot = render_alert_rules("ryot")
    assert "LowTTFT" not in ryot and "alert: HighTTFT" in ryot
    assert "histogram_quantile(0.95, ryot_" not in ryot  # the seed's invalid form
    assert "rate(ryot_inference_ttft_seconds_bucket[5m])" in ryot
    assert "ryot_memory_efficiency_ratio < 0.5" in ryot
