"""Exports: seed 004's Prometheus and InfluxDB outputs, the JSON export, streaming."""

from __future__ import annotations

import json
import math
import sqlite3
import tracemalloc

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tinyllm.metrics.catalog import CATALOG
from tinyllm.store import DEFAULT_PREFIX, FORMATS, MetricsDatabase

from .conftest import record_priced, seed_example

# Verbatim from seed 004 ("Prometheus Format").
SEED_PROMETHEUS = """\
# HELP diffusion_llm_requests_total Total number of requests
# TYPE diffusion_llm_requests_total counter
diffusion_llm_requests_total{endpoint="generate"} 10
diffusion_llm_requests_total{endpoint="infill"} 5

# HELP diffusion_llm_errors_total Total number of errors
# TYPE diffusion_llm_errors_total counter
diffusion_llm_errors_total{endpoint="generate"} 2
diffusion_llm_errors_total{endpoint="infill"} 1

# HELP diffusion_llm_latency_seconds Average latency in seconds
# TYPE diffusion_llm_latency_seconds gauge
diffusion_llm_latency_seconds{event_type="diffusion_generate"} 1.5
diffusion_llm_latency_seconds{event_type="diffusion_infill"} 2.0

# HELP diffusion_llm_tokens_total Total tokens generated
# TYPE diffusion_llm_tokens_total counter
diffusion_llm_tokens_total{event_type="diffusion_generate"} 25
diffusion_llm_tokens_total{event_type="diffusion_infill"} 30
"""

# Verbatim from seed 004 ("InfluxDB Format").
SEED_INFLUXDB = """\
diffusion_llm,type=requests,endpoint=generate count=10 1234567890000000000
diffusion_llm,type=requests,endpoint=infill count=5 1234567890000000000
diffusion_llm,type=latency,event_type=diffusion_generate value=1.5 1234567890000000000
diffusion_llm,type=latency,event_type=diffusion_infill value=2.0 1234567890000000000
diffusion_llm,type=tokens,event_type=diffusion_generate count=25 1234567890000000000
diffusion_llm,type=tokens,event_type=diffusion_infill count=30 1234567890000000000
"""


def test_prometheus_starts_with_exactly_the_seeds_output(db: MetricsDatabase) -> None:
    seed_example(db)
    out = db.export("prometheus", prefix="diffusion_llm")
    assert out.startswith(SEED_PROMETHEUS + "\n")
    families = {f.name: f for f in text_string_to_metric_families(out)}
    quantiles = families["diffusion_llm_request_duration_seconds"]
    assert quantiles.type == "summary"
    by_label = {(s.name, s.labels.get("event_type"), s.labels.get("quantile")): s.value
                for s in quantiles.samples}
    assert by_label[("diffusion_llm_request_duration_seconds", "diffusion_generate", "0.5")] \
        == pytest.approx(1.5, rel=0.045)
    assert by_label[("diffusion_llm_request_duration_seconds_count", "diffusion_infill",
                     None)] == 5


def test_influxdb_starts_with_exactly_the_seeds_lines(db: MetricsDatabase) -> None:
    seed_example(db)
    out = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=1234567890000000000)
    assert out.startswith(SEED_INFLUXDB)
    extra = out[len(SEED_INFLUXDB):].splitlines()
    assert "diffusion_llm,type=errors,endpoint=generate count=2 1234567890000000000" in extra
    assert any(line.startswith("diffusion_llm,type=latency_quantiles,event_type="
                               "diffusion_generate p50=") for line in extra)


def test_influxdb_timestamp_defaults_to_until_then_now(db: MetricsDatabase) -> None:
    seed_example(db)
    out = db.export("influxdb", until=1_800_000_000.0)
    assert out.splitlines()[0].endswith(" 1800000000000000000")
    assert out.splitlines()[0].startswith(f"{DEFAULT_PREFIX},type=requests")


def test_label_and_tag_values_are_escaped(db: MetricsDatabase) -> None:
    db.record_event("x_a", 1.0, model_id="m", metadata={"endpoint": 'we "ird", x=1\\'})
    db.flush()
    prom = db.export("prometheus")
    samples = [s for f in text_string_to_metric_families(prom) for s in f.samples
               if s.name.endswith("requests_total")]
    assert samples[0].labels["endpoint"] == 'we "ird", x=1\\'
    influx = db.export("influxdb", timestamp_ns=1)
    # A trailing backslash cannot be written in the line protocol (influxd refuses the
    # write): it becomes a fullwidth reverse solidus (tests/reliability/test_escaping.py).
    assert 'endpoint=we\\ "ird"\\,\\ x\\=1\uff3c count=1 1' in influx


def test_default_prefix_does_not_collide_with_live_families(db: MetricsDatabase) -> None:
    seed_example(db)
    ours = {f.name for f in text_string_to_metric_families(db.export("prometheus"))}
    live = {f"tinyllm_{spec.name}" for spec in CATALOG.values()}
    live |= {name.removesuffix("_total") for name in live}
    assert ours and not ours & live


