"""The Grafana dashboards of deploy/grafana/, proven against real Prometheus and InfluxDB.

Grafana itself cannot be installed here, so what it would do is done by hand: the
committed JSON is read as Grafana reads it, every panel is checked against the rules of
deploy/grafana/README.md, and every query, its variables filled in as Grafana fills them,
runs against the server Grafana would ask and must return data.

- Static: the JSON, docs/queries.md's "Dashboards" section and the README's "not
  charted" table are what ``tinyllm.grafana`` renders; docs/queries.md's dashboard entries
  (parsed by test_prometheus_queries.py's parser) are the JSON's queries, in order; every
  catalog family is charted or listed as not charted; no query names a metric the catalog
  lacks; every panel keeps the rules (and the rule checker is shown to catch each breach).
- Prometheus: one Prometheus (1 s scrapes) scrapes ``examples/metrics_example.py``, a
  ``tinyllm serve`` gateway in front of a fake OpenAI upstream under steady traffic (keys
  with limits, wrong and missing keys, a shared-limit Redis that is down) and a pipeline
  workload (this file run as a script: sampled logs, a raising event handler, a dead OTLP
  collector, a closed store, scrapers that hang up). Every panel query must return
  plausible data with ``$model`` = All, and a per-model query must return exactly the
  model chosen (a dotted name, escaped as Grafana escapes it).
- InfluxDB: two store exports a minute and a half apart; every store panel's InfluxQL
  must return data, and the tag variables must filter.

Excepted, and said so (a warning) rather than skipped: the NVML sampler's whole-device
GPU series (``model="all"``) need an NVIDIA GPU and nvidia-ml-py; without them the GPU
panels are proven on the example's ``update_gpu_metrics`` series only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tinyllm import grafana
from tinyllm.grafana import influxql_regex, interpolate, prometheus_regex
from tinyllm.grafana.overview import SLO_BUCKETS
from tinyllm.metrics.catalog import CATALOG, Kind

if TYPE_CHECKING:  # the fixtures' handle types; conftest is not imported at run time
    from conftest import InfluxDB, Prometheus, Workload

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
QUERIES_MD = REPO / "docs" / "queries.md"
NS = "tinyllm"
RATE_INTERVAL = "5m"  # $__rate_interval: covers the example's model loads at its start
RANGE = "1h"  # $__range: the dashboard's default time range
DS = {"prometheus": {"type": "prometheus", "uid": "${datasource}"},
      "influxdb": {"type": "influxdb", "uid": "${datasource}"}}
PER_SECOND_UNITS = {"reqps", "ops", "cps", "suffix: tokens/s"}
PER_HOUR_UNITS = {"currencyUSD"}  # spend: a rate times 3600
GPU_PANELS_EXCEPTION = (
    'the NVML sampler\'s whole-device series (model="all") in the GPU panels need an '
    "NVIDIA GPU and nvidia-ml-py; the GPU panels were proven on the example's "
    "update_gpu_metrics series only"
)


# Per-key spend and budgets come from the gateway's budget accounting; until its
# /metrics has samples of a family, the panels reading it are proven valid PromQL only,
# and the test says so (a warning), never a silent skip.
KEY_SPEND = ("gateway_key_cost_usd_total", "gateway_key_budget_remaining_usd")
KEY_SPEND_EXCEPTION = (
    "the gateway exports no samples of {families} (per-key spend and budgets): the panels "
    "reading them were run as PromQL, not checked for data"
)


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DASHBOARD_DIR / name).read_text())
    return loaded


OVERVIEW = _load("tinyllm-overview.json")
STORE = _load("tinyllm-store.json")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


@dataclass(frozen=True)
class Case:
    """One query of one panel, as the committed JSON has it."""

    panel: str
    ref: str
    expr: str
    expect: str

    @property
    def id(self) -> str:
        return f"{self.panel} [{self.ref}]"


def _prometheus_cases() -> list[Case]:
    # The expectation of each query comes from its docs/queries.md entry; the two lists are
    # checked to be the same queries in test_docs_queries_are_the_dashboard_queries.
    from test_prometheus_queries import DASHBOARD

    targets = [(p["title"], t) for p in panels(OVERVIEW) for t in p["targets"]]
    return [Case(title, t["refId"], t["expr"], entry.expect or "")
            for (title, t), entry in zip(targets, DASHBOARD, strict=False)]


def _store_cases() -> list[Case]:
    expects = {t.expr: t.expect for p in grafana.store_dashboard().panels() for t in p.targets}
    return [Case(p["title"], t["refId"], t["query"], expects.get(t["query"], "rate"))
            for p in panels(STORE) for t in p["targets"]]


PROM_CASES = _prometheus_cases()
STORE_CASES = _store_cases()


# -- the committed files are the rendering of tinyllm.grafana ------------------------------


@pytest.mark.parametrize("name", sorted(grafana.dashboards()))
def test_committed_dashboard_is_generated(name: str) -> None:
    committed = (DASHBOARD_DIR / name).read_text()
    assert committed == grafana.render_dashboard(grafana.dashboards()[name]), (
        f"deploy/grafana/dashboards/{name} drifted from tinyllm.grafana: run "
        "`python -m tinyllm.grafana` and commit")


def test_docs_sections_are_generated() -> None:
    assert grafana.render_queries_section() in QUERIES_MD.read_text(), (
        "docs/queries.md's Dashboards section drifted: run `python -m tinyllm.grafana`")
    assert grafana.render_not_charted() in (GRAFANA_DIR / "README.md").read_text(), (
        "deploy/grafana/README.md's not-charted table drifted: run `python -m tinyllm.grafana`")


def test_docs_queries_are_the_dashboard_queries() -> None:
    """docs/queries.md's dashboard entries, read by its own parser, are the JSON's queries
    in panel order: one text, shown in two places."""
    from test_prometheus_queries import DASHBOARD

    assert [e.query for e in DASHBOARD] == [t["expr"] for p in panels(OVERVIEW)
                                            for t in p["targets"]]
    assert len(PROM_CASES) == len(DASHBOARD)


# -- coverage of the catalog -------------------------------------------------------------

_PROMQL_WORDS = {"by", "sum", "max", "min", "avg", "rate", "increase", "histogram_quantile"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL query reads (label names, label values, ranges,
    functions and numbers left out)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)", " ", text)
    return set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", text)) - _PROMQL_WORDS


def family_of(name: str) -> tuple[str, str] | None:
    """``(family, suffix)`` of an exposed series name, or None if the catalog lacks it."""
    if not name.startswith(f"{NS}_"):
        return None
    base = name.removeprefix(f"{NS}_")
    spec = CATALOG.get(base)
    if spec is not None and spec.kind is not Kind.HISTOGRAM:
        return base, ""
    for suffix in ("_bucket", "_sum", "_count"):
        family = base.removesuffix(suffix)
        if base.endswith(suffix) and family in CATALOG and CATALOG[family].kind is Kind.HISTOGRAM:
            return family, suffix
    return None


def charted_families() -> set[str]:
    names = {n for case in PROM_CASES for n in metric_names(case.expr)}
    return {f[0] for n in names if (f := family_of(n)) is not None}


def test_every_family_is_charted_or_listed_as_not_charted() -> None:
    charted, listed = charted_families(), set(grafana.NOT_CHARTED)
    assert sorted(set(CATALOG) - charted - listed) == [], "neither charted nor listed"
    assert sorted(charted & listed) == [], "charted, yet listed as not charted"
    assert listed <= set(CATALOG), "listed as not charted, but not in the catalog"
    assert all(len(why) > 40 for why in grafana.NOT_CHARTED.values())


def test_no_query_names_a_metric_the_catalog_lacks() -> None:
    names = {n for case in PROM_CASES for n in metric_names(case.expr)}
    assert len(names) > 50
    assert sorted(n for n in names if family_of(n) is None) == []
    assert metric_names('sum by (le, model) (rate(x_bucket{a="b_total"}[5m])) / y') == {
        "x_bucket", "y"}


# -- the rules, checked on the JSON ------------------------------------------------------

_SELECTOR = re.compile(rf"({NS}_[a-z0-9_]+)(\{{[^}}]*\}})?(\[[^\]]*\])?")
_QUANTILE = re.compile(rf"histogram_quantile\((0\.\d+|1), sum by \(le(?:, \w+)*\) "
                       rf"\(rate\({NS}_\w+_bucket(?:\{{[^}}]*\}})?\[\$__rate_interval\]\)\)\)")
_LEGEND_LABEL = re.compile(r"\{\{(\w+)\}\}")
# One bucket, its bound a dashboard variable, over its histogram's count: an exact share.
_EXACT_BUCKET = re.compile(rf'rate\(({NS}_\w+)_bucket\{{[^}}]*\ble="\$\w+"[^}}]*\}}'
                           rf"\[\$__rate_interval\]\)\)\n  / sum by \([^)]*\) "
                           rf"\(rate\(\1_count(?:\{{[^}}]*\}})?\[\$__rate_interval\]\)\)")


def _words(label: str) -> str:
    return label.replace("_", " ")


def datasource_problems(dashboard: dict[str, Any], plugin: str) -> list[str]:
    """Every data source reference is ``${datasource}``; no UID besides the dashboard's."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource" and value != DS[plugin]:
                    problems.append(f"{where}: datasource {value!r}, not {DS[plugin]}")
                if key == "uid" and where != "" and value != "${datasource}":
                    problems.append(f"{where}: a hard-coded uid {value!r}")
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}/{item.get('title', i) if isinstance(item, dict) else i}")

    walk(dashboard, "")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables.get("datasource", {})
    if (ds.get("type"), ds.get("query")) != ("datasource", plugin):
        problems.append(f"no datasource variable of type {plugin}: {ds}")
    return problems


