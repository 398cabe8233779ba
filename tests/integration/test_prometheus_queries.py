"""The spec's PromQL, alert rules and exposition, checked by a real Prometheus and promtool.

One Prometheus (1 s scrape and rule evaluation) scrapes two runs of
``examples/metrics_example.py``: job ``tinyllm`` with the default namespace (seeds 000 and
003) and job ``ryot`` with ``TINYLLM_METRICS_NAMESPACE=ryot`` (seed 002). It loads
``deploy/prometheus/alerts.yml`` and the same rules rendered for ``ryot``.

The queries come from docs/queries.md (parsed here, so the docs cannot drift from what is
tested): a valid seed query must give plausible values, an invalid one must be rejected,
one that is empty by construction must be empty, and every correction must give plausible
values. The Grafana dashboards' queries (``source=dashboard``, generated from
``tinyllm.grafana``) must be accepted here; test_grafana_dashboards.py runs them over the
workloads that give each of them data (a gateway, a failing observability pipeline).
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tinyllm.grafana import interpolate
from tinyllm.grafana.overview import SLO_BUCKETS
from tinyllm.metrics.catalog import ALERTS, CATALOG, Kind, full_name
from tinyllm.metrics.render import render_alert_rules

if TYPE_CHECKING:  # the fixtures' handle types; conftest is not imported at run time
    from conftest import Prometheus, Workload

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "metrics_example.py"
QUERIES_MD = REPO / "docs" / "queries.md"
ALERTS_YML = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
# source -> namespace queried
SOURCES = {"quickref": "tinyllm", "inference": "ryot", "guide": "tinyllm", "dashboard": "tinyllm",
           "cost": "tinyllm"}
STATUSES = ("valid", "invalid", "empty")
MIN_SCRAPES = 5  # of each target before any query is evaluated


# -- docs/queries.md ---------------------------------------------------------------------

_BLOCK = re.compile(r"<!--\s*(query|fix)\s+([^>]*?)\s*-->\s*\n```promql\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Entry:
    """One seed query from docs/queries.md, with its correction if it has one."""

    id: str
    source: str
    status: str
    expect: str | None
    query: str
    fix: str | None = None
    fix_expect: str | None = None


def _attrs(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"marker attributes must be key=value: {text!r}")
    return dict(pairs)  # type: ignore[arg-type]


def _check_expect(expect: str | None, where: str) -> None:
    kind, _, family = (expect or "").partition(":")
    if kind in ("any", "rate", "positive", "nonnegative", "ratio") and not family:
        return
    if kind == "quantile" and family in CATALOG and CATALOG[family].kind is Kind.HISTOGRAM:
        return
    raise ValueError(f"{where}: expect={expect!r} is not any, rate, positive, nonnegative, "
                     "ratio or quantile:<histogram family of the catalog>")


def parse_queries(text: str) -> list[Entry]:
    """The entries of docs/queries.md; ValueError for anything malformed."""
    if len(re.findall(r"^```promql$", text, re.MULTILINE)) != len(_BLOCK.findall(text)):
        raise ValueError("every ```promql block needs a <!-- query ... --> or <!-- fix ... --> "
                         "marker line right before it")
    entries: dict[str, Entry] = {}
    for kind, attr_text, promql in _BLOCK.findall(text):
        attrs = _attrs(attr_text)
        key = attrs.get("id", "")
        if kind == "query":
            if not key or key in entries:
                raise ValueError(f"query id {key!r} is missing or not unique")
            if attrs.get("source") not in SOURCES or attrs.get("status") not in STATUSES:
                raise ValueError(f"{key}: source must be one of {sorted(SOURCES)} and status one "
                                 f"of {STATUSES}, got {attrs}")
            if attrs["status"] == "valid":
                _check_expect(attrs.get("expect"), key)
            entries[key] = Entry(key, attrs["source"], attrs["status"], attrs.get("expect"), promql)
        else:
            if key not in entries or entries[key].fix is not None:
                raise ValueError(f"fix {key!r} must follow its query and come once")
            _check_expect(attrs.get("expect"), f"fix {key}")
            old = entries[key]
            entries[key] = Entry(old.id, old.source, old.status, old.expect, old.query, promql,
                                 attrs["expect"])
    for entry in entries.values():
        if entry.status != "valid" and entry.fix is None:
            raise ValueError(f"{entry.id} is {entry.status}: it needs a corrected query (fix)")
    return list(entries.values())


ENTRIES = parse_queries(QUERIES_MD.read_text())
SEEDS = [e for e in ENTRIES if e.source != "dashboard"]
DASHBOARD = [e for e in ENTRIES if e.source == "dashboard"]
#: Grafana's variables, filled in as Grafana would (All models; a rate window).
# The overview's variables as Grafana fills them in: every model, a rate window, the time
# range, and each exact-bucket threshold at its default.
GRAFANA_VARIABLES = {"model": ".*", "__rate_interval": "5m", "__range": "1h",
                     **{var: le for var, _, le in SLO_BUCKETS.values()}}


def test_queries_md_covers_every_seed_and_status() -> None:
    assert {e.source for e in ENTRIES} == set(SOURCES)
    assert {e.status for e in ENTRIES} == set(STATUSES)
    for entry in ENTRIES:  # each seed's queries use its own namespace
        names = set(re.findall(r"\b([a-z]+)_[a-z_]+\b", entry.query + (entry.fix or "")))
        assert SOURCES[entry.source] in names, entry


# -- the running stack -------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    prom: Prometheus
    workloads: dict[str, Workload]  # job (= namespace) -> workload


@pytest.fixture(scope="module")
def stack(
    prometheus: Callable[..., Prometheus],
    workload: Callable[..., Workload],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    workloads = {"tinyllm": workload(), "ryot": workload(namespace="ryot")}
    ryot_rules = tmp_path_factory.mktemp("rules") / "alerts-ryot.yml"
    ryot_rules.write_text(render_alert_rules("ryot"))
    prom = prometheus(jobs={job: [w.target] for job, w in workloads.items()},
                      rule_files=[ALERTS_YML, ryot_rules])
    # Prometheus' first scrape comes ~5 s after start-up (target discovery is throttled).
    prom.wait_for(f"count_over_time(up[5m]) >= {MIN_SCRAPES}", lambda r: len(r) == 2)
    yield Stack(prom, workloads)
    for wl in workloads.values():
        wl.stop()


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(item["value"][1]) for item in result]


def check_result(result: list[dict[str, Any]], expect: str, promql: str) -> None:
    """Assert that ``result`` is plausible for ``expect`` (see docs/queries.md)."""
    shown = "\n".join(f"  {r['metric']} = {r['value'][1]}" for r in result) or "  (empty)"
    why = f"{promql}\n->\n{shown}"
    vals = _values(result)
    kind, _, family = expect.partition(":")
    assert vals or kind == "any", f"expected a non-empty result:\n{why}"
    assert all(math.isfinite(v) for v in vals), f"non-finite value:\n{why}"
    if kind == "rate":
        assert min(vals) >= 0 and max(vals) > 0, f"rates must be >= 0, some > 0:\n{why}"
    elif kind == "positive":
        assert min(vals) > 0, f"values must be > 0:\n{why}"
    elif kind == "nonnegative":
        assert min(vals) >= 0, f"values must be >= 0:\n{why}"
    elif kind == "ratio":
        assert all(0 <= v <= 1 for v in vals), f"ratios must be within 0..1:\n{why}"
    elif kind == "quantile":
        top = max(CATALOG[family].buckets or ())
        assert all(0 < v <= top for v in vals), f"quantiles must be within (0, {top:g}]:\n{why}"


def test_both_workloads_are_up(stack: Stack) -> None:
    """Seed 003's troubleshooting check: /api/v1/targets shows every target healthy."""
    targets = stack.prom.api("targets")["activeTargets"]
    by_job = {t["labels"]["job"]: t for t in targets}
    assert set(by_job) == set(stack.workloads)
    for job, target in by_job.items():
        assert target["health"] == "up" and not target["lastError"], target
        assert target["labels"]["instance"] == stack.workloads[job].target
    assert _values(stack.prom.query("up")) == [1.0, 1.0]


