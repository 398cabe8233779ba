"""Injection and escaping: hostile text in every label value, tag and log field.

Newlines, carriage returns, quotes, backslashes, commas, equals signs, spaces, NUL and
arbitrary Unicode (Hypothesis) go into

- the live exposition's label values: both encoders (prometheus_client's
  ``generate_latest`` and ``tinyllm.metrics.exposition.generate_text``) write the same
  bytes, and prometheus_client's parser reads every value back equal;
- the store's Prometheus export: read back equal by the same parser;
- the store's InfluxDB export: one line per point, accepted by a real ``influxd`` and
  every tag read back equal (three values line protocol cannot carry are mapped, see
  ``_influx_expected``);
- log events, JSON and console: one line per event (``str.splitlines``), and the JSON
  line parses back to the same values.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import InfluxDB, free_port, influxdb  # noqa: F401 (fixtures)
from tinyllm.logging import configure_logging, get_logger, reset_logging
from tinyllm.metrics.collector import MetricsCollector
from tinyllm.metrics.exposition import generate_text
from tinyllm.store.export import influxdb_lines, prometheus_lines
from tinyllm.store.summary import Totals

#: The characters every format has to get right, mixed into arbitrary text.
HOSTILE = '\n\r"\\,= \x00\t{}#\x1b\x85\u2028\u2029é漢🙂'
#: Arbitrary Unicode (no surrogates: they are no character and have no UTF-8 form).
hostile_text = st.one_of(st.text(), st.text(alphabet=HOSTILE), st.text(
    alphabet=st.one_of(st.sampled_from(HOSTILE), st.characters(exclude_categories=["Cs"]))))
#: The same, with lone surrogates too: what ``json.loads`` or ``surrogateescape`` decoding
#: can hand a program; they must not break a scrape or lose a log line.
with_surrogates = st.one_of(hostile_text, st.text(
    alphabet=st.one_of(st.sampled_from(HOSTILE), st.characters(categories=["Cs"]))))


def _utf8(value: str) -> str:
    """What a UTF-8 exposition can carry of ``value``: a lone surrogate becomes U+FFFD."""
    return re.sub("[\ud800-\udfff]", "\ufffd", value)
EXAMPLES = 150


def _families(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# -- the live exposition ----------------------------------------------------------------------


def _run(figure: Callable[..., None], name: str, check: Callable[[], Any],
         examples: list[int]) -> None:
    check()
    figure(name, f"{examples[0]} examples", "all pass", examples[0] > 0)
    assert examples[0] > 0


def test_live_exposition_round_trips(figure: Callable[..., None]) -> None:
    done = [0]

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(model=with_surrogates, graph=with_surrogates, kind=with_surrogates)
    def check(model: str, graph: str, kind: str) -> None:
        _live_round_trip(model, graph, kind)
        done[0] += 1

    _run(figure, "hostile label values read back, live exposition", check, done)


def _live_round_trip(model: str, graph: str, kind: str) -> None:
    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    collector.increment_request_count(model=model, graph=graph, request_type=kind)
    with collector.track_request_latency(model=model, graph=graph):
        pass
    text = generate_latest(registry)
    assert generate_text(registry) == text
    families = _families(text.decode())
    [sample] = [s for s in families["tinyllm_requests"] if s.name == "tinyllm_requests_total"]
    assert sample.labels == {"model": _utf8(model), "graph": _utf8(graph),
                             "request_type": _utf8(kind)}
    buckets = [s for s in families["tinyllm_request_latency_seconds"]
               if s.name.endswith("_bucket")]
    assert {(s.labels["model"], s.labels["graph"]) for s in buckets} == {
        (_utf8(model), _utf8(graph))}


def test_generate_text_follows_reset_remove_and_foreign_metrics(
        figure: Callable[..., None]) -> None:
    from prometheus_client import Counter

    registry = CollectorRegistry()
    collector = MetricsCollector(registry=registry)
    collector.increment_request_count(model="m")
    states = [generate_text(registry) == generate_latest(registry)]
    family = collector.families["requests_total"].metric
    family.labels("m", "default", "generate").reset()  # a new _created
    states.append(generate_text(registry) == generate_latest(registry))
    family.remove("m", "default", "generate")
    states.append(generate_text(registry) == generate_latest(registry))
    collector.increment_request_count(model="m")
    Counter("user_things", "A user's counter", ["x"], registry=registry).labels('a"\n').inc()
    states.append(generate_text(registry) == generate_latest(registry))
    figure("generate_text == generate_latest after reset, remove, foreign metrics",
           f"{sum(states)}/{len(states)}", "all", all(states))
    assert all(states)


# -- the store's Prometheus export ------------------------------------------------------------


def test_store_prometheus_export_round_trips(figure: Callable[..., None]) -> None:
    done = [0]

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(endpoints=st.lists(hostile_text, min_size=1, max_size=4, unique=True),
           event_type=hostile_text, model=hostile_text)
    def check(endpoints: list[str], event_type: str, model: str) -> None:
        _store_prometheus_round_trip(endpoints, event_type, model)
        done[0] += 1

    _run(figure, "hostile label values read back, store Prometheus export", check, done)


def _store_prometheus_round_trip(endpoints: list[str], event_type: str, model: str) -> None:
    t = Totals()
    for i, endpoint in enumerate(endpoints):
        t.add(event_type, endpoint, i + 1, 1, 2.5, 10, model_id=model, cost_usd=0.5,
              slo_judged=1, slo_met=1)
    t.add_bin(event_type, 0, 3)
    families = _families("".join(prometheus_lines(t, "p")))
    got = {s.labels["endpoint"]: s.value for s in families["p_requests"]}
    assert got == {e: float(i + 1) for i, e in enumerate(endpoints)}
    assert {s.labels["event_type"] for s in families["p_tokens"]} == {event_type}
    assert {s.labels["event_type"] for s in families["p_request_duration_seconds"]} == {
        event_type}
    assert [s.labels for s in families["p_cost_usd"]] == [{"model_id": model}]
    assert {s.labels["model_id"] for s in families["p_slo_requests"]} == {model}


# -- the store's InfluxDB export --------------------------------------------------------------


def _influx_expected(value: str) -> str:
    """What InfluxDB 1.x reads back for a tag value (docs: store export, escaping)."""
    if value.endswith("\\"):
        value = value[:-1] + "\uff3c"
    return value.replace("\n", "\u2424")


def _influx_totals(endpoints: list[str], event_type: str, model: str) -> Totals:
    t = Totals()
    for i, endpoint in enumerate(endpoints):
        t.add(event_type, endpoint, i + 1, 1, 2.5, 10, model_id=model, cost_usd=0.5)
    t.add_bin(event_type, 0, 3)
    return t


def test_store_influxdb_export_is_one_line_per_point(figure: Callable[..., None]) -> None:
    done = [0]

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(endpoints=st.lists(hostile_text, min_size=1, max_size=4, unique=True),
           event_type=hostile_text, model=hostile_text)
    def check(endpoints: list[str], event_type: str, model: str) -> None:
        _influx_one_line_per_point(endpoints, event_type, model)
        done[0] += 1

    _run(figure, "hostile tags, InfluxDB export one line per point", check, done)


def _influx_one_line_per_point(endpoints: list[str], event_type: str, model: str) -> None:
    body = "".join(influxdb_lines(_influx_totals(endpoints, event_type, model), "p", 7))
    lines = body.split("\n")
    assert lines[-1] == ""
    # requests and errors per endpoint; latency, tokens, latency_quantiles per event
    # type; cost per model
    assert len(lines) - 1 == 2 * len(endpoints) + 3 + 1
    assert all(line.startswith("p,type=") and line.endswith(" 7") for line in lines[:-1])


_databases = count()


@pytest.mark.integration
def test_store_influxdb_export_reads_back_equal(influxdb: InfluxDB,  # noqa: F811
                                                figure: Callable[..., None]) -> None:
    examples = 0

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(endpoints=st.lists(hostile_text, min_size=1, max_size=4, unique=True),
           event_type=hostile_text, model=hostile_text)
    def check(endpoints: list[str], event_type: str, model: str) -> None:
        nonlocal examples
        expected = [_influx_expected(e) for e in endpoints]
        if len(set(expected)) < len(expected):
            return  # two values that map to one tag (a\n and a\u2424): not this property
        name = f"esc{next(_databases)}"
        influxdb.create_database(name)
        body = "".join(influxdb_lines(_influx_totals(endpoints, event_type, model), "p", 7))
        influxdb.write(name, body)  # a refused point would fail the whole write (400)
        series = influxdb.query(
            name, "SELECT count FROM p WHERE \"type\"='requests' GROUP BY endpoint")
        got = {s["tags"]["endpoint"]: s["values"][0][1] for s in series}
        assert got == {e: float(i + 1) for i, e in enumerate(expected)}
        series = influxdb.query(name, "SELECT cost_usd FROM p WHERE \"type\"='cost' "
                                      "GROUP BY model_id")
        assert [s["tags"]["model_id"] for s in series] == [_influx_expected(model)]
        series = influxdb.query(name, "SELECT count FROM p WHERE \"type\"='tokens' "
                                      "GROUP BY event_type")
        assert [s["tags"]["event_type"] for s in series] == [_influx_expected(event_type)]
        examples += 1

    check()
    figure("hostile tags accepted by influxd, read back equal", f"{examples} examples",
           "all pass", examples > 0)
    assert examples > 0


# -- log events ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _logged(fmt: str) -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(log_level="INFO", log_format=fmt)
    try:
        with contextlib.redirect_stderr(out):
            yield out
    finally:
        reset_logging()


def test_json_log_event_is_one_line_and_parses_back(figure: Callable[..., None]) -> None:
    done = [0]

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(event=with_surrogates, model=with_surrogates, tag=with_surrogates)
    def check(event: str, model: str, tag: str) -> None:
        _json_line(event, model, tag)
        done[0] += 1

    _run(figure, "hostile log fields, JSON: one line, parsed back equal", check, done)


def _json_line(event: str, model: str, tag: str) -> None:
    with _logged("json") as out:
        get_logger("reliability").info(event, model=model, tag=tag, n=3)
    text = out.getvalue()
    assert text.endswith("\n")
    [line] = text[:-1].splitlines()
    line.encode("utf-8")  # writable to a UTF-8 stream: no lone surrogate left raw
    parsed = json.loads(line)
    # json.loads joins an escaped surrogate pair into its character: compare as JSON does
    same = [json.loads(json.dumps(v)) for v in (event, model, tag)]
    assert [parsed["event"], parsed["model"], parsed["tag"], parsed["n"]] == [*same, 3]


def test_console_log_event_is_one_line(figure: Callable[..., None]) -> None:
    done = [0]

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(event=with_surrogates, model=with_surrogates, tag=with_surrogates)
    def check(event: str, model: str, tag: str) -> None:
        _console_line(event, model, tag)
        done[0] += 1

    _run(figure, "hostile log fields, console: one line per event", check, done)


def _console_line(event: str, model: str, tag: str) -> None:
    with _logged("console") as out:
        get_logger("reliability").info(event, model=model, tag=tag)
        try:
            raise ValueError(f"bad model {model}\nsecond line")
        except ValueError:
            get_logger("reliability").exception(event, model=model)
    text = out.getvalue()
    assert text.endswith("\n")
    text.encode("utf-8")  # writable to a UTF-8 stream: no lone surrogate left raw
    lines = text[:-1].splitlines()
    assert len(lines) == 2, lines
    assert all(c.isprintable() for c in lines[0]), lines[0]


# -- the multiprocess aggregate ---------------------------------------------------------------

MP_WORKER = """
import json, sys
from tinyllm.lifecycle import RequestLifecycle
from tinyllm.metrics.collector import MetricsCollector