def prometheus_panel_problems(panel: dict[str, Any]) -> list[str]:
    """What is wrong with one Prometheus panel, by the rules of deploy/grafana/README.md."""
    title, unit = panel.get("title", ""), panel.get("fieldConfig", {}).get("defaults", {}).get(
        "unit")
    problems = [] if unit else ["no unit (fieldConfig.defaults.unit)"]
    if panel.get("datasource") != DS["prometheus"]:
        problems.append(f"panel datasource {panel.get('datasource')!r}")
    words = title.lower()
    in_range_stat = panel.get("type") == "stat" and "in the time range" in words
    burn = "burn rate" in words
    for target in panel.get("targets", []):
        expr = target["expr"]
        if target.get("datasource") != DS["prometheus"]:
            problems.append(f"target datasource {target.get('datasource')!r}")
        by = {label for group in re.findall(r"\bby \(([^)]*)\)", expr)
              for label in re.split(r",\s*", group) if label} - {"le"}
        for m in _SELECTOR.finditer(expr):
            name, matchers, window = m.group(1), m.group(2) or "", m.group(3)
            found = family_of(name)
            if found is None:
                problems.append(f"{name}: not a series of the catalog")
                continue
            family, suffix = found
            spec = CATALOG[family]
            if "model" in spec.labels and 'model=~"$model"' not in matchers:
                problems.append(f"{name}: has a model label but no model=~\"$model\"")
            before, after = expr[:m.start()], expr[m.end():]
            counter = spec.kind is Kind.COUNTER or suffix in ("_bucket", "_count", "_sum")
            under_rate = re.search(r"\b(rate|increase)\($", before) and after.startswith(")")
            in_range = (window == "[$__range]" and before.endswith("increase(")
                        and in_range_stat)
            if counter and not (under_rate and (window == "[$__rate_interval]" or in_range)):
                problems.append(f"{name}: a counter must be read as "
                                f"rate({name}{{...}}[$__rate_interval])")
            if not counter and window:
                problems.append(f"{name}: a gauge under a range ({window})")
        for window in re.findall(r"\[([^\]]*)\]", expr):
            if window == "$__range" and in_range_stat and "increase(" in expr:
                continue  # a stat of the whole time range: increase(x[$__range])
            if window != "$__rate_interval":
                problems.append(f"range [{window}]: use [$__rate_interval]"
                                + (" (or increase(x[$__range]) in a stat panel whose title "
                                   "says 'in the time range')" if window == "$__range" else ""))
        quantiles = _QUANTILE.findall(expr)
        exact = _EXACT_BUCKET.findall(expr)
        if expr.count("histogram_quantile(") != len(quantiles) or expr.count("_bucket") != len(
                quantiles) + len(exact):
            problems.append("a quantile must be histogram_quantile(q, sum by (le, ...) "
                            "(rate(x_bucket[$__rate_interval]))); one bucket only as "
                            'rate(x_bucket{le="$threshold"}[...]) / rate(x_count[...])')
        if "$model" in expr and "model" not in by:
            problems.append("filters by $model but does not keep model in its sum by (...)")
        for q in quantiles:
            if f"p{round(float(q) * 100)}" not in words:
                problems.append(f"title does not name the quantile p{round(float(q) * 100)}")
        missing = sorted(label for label in by if _words(label) not in words)
        if missing:
            problems.append(f"title does not say it is by {', '.join(missing)}")
        ratio = "\n  / " in expr
        per_hour = expr.endswith(" * 3600")
        if "rate(" in expr and not quantiles and not ratio and not per_hour:
            if "per second" not in words:
                problems.append("a rate: the title must say 'per second'")
            if unit not in PER_SECOND_UNITS:
                problems.append(f"a rate: unit {unit!r} is not one of {sorted(PER_SECOND_UNITS)}")
        if per_hour:
            if "per hour" not in words:
                problems.append("a rate times 3600: the title must say 'per hour'")
            if unit not in PER_HOUR_UNITS:
                problems.append(f"a rate per hour: unit {unit!r} is not one of "
                                f"{sorted(PER_HOUR_UNITS)}")
        if in_range_stat and "increase(" in expr and unit not in PER_HOUR_UNITS:
            problems.append(f"spend in the time range: unit {unit!r}, not currencyUSD")
        if burn and (unit != "none" or f"(1 - max by (model) ({NS}_slo_target_ratio" not in expr):
            problems.append("a burn rate divides the missed share by the error budget "
                            "(1 - max by (model) (slo_target_ratio)); unit none")
        if ratio and not burn and unit != "percentunit":
            problems.append(f"a ratio: unit {unit!r}, not percentunit")
        if ratio and not any(w in words for w in ("ratio", "share", " / ")):
            problems.append("a ratio: the title must say ratio, share or a / b")
        if quantiles and "_seconds_bucket" in expr and unit != "s":
            problems.append(f"a quantile of seconds: unit {unit!r}, not s")
        stray = set(_LEGEND_LABEL.findall(target.get("legendFormat", ""))) - by
        if stray:
            problems.append(f"legend names labels the query drops: {sorted(stray)}")
    return problems