@pytest.mark.parametrize("namespace", ["tinyllm", "ryot"])
def test_workload_exports_every_catalog_family(stack: Stack, namespace: str) -> None:
    expected: set[str] = set()
    for spec in CATALOG.values():
        # The observability pipeline's own health is not workload; the gateway's families
        # come from a gateway (tests/unit/serve checks them).
        if spec.group in ("pipeline", "gateway"):
            continue
        name = full_name(namespace, spec)
        if spec.kind is Kind.HISTOGRAM:
            expected |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            expected.add(name)
    other = "ryot" if namespace == "tinyllm" else "tinyllm"
    selector = f'{{job="{namespace}", __name__=~"{namespace}_.+"}}'
    found = {r["metric"]["__name__"] for r in stack.prom.query(f"group by (__name__) ({selector})")}
    assert sorted(expected - found) == [], f"families the example never touched ({namespace})"
    assert stack.prom.query(f'{{job="{namespace}", __name__=~"{other}_.+"}}') == []


@pytest.mark.parametrize("entry", SEEDS, ids=lambda e: e.id)
def test_seed_query(stack: Stack, entry: Entry) -> None:
    prom = stack.prom
    if entry.status == "invalid":
        with pytest.raises(RuntimeError, match=r"^bad_data: .*parse error"):
            prom.query(entry.query)
    elif entry.status == "empty":
        result = prom.query(entry.query)
        assert result == [], f"empty by construction, yet:\n{entry.query}\n-> {result}"
    else:
        check_result(prom.query(entry.query), entry.expect or "", entry.query)
    if entry.fix is not None:
        check_result(prom.query(entry.fix), entry.fix_expect or "", entry.fix)