collector = MetricsCollector()
lifecycle = RequestLifecycle(collector)
held = []
for line in sys.stdin:  # a JSON list of values to record, then "ready"; EOF ends
    values = json.loads(line)
    for value in values:
        with lifecycle.start(value, value, "chat") as req:
            req.usage(input_tokens=2, output_tokens=3)
            req.token()
            req.token()
        collector.update_circuit_breaker_state("open", model=value)
        collector.increment_cache_hit(cache_type=value)
    held.append(lifecycle.start(values[0], "held", "chat"))  # a livesum gauge
    print("ready", flush=True)
"""


def test_multiprocess_aggregate_round_trips(tmp_path: Path,
                                            figure: Callable[..., None]) -> None:
    from prometheus_client import multiprocess

    from tinyllm.metrics.exposition import WholeReadRegistry

    values = ['a"b\\c', "new\nline", "cr\rx", "nul\x00", "sp ace,=", "é漢🙂\u2028", "x\\"]
    more = [f"{v}-more" for v in values]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", MP_WORKER], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
               for _ in range(2)]

    def record(batch: list[str]) -> None:
        for w in workers:
            assert w.stdin is not None and w.stdout is not None
            w.stdin.write(json.dumps(batch) + "\n")
            w.stdin.flush()
            assert w.stdout.readline().strip() == "ready"

    try:
        registry = WholeReadRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
        record(values)
        same = [generate_text(registry) == generate_latest(registry)]
        record(more)  # the files grow: what was parsed is kept, the rest read
        expected = generate_latest(registry)
        same += [generate_text(registry) == expected, generate_text(registry) == expected]
    finally:
        for w in workers:
            w.kill()
            w.wait()
    families = _families(expected.decode())
    got = {s.labels["model"] for s in families["tinyllm_requests"]}
    figure("hostile labels, multiprocess aggregate: same bytes, read back",
           f"{len(values) * 2} values, 2 workers, 3 scrapes", "all equal",
           all(same) and got == {*values, *more})
    assert same == [True, True, True]
    assert got == {*values, *more}
    held = [s.value for s in families["tinyllm_active_requests"]
            if s.labels["graph"] == "held"]
    assert sorted(held) == [2.0, 2.0]  # livesum over both workers, one per batch


def test_multiprocess_aggregate_follows_a_replaced_file(tmp_path: Path,
                                                        figure: Callable[..., None]) -> None:
    """A worker file removed and written anew at the same path (a reused pid) is parsed
    again, not read at the places the old one had its entries."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    from tinyllm.metrics.exposition import WholeReadRegistry

    def write(names: list[str]) -> None:
        path = tmp_path / "counter_4242.db"
        path.unlink(missing_ok=True)
        file = MmapedDict(str(path))  # type: ignore[no-untyped-call]
        for i, name in enumerate(names):
            key = json.dumps(["c", "c_total", {"model": name}, "C."])
            file.write_value(key, float(i + 1), 0.0)  # type: ignore[no-untyped-call]
        file.close()  # type: ignore[no-untyped-call]

    registry = WholeReadRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    same = []
    write(["a", "b"])
    same.append(generate_text(registry) == generate_latest(registry))
    write(["long-name-" + "x" * 40, "b", "c", "d"])
    same.append(generate_text(registry) == generate_latest(registry))
    figure("multiprocess aggregate after a worker file is replaced", f"{sum(same)}/2",
           "same bytes", all(same))
    assert same == [True, True]