def influx_panel_problems(panel: dict[str, Any]) -> list[str]:
    """The store dashboard's rules: its measurement, time range and tag variables."""
    title, unit = panel.get("title", ""), panel.get("fieldConfig", {}).get("defaults", {}).get(
        "unit")
    problems = [] if unit else ["no unit (fieldConfig.defaults.unit)"]
    words = title.lower()
    for target in panel.get("targets", []):
        query = target["query"]
        if target.get("datasource") != DS["influxdb"] or not target.get("rawQuery"):
            problems.append("targets are raw InfluxQL on ${datasource}")
        for needed in ('FROM "$measurement"', "$timeFilter"):
            if needed not in query:
                problems.append(f"no {needed}")
        if panel["type"] == "timeseries" and "GROUP BY time($__interval)" not in query:
            problems.append("a time series groups by time($__interval)")
        for tag in re.findall(r'GROUP BY (?:time\(\$__interval\), )?"(\w+)"', query):
            if f'"{tag}" =~ /^${tag}$/' not in query:
                problems.append(f"groups by {tag} without its ${tag} variable")
            if f"by {_words(tag)}" not in words:
                problems.append(f"title does not say it is by {_words(tag)}")
        if "derivative(" in query and "per second" not in words:
            problems.append("a derivative: the title must say 'per second'")
    return problems