def test_json_export_holds_the_summary_and_every_event(db: MetricsDatabase) -> None:
    seed_example(db)
    doc = json.loads(db.export("json"))
    assert doc["summary"]["overall"]["total_requests"] == 15
    assert len(doc["events"]) == 15
    assert doc["events"][0]["metadata"]["alg"] == "entropy"
    assert json.loads(db.export("json", model_id="nobody"))["events"] == []


@pytest.mark.parametrize("bad", ["xml", "", "PROMETHEUS", None])
def test_unknown_format_lists_the_valid_ones(db: MetricsDatabase, bad: object) -> None:
    with pytest.raises(ValueError, match="json, prometheus, influxdb"):
        db.export(bad)  # type: ignore[arg-type]
    assert FORMATS == ("json", "prometheus", "influxdb")


@pytest.mark.parametrize("bad", ["9lives", "a-b", "x" * 101, "__x", ""])
def test_bad_prefix_is_rejected(db: MetricsDatabase, bad: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        db.export("prometheus", prefix=bad)


def _peak_while_streaming(db: MetricsDatabase) -> tuple[int, int]:
    chunks = db.iter_export("json")
    assert not isinstance(chunks, str)
    tracemalloc.start()
    try:
        size = sum(len(c) for c in chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size


def _fill(db: MetricsDatabase, n: int, start: int) -> None:
    for i in range(start, start + n):
        db.record_event("diffusion_generate", 0.5, model_id="m", timestamp=1e9 + i,
                        metadata={"token_count": 5, "temperature": 0.2, "alg": "entropy"})
    db.flush()


def test_json_export_streams_with_flat_memory(db: MetricsDatabase) -> None:
    _fill(db, 6_000, 0)
    small_peak, small_size = _peak_while_streaming(db)
    _fill(db, 24_000, 6_000)
    peak, size = _peak_while_streaming(db)
    assert size > 4 * small_size
    # Memory does not grow with the store: the document is never held at once.
    assert peak < 1.5 * small_peak, (small_peak, peak)
    assert peak < size / 2, (peak, size)


def test_json_export_events_match_the_stored_rows_exactly(db: MetricsDatabase) -> None:
    db.record_event("diffusion_generate", 0.1 + 0.2, model_id='we"ird\\id', user_id="ü",
                    timestamp=1e9 + 0.123456789, metadata={"token_count": 3, "t": "é\n"})
    db.record_event("diffusion_generate", 1.0, model_id="m", timestamp=1e9 + 1)  # no metadata
    db.record_event("diffusion_generate", 1.0, model_id="m", timestamp=1e9 + 2,
                    metadata={"x": math.nan})
    assert db.flush()
    with sqlite3.connect(db.engine.url.database or "") as raw:  # rows from another program
        raw.executemany(
            "INSERT INTO performance_events (model_id, user_id, event_type, duration, "
            "timestamp, metadata) VALUES (?, ?, ?, ?, ?, ?)",
            [("m", "u", "diffusion_infill", 2.0, 1e9 + 3, "{not json"),
             ("m", "u", "diffusion_infill", 2.0, 1e9 + 4, '{"seed":  "spacing" }'),
             ("m", "u", "diffusion_infill", 2.0, 1e9 + 5, "[1, 2]")])
    doc = json.loads(db.export("json"))
    want = list(db.iter_events())
    assert len(doc["events"]) == 6
    assert doc["events"][3]["metadata"] is None  # unparsable text reads as no metadata
    for got, row in zip(doc["events"], want, strict=True):
        md = got.pop("metadata")
        row_md = row.pop("metadata")
        assert got == row
        assert md == row_md or (math.isnan(md["x"]) and math.isnan(row_md["x"]))


@pytest.mark.parametrize(("since", "until", "model_id"), [
    (None, None, None), (1e9 + 10, None, None), (None, 1e9 + 2500, None),
    (1e9 + 1200, 1e9 + 1201, None), (1e9 + 500, 1e9 + 2600.5, "m1"), (5.0, 6.0, None),
    (1e9 + 99_999, None, None),
])
def test_json_export_ranges_and_models(
    db: MetricsDatabase, since: float | None, until: float | None, model_id: str | None
) -> None:
    for i in range(3000):
        # Timestamps mostly rising, with some stragglers: the id bounds of a time range
        # are found through the index, then rows are filtered again by time.
        ts = 1e9 + i - (700 if i % 97 == 0 else 0)
        db.record_event("diffusion_generate", 0.5, model_id=f"m{i % 3}", timestamp=ts)
    assert db.flush()
    doc = json.loads(db.export("json", since=since, until=until, model_id=model_id))
    want = [e["id"] for e in db.iter_events(since, until, model_id)]
    assert [e["id"] for e in doc["events"]] == want
    assert doc["summary"]["overall"]["total_requests"] == len(want)


def test_json_export_of_non_finite_values_written_behind_our_back(db: MetricsDatabase) -> None:
    with sqlite3.connect(db.engine.url.database or "") as raw:
        raw.execute("INSERT INTO performance_events (model_id, user_id, event_type, duration,"
                    " timestamp, metadata) VALUES ('m', 'u', 'x', 9e999, 5, NULL)")
    events = json.loads(db.export("json"))["events"]
    assert events[0]["duration"] == math.inf and events[0]["metadata"] is None


def test_prometheus_export_has_spend_by_model(db: MetricsDatabase) -> None:
    record_priced(db)
    out = db.export("prometheus", prefix="diffusion_llm")
    families = {f.name: f for f in text_string_to_metric_families(out)}
    cost = families["diffusion_llm_cost_usd"]
    assert cost.type == "counter"
    got = {s.labels["model_id"]: s.value for s in cost.samples}
    assert got == {"gpt-4o": pytest.approx(0.0123 + 0.0456 + 1e-7 + 0.3, abs=1e-9),
                   "local": 0.0, "mystery": 0.0}
    assert {s.name for s in cost.samples} == {"diffusion_llm_cost_usd_total"}
    unpriced = families["diffusion_llm_unpriced_requests"]
    assert unpriced.type == "counter"
    assert {s.labels["model_id"]: s.value for s in unpriced.samples} == {
        "gpt-4o": 0, "local": 0, "mystery": 3}
    slo = families["diffusion_llm_slo_requests"]
    assert {(s.labels["model_id"], s.labels["outcome"]): s.value for s in slo.samples} == {
        ("gpt-4o", "met"): 2, ("gpt-4o", "missed"): 1, ("local", "met"): 2,
        ("local", "missed"): 0, ("mystery", "met"): 0, ("mystery", "missed"): 1}
    # The seed's families come first, unchanged.
    assert out.startswith("# HELP diffusion_llm_requests_total Total number of requests\n")
    only = db.export("prometheus", model_id="local")
    assert 'tinyllm_store_cost_usd_total{model_id="local"} 0.0\n' in only
    assert "gpt-4o" not in only


def test_influxdb_export_has_a_cost_point_per_model(db: MetricsDatabase) -> None:
    record_priced(db)
    seed_example(db)  # a model with no spend at all: unpriced, not judged
    out = db.export("influxdb", prefix="diffusion_llm", timestamp_ns=7)
    cost = [line for line in out.splitlines() if ",type=cost," in line]
    assert cost == [
        "diffusion_llm,type=cost,model_id=dream cost_usd=0.0,unpriced_requests=15,"
        "requests=15 7",
        f"diffusion_llm,type=cost,model_id=gpt-4o cost_usd={0.0123 + 0.0456 + 1e-7 + 0.3!r},"
        "unpriced_requests=0,requests=4,slo_requests=3,slo_met=2 7",
        "diffusion_llm,type=cost,model_id=local cost_usd=0.0,unpriced_requests=0,requests=2,"
        "slo_requests=2,slo_met=2 7",
        "diffusion_llm,type=cost,model_id=mystery cost_usd=0.0,unpriced_requests=3,"
        "requests=3,slo_requests=1,slo_met=0 7",
    ]
    weird = db.export("influxdb", model_id="gpt-4o", timestamp_ns=7)
    assert "model_id=gpt-4o cost_usd=" in weird


def test_json_export_summary_has_spend_and_the_events_their_cost(db: MetricsDatabase) -> None:
    record_priced(db)
    doc = json.loads(db.export("json"))
    assert doc["summary"]["cost"]["total_usd"] == pytest.approx(0.3579001, abs=1e-9)
    assert doc["summary"]["cost"]["by_model"]["mystery"]["unpriced_requests"] == 3
    assert doc["summary"]["slo"]["by_model"]["gpt-4o"]["met"] == 2
    assert math.fsum(e["metadata"].get("cost_usd", 0.0) for e in doc["events"]) == \
        pytest.approx(0.3579001, abs=1e-9)


def test_model_ids_are_escaped_in_labels_and_tags(db: MetricsDatabase) -> None:
    db.record_event("x_a", 1.0, model_id='we "ird", m=1\\', metadata={"cost_usd": 0.25})
    db.flush()
    prom = db.export("prometheus")
    samples = [s for f in text_string_to_metric_families(prom) for s in f.samples
               if s.name.endswith("cost_usd_total")]
    assert [(s.labels["model_id"], s.value) for s in samples] == [('we "ird", m=1\\', 0.25)]
    assert 'model_id=we\\ "ird"\\,\\ m\\=1\uff3c cost_usd=0.25,' in db.export("influxdb")