def test_dashboard_queries_are_accepted(stack: Stack) -> None:
    """Each dashboard query, its variables filled in, is valid PromQL to Prometheus (whether
    it has data is test_grafana_dashboards.py's business)."""
    assert DASHBOARD, "docs/queries.md lost its generated Dashboards section"
    for entry in DASHBOARD:
        assert entry.status == "valid" and entry.fix is None, entry
        promql = interpolate(entry.query, GRAFANA_VARIABLES)
        assert "$" not in promql, promql
        stack.prom.query(promql)  # raises PromQLError if Prometheus rejects it


def test_alert_rules_load_and_evaluate(stack: Stack) -> None:
    """alerts.yml (tinyllm) and its ryot rendering: every rule loaded, evaluated, healthy;
    the simulated failures and the half-empty GPU make the matching alerts pend."""
    must_pend = {("GPUMemoryPressure", "qwen2.5:0.5b"), ("HighInferenceErrorRate", "qwen2.5:0.5b"),
                 ("TinyLLMHighErrorRate", "qwen2.5:0.5b")}

    def pending(group: dict[str, Any]) -> set[tuple[str, str]]:
        return {(rule["name"], alert["labels"].get("model", ""))
                for rule in group["rules"] for alert in rule.get("alerts", [])
                if alert["state"] == "pending"}

    def settled(groups: list[dict[str, Any]]) -> bool:
        rules = [r for g in groups for r in g["rules"]]
        return (len(groups) == 2 and all(r["health"] == "ok" for r in rules)
                and all(must_pend <= pending(g) for g in groups))

    groups = stack.prom.wait_for_rules(settled, timeout=20)
    assert sorted(g["name"] for g in groups) == ["ryot", "tinyllm"]
    for group in groups:
        assert [r["name"] for r in group["rules"]] == [a.name for a in ALERTS]
        for rule in group["rules"]:
            assert rule["type"] == "alerting"
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
            assert group["name"] + "_" in rule["query"], rule["query"]


# -- promtool ----------------------------------------------------------------------------


def _promtool(promtool: str, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    done = subprocess.run([promtool, *args], input=stdin, capture_output=True, timeout=30,
                          cwd=REPO, check=False)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


@pytest.mark.parametrize("namespace", ["tinyllm", "ryot"])
def test_promtool_check_metrics(stack: Stack, promtool: str, namespace: str) -> None:
    exposition = httpx.get(f"{stack.workloads[namespace].url}/metrics", timeout=10).content
    assert f"# TYPE {namespace}_requests_total counter".encode() in exposition
    rc, out = _promtool(promtool, "check", "metrics", stdin=exposition)
    assert (rc, out) == (0, ""), f"promtool check metrics ({namespace}):\n{out}"


def test_promtool_check_rules(promtool: str, tmp_path: Path) -> None:
    ryot_rules = tmp_path / "alerts-ryot.yml"
    ryot_rules.write_text(render_alert_rules("ryot"))
    for path in (ALERTS_YML, ryot_rules):
        rc, out = _promtool(promtool, "check", "rules", str(path))
        assert rc == 0 and f"SUCCESS: {len(ALERTS)} rules found" in out, out


def test_promtool_check_config(promtool: str) -> None:
    rc, out = _promtool(promtool, "check", "config", str(PROMETHEUS_YML))
    assert rc == 0, out
    assert "SUCCESS" in out and "alerts.yml" in out, out
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]  # seed 003's scrape config
    assert (job["job_name"], job["scrape_interval"]) == ("tinyllm", "15s")
    assert job["static_configs"] == [{"targets": ["localhost:9090"]}]


# -- the example's command line ----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_example_exits_0_on_signal(workload: Callable[..., Workload], sig: int) -> None:
    wl = workload(requests=2)
    assert f"curl {wl.url}/metrics" in wl.log
    assert wl.stop(sig) == 0, wl.log
    assert "stopped after" in wl.log


def test_example_exits_0_after_duration(free_port: Callable[[], int]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--port", str(free_port()), "--duration", "0.5",
         "--requests", "2", "--interval", "0.05"],
        capture_output=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"curl http://127.0.0.1:" in done.stderr