def test_dashboards_name_no_datasource_uid() -> None:
    assert datasource_problems(OVERVIEW, "prometheus") == []
    assert datasource_problems(STORE, "influxdb") == []


@pytest.mark.parametrize("panel", panels(OVERVIEW), ids=lambda p: p["title"])
def test_overview_panel_keeps_the_rules(panel: dict[str, Any]) -> None:
    assert prometheus_panel_problems(panel) == []


@pytest.mark.parametrize("panel", panels(STORE), ids=lambda p: p["title"])
def test_store_panel_keeps_the_rules(panel: dict[str, Any]) -> None:
    assert influx_panel_problems(panel) == []


def test_titles_are_unique_and_variables_are_used() -> None:
    for dashboard in (OVERVIEW, STORE):
        titles = [p["title"] for p in panels(dashboard)]
        assert len(titles) == len(set(titles))
    model = {v["name"]: v for v in OVERVIEW["templating"]["list"]}["model"]
    assert (model["multi"], model["includeAll"], model["allValue"]) == (True, True, ".*")
    assert any("$model" in c.expr for c in PROM_CASES)
    used = {name for c in STORE_CASES for name in re.findall(r"\$(\w+)", c.expr)}
    assert {v["name"] for v in STORE["templating"]["list"]} - {"datasource"} <= used


_GOOD = next(p for p in panels(OVERVIEW) if p["title"] == "Requests per second by model")
_SEL = 'tinyllm_requests_total{model=~"$model"}'
_BREACHES = {
    "fixed window": ('sum by (model) (rate(tinyllm_requests_total{model=~"$model"}[5m]))',
                     "use [$__rate_interval]"),
    "bare counter": (f"sum by (model) ({_SEL})", "a counter must be read as rate"),
    "no $model": ("sum by (model) (rate(tinyllm_requests_total[$__rate_interval]))",
                  'no model=~"$model"'),
    "model not kept": (f"sum(rate({_SEL}[$__rate_interval]))", "does not keep model"),
    "unknown metric": ('sum by (model) (rate(tinyllm_request_total{model=~"$model"}'
                       '[$__rate_interval]))', "not a series of the catalog"),
    "quantile per series": ('histogram_quantile(0.95, rate(tinyllm_request_latency_seconds_'
                            'bucket{model=~"$model"}[$__rate_interval]))', "a quantile must be"),
    "gauge under rate": ('sum by (model) (rate(tinyllm_active_requests{model=~"$model"}'
                         '[$__rate_interval]))', "a gauge under a range"),
    "title misses a label": ('sum by (model, graph) (rate(tinyllm_requests_total{model=~'
                             '"$model"}[$__rate_interval]))', "by graph"),
    "whole range outside a stat": (f"sum by (model) (increase({_SEL}[$__range]))",
                                   "use [$__rate_interval]"),
    "one bucket, no count": ('sum by (model) (rate(tinyllm_request_latency_seconds_bucket{'
                             'model=~"$model", le="$e2e_threshold"}[$__rate_interval]))',
                             "one bucket only as"),
    "per hour, title says per second": (f"sum by (model) (rate({_SEL}[$__rate_interval])) "
                                        "* 3600", "must say 'per hour'"),
}


@pytest.mark.parametrize("breach", sorted(_BREACHES))
def test_the_rule_checker_catches_each_breach(breach: str) -> None:
    expr, message = _BREACHES[breach]
    bad = copy.deepcopy(_GOOD)
    bad["targets"][0]["expr"] = expr
    assert prometheus_panel_problems(_GOOD) == []
    assert any(message in p for p in prometheus_panel_problems(bad)), (
        prometheus_panel_problems(bad))


def test_the_rule_checker_catches_a_uid_a_missing_unit_and_a_vague_title() -> None:
    bad = copy.deepcopy(_GOOD)
    del bad["fieldConfig"]["defaults"]["unit"]
    bad["title"] = "Requests"
    problems = prometheus_panel_problems(bad)
    assert any("no unit" in p for p in problems) and any("per second" in p for p in problems)
    dashboard = copy.deepcopy(OVERVIEW)
    dashboard["panels"][1]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F"}
    assert any("P1809F" in p for p in datasource_problems(dashboard, "prometheus"))
    store = copy.deepcopy(panels(STORE)[0])
    store["targets"][0]["query"] = store["targets"][0]["query"].replace(
        ' AND "endpoint" =~ /^$endpoint$/', "")
    assert any("$endpoint" in p for p in influx_panel_problems(store))


# -- the pipeline workload: this file, run as a script --------------------------------------


def _hang_up(port: int) -> None:
    """Ask for /metrics and reset the connection at once, as a scraper that times out."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.005)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def pipeline_workload(port: int) -> None:
    """A process whose observability pipeline drops things, each in the real way: log
    lines sampled away, an event handler that raises, spans for a collector that is down,
    events for a store that is closed, scrapers that hang up. Also samples GPUs (NVML),
    where there are any. Prints ``ready gpu=...`` once serving."""
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export (and fail) every 100 ms
    from tinyllm.events import Event, EventHandler, emit_event, get_event_emitter
    from tinyllm.logging import configure_log_sampling, configure_logging, get_logger
    from tinyllm.metrics import GPUSampler, start_metrics_server
    from tinyllm.store import MetricsDatabase
    from tinyllm.telemetry import TelemetryConfig, configure_telemetry, trace_span

    class FlakyWebhook(EventHandler):
        def handle(self, event: Event) -> None:
            raise ConnectionError("webhook down")

    workdir = Path(tempfile.mkdtemp(prefix="pipeline-"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = start_metrics_server(port=port)
    configure_logging(log_level="info", log_format="json", log_file=workdir / "app.json")
    configure_log_sampling(sample_rate=0.5)
    get_event_emitter().add_handler(FlakyWebhook())
    with socket.socket() as probe:  # a port nothing listens on: the collector is down
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="otlp",
                                        otlp_endpoint=f"http://127.0.0.1:{dead}",
                                        export_timeout=0.3))
    store = MetricsDatabase(workdir / "store.db")
    store.close()
    sampler = GPUSampler(interval=1.0)
    gpu = sampler.start()
    status = sampler.status.reason if sampler.status else "?"
    print(f"ready gpu={'yes' if gpu else 'no'} ({status})", flush=True)
    log = get_logger("pipeline")
    while not stop.is_set():
        for i in range(10):
            log.info("tick", i=i)
        emit_event("pipeline.tick", "system", "info", "a round of the pipeline workload")
        with trace_span("pipeline.round"):
            store.record_event("pipeline_round", 0.01, model_id="none")
        _hang_up(port)
        stop.wait(0.2)
    sampler.stop()
    server.stop()


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    target: str
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _start(args: list[str], port: int, log_path: Path, ready: Callable[[str], bool],
           env: dict[str, str] | None = None, timeout: float = 60) -> Process:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    handle = Process(proc, f"127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while not ready(handle.log):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            pytest.fail(f"{args[1:4]} did not start:\n{handle.log}", pytrace=False)
        time.sleep(0.1)
    return handle


# -- the gateway: tinyllm serve in front of a fake OpenAI upstream ------------------------

GATEWAY_MODEL = "gw-model"
KEYS = {"TEAM_A_KEY": "team-a-secret", "TEAM_B_KEY": "team-b-secret"}
_USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def _upstream() -> Any:
    from tests.support.fault_server import DONE, FaultServer, Reply, sse

    whole = json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "up",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "ok"}}],
                        "usage": _USAGE}).encode()

    def chunk(delta: dict[str, Any], usage: dict[str, int] | None = None) -> dict[str, Any]:
        return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "up",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if delta
                else [], "usage": usage}

    streamed = sse(chunk({"role": "assistant", "content": "o"}), chunk({"content": "k"}),
                   chunk({"content": "!"}), chunk({}, _USAGE), DONE)

    class Upstream(FaultServer):
        def respond(self, exchange: Any) -> Any:
            if exchange.json.get("stream"):
                return Reply(body=streamed, content_type="text/event-stream",
                             stall_between=0.002)
            return Reply(body=whole)

    return Upstream()


def _traffic(url: str, stop: threading.Event) -> None:
    """Steady gateway traffic: accepted calls (whole and streamed), a key over its rpm,
    wrong and missing keys, an unknown model."""
    body = {"model": GATEWAY_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    calls = [(KEYS["TEAM_A_KEY"], body), (KEYS["TEAM_A_KEY"], {**body, "stream": True}),
             (KEYS["TEAM_B_KEY"], body), ("not-a-key", body), (None, body),
             (KEYS["TEAM_A_KEY"], {**body, "model": "no-such-model"})]
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            for key, payload in calls:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                with contextlib.suppress(httpx.HTTPError):
                    client.post("/v1/chat/completions", json=payload, headers=headers).read()
            stop.wait(0.2)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            free_port: Callable[[], int]) -> Iterator[Process]:
    from tests.support.servers import wait_ready

    from tinyllm.serve.config import KeySpec

    workdir = tmp_path_factory.mktemp("gateway")
    # The gateway's model is priced (its calls have a cost, per key too); team-a has a
    # budget it never reaches, where the gateway knows budgets (KEY_SPEND otherwise).
    prices = workdir / "prices.yaml"
    prices.write_text(f"prices:\n  {GATEWAY_MODEL}: {{input: 1.0, output: 2.0}}\n")
    budget = ("    budget_usd: 1000\n" if "budget_usd" in KeySpec.__dataclass_fields__
              else "")
    with _upstream() as upstream:
        config = workdir / "gateway.yaml"
        config.write_text(
            f"models:\n  - name: {GATEWAY_MODEL}\n    provider: openai\n"
            f"    base_url: {upstream.url}/v1\n"
            "keys:\n  - alias: team-a\n    key_env: TEAM_A_KEY\n    rpm: 100000\n"
            f"{budget}"
            "  - alias: team-b\n    key_env: TEAM_B_KEY\n    rpm: 2\n")
        port, redis_port = free_port(), free_port()  # nothing listens: Redis is down
        gw = _start([sys.executable, "-m", "tinyllm", "serve", "--config", str(config),
                     "--port", str(port), "--redis-url",
                     f"redis://127.0.0.1:{redis_port}/0"], port, workdir / "serve.log",
                    lambda log: "startup complete" in log,
                    env={**KEYS, "TINYLLM_PRICES": str(prices)})
        url = f"http://{gw.target}"
        stop = threading.Event()
        thread = threading.Thread(target=_traffic, args=(url, stop), daemon=True)
        try:
            wait_ready(url, gw.proc)
            thread.start()
            yield gw
        finally:
            stop.set()
            thread.join(10)
            gw.stop()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory,
             free_port: Callable[[], int]) -> Iterator[Process]:
    port = free_port()
    proc = _start([sys.executable, str(HERE), "--pipeline-workload", "--port", str(port)],
                  port, tmp_path_factory.mktemp("pipeline") / "out.log",
                  lambda log: "ready gpu=" in log)
    yield proc
    proc.stop()


# -- Prometheus over all three -----------------------------------------------------------


@dataclass
class Live:
    prom: Prometheus
    gpu_missing: str | None  # why the NVML sampler has no series; None where it has
    thresholds: dict[str, str]  # the exact-bucket variables, set as a user sets them
    unexported: set[str]  # KEY_SPEND families the gateway has no samples of

    def excepted(self, case: Case) -> set[str]:
        """The families ``case`` reads that the gateway does not export yet."""
        return {f for f in self.unexported if f"{NS}_{f}" in case.expr}

    def run(self, case: Case, model: str = ".*") -> list[dict[str, Any]]:
        promql = interpolate(case.expr, {"model": model, "__rate_interval": RATE_INTERVAL,
                                         "__range": RANGE, **self.thresholds})
        assert "$" not in promql, promql
        return self.prom.query(promql)


def unexported_key_spend(gateway: Process) -> set[str]:
    text = httpx.get(f"http://{gateway.target}/metrics", timeout=10).text
    return {f for f in KEY_SPEND if not re.search(rf"^{NS}_{f}\{{", text, re.MULTILINE)}


def slo_thresholds(prom: Prometheus) -> dict[str, str]:
    """Each exact-bucket variable set as a user would set it: among its options (the
    histogram's bucket bounds, as ``label_values(..., le)`` lists them), the one equal to
    the objective's threshold the example exports (``slo_objective_seconds``)."""
    found = {}
    for objective, (variable, family, _) in SLO_BUCKETS.items():
        limits = {float(r["value"][1]) for r in prom.wait_for(
            f'{NS}_slo_objective_seconds{{objective="{objective}"}}', lambda r: len(r) > 0)}
        options = prom.api("label/le/values", **{"match[]": f"{NS}_{family}_bucket"})
        chosen = [o for o in options if float(o) in limits]
        assert chosen, f"no bucket bound of {family} is the {objective} threshold {limits}"
        found[variable] = chosen[0]
    return found


@pytest.fixture(scope="module")
def live(prometheus: Callable[..., Prometheus], workload: Callable[..., Workload],
         gateway: Process, pipeline: Process) -> Iterator[Live]:
    example = workload()
    jobs = {"tinyllm": [example.target], "gateway": [gateway.target],
            "pipeline": [pipeline.target]}
    prom = prometheus(jobs=jobs)
    prom.wait_for("count_over_time(up[5m]) >= 5", lambda r: len(r) == len(jobs), timeout=60)
    gpu = re.search(r"ready gpu=(\w+) \((.*)\)", pipeline.log)
    assert gpu is not None, pipeline.log
    handle = Live(prom, None if gpu.group(1) == "yes" else gpu.group(2), slo_thresholds(prom),
                  unexported_key_spend(gateway))
    # Rare events (breaker transitions, queue rejections, disconnects) come every few
    # rounds: wait until every panel has something, then the tests judge what it is.
    deadline = time.monotonic() + 60
    pending = [c for c in PROM_CASES if not handle.excepted(c)]
    while pending and time.monotonic() < deadline:
        pending = [c for c in pending if not [r for r in handle.run(c)
                                              if math.isfinite(float(r["value"][1]))]]
        for name, process in (("gateway", gateway), ("pipeline workload", pipeline)):
            if process.proc.poll() is not None:
                pytest.fail(f"the {name} exited ({process.proc.returncode}):\n{process.log}",
                            pytrace=False)
        time.sleep(0.5)
    yield handle
    example.stop()


@pytest.mark.parametrize("case", PROM_CASES, ids=lambda c: c.id)
def test_panel_query_returns_data(live: Live, case: Case) -> None:
    from test_prometheus_queries import check_result

    promql = interpolate(case.expr, {"model": ".*", "__rate_interval": RATE_INTERVAL,
                                     "__range": RANGE, **live.thresholds})
    result = live.run(case)  # valid PromQL whatever the data
    excepted = live.excepted(case)
    if excepted:
        warnings.warn("excepted: " + KEY_SPEND_EXCEPTION.format(families=sorted(excepted)),
                      stacklevel=1)
        return
    check_result(result, case.expect, promql)


def _models(result: list[dict[str, Any]]) -> set[str]:
    return {r["metric"].get("model", "") for r in result}


@pytest.mark.parametrize("case", [c for c in PROM_CASES if "$model" in c.expr],
                         ids=lambda c: c.id)
def test_model_variable_filters_the_panel(live: Live, case: Case) -> None:
    """One model (a dotted name where there is one: Grafana escapes the dots), then two,
    formatted as Grafana formats a multi-value variable: exactly those come back."""
    everyone = sorted(_models(live.run(case)) - {""}, key=lambda m: ("." not in m, m))
    assert everyone, f"no model in the result of {case.expr}"
    one = everyone[0]
    assert _models(live.run(case, prometheus_regex([one]))) == {one}
    if len(everyone) > 1:
        two = set(everyone[:2])
        assert _models(live.run(case, prometheus_regex(sorted(two)))) == two


def test_model_variable_lists_every_model_the_panels_show(live: Live) -> None:
    variable = {v["name"]: v for v in OVERVIEW["templating"]["list"]}["model"]
    found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
    assert found, variable["query"]
    values = set(live.prom.api(f"label/{found.group(2)}/values",
                               **{"match[]": found.group(1)}))
    shown = {m for c in PROM_CASES if "$model" in c.expr for m in _models(live.run(c))}
    assert shown <= values, shown - values
    assert {GATEWAY_MODEL, "qwen2.5:0.5b", "gemma3:270m"} <= values


def test_gateway_and_pipeline_panels_see_their_processes(live: Live) -> None:
    by_job = {r["metric"]["job"] for r in live.prom.query(
        f'{NS}_gateway_key_rejections_total{{reason="rpm"}} > 0')}
    assert by_job == {"gateway"}
    jobs = {r["metric"]["job"] for r in live.prom.query(
        f'{NS}_store_events_dropped_total{{reason="closed"}} > 0 or '
        f'{NS}_telemetry_export_failures_total{{exporter="otlp"}} > 0')}
    assert jobs == {"pipeline"}


def test_gpu_panels_show_the_nvml_sampler_where_there_is_a_gpu(live: Live) -> None:
    gpu_cases = [c for c in PROM_CASES if "gpu_" in c.expr or "memory_efficiency" in c.expr]
    assert len(gpu_cases) == 4
    if live.gpu_missing is not None:
        # The listed exception: said out loud, never a silent skip.
        warnings.warn(f"excepted: {GPU_PANELS_EXCEPTION} ({live.gpu_missing})", stacklevel=1)
        return
    for case in gpu_cases:
        assert "all" in _models(live.run(case)), case.expr


# -- InfluxDB: the store dashboard ---------------------------------------------------------

STORE_DB = "tinyllm"
ENDPOINTS = {"diffusion_generate": "generate", "diffusion_infill_stream": "infill/stream"}


@pytest.fixture(scope="module")
def store_influx(influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> InfluxDB:
    """Two exports of a store's all-time totals 90 s apart, as a cron job writes them."""
    from prometheus_client import CollectorRegistry

    from tinyllm.metrics import MetricsCollector
    from tinyllm.store import MetricsDatabase

    influxdb.create_database(STORE_DB)
    now = time.time()
    path = tmp_path_factory.mktemp("store") / "m.db"
    with MetricsDatabase(path, collector=MetricsCollector(registry=CollectorRegistry())) as db:
        for stamp, rounds in ((now - 120, 10), (now - 30, 25)):
            for i in range(rounds):
                for event_type in ENDPOINTS:
                    # Priced but for one request in five; judged against an SLO, most met.
                    spend = {} if i % 5 == 0 else {"cost_usd": 0.001 * (1 + i % 3)}
                    db.record_event(event_type, 0.5 + i % 4, model_id="dream",
                                    timestamp=stamp - 1 - i * 0.01,
                                    metadata={"token_count": 3 + i % 5, "error": i % 7 == 0,
                                              "slo_met": i % 4 != 0, **spend})
            db.flush()
            influxdb.write(STORE_DB, db.export("influxdb", timestamp_ns=int(stamp * 1e9)))
    return influxdb


def _store_run(db: InfluxDB, query: str, **values: str) -> list[dict[str, Any]]:
    filled = interpolate(query, {"measurement": "tinyllm_store", "endpoint": ".*",
                                 "event_type": ".*", "model_id": ".*",
                                 "timeFilter": "time >= now() - 1h",
                                 "__interval": "10s", **values})
    assert "$" not in filled.replace("$/", ""), filled
    return db.query(STORE_DB, filled)


@pytest.mark.parametrize("case", STORE_CASES, ids=lambda c: c.id)
def test_store_panel_query_returns_data(store_influx: InfluxDB, case: Case) -> None:
    series = _store_run(store_influx, case.expr)
    assert series, f"no series:\n{case.expr}"
    values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
    assert values and all(math.isfinite(v) and v >= 0 for v in values), series
    if case.expect == "positive":
        assert min(values) > 0, series
    else:
        assert max(values) > 0, series


def test_store_variables_list_and_filter(store_influx: InfluxDB) -> None:
    variables = {v["name"]: v for v in STORE["templating"]["list"]}
    measurements = _store_run(store_influx, variables["measurement"]["query"])
    assert ["tinyllm_store"] in measurements[0]["values"]
    for tag, expected in (("endpoint", set(ENDPOINTS.values())),
                          ("event_type", set(ENDPOINTS))):
        [series] = _store_run(store_influx, variables[tag]["query"])
        assert {row[1] for row in series["values"]} == expected
    # One endpoint with a slash, escaped as Grafana escapes it for an InfluxQL regex.
    rate = next(c for c in STORE_CASES if c.panel == "Requests per second by endpoint")
    series = _store_run(store_influx, rate.expr, endpoint=influxql_regex(["infill/stream"]))
    assert [s["tags"]["endpoint"] for s in series] == ["infill/stream"]
    requests_per_s = series[0]["values"][-1][1]
    assert requests_per_s == pytest.approx(25 / 90, rel=0.01)  # 25 more requests in 90 s


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the pipeline workload of these tests")
    parser.add_argument("--pipeline-workload", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    pipeline_workload(parser.parse_args().port)
