"""Burn-rate alert rules for an SLO configuration: their shape, thresholds and matchers, and
the promtool tests written for them (promtool itself runs them in
tests/integration/test_slo_prometheus.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tinyllm.slo import Objectives, SLOConfig, alert_rule_tests, alert_rules

WINDOWS = ("5m", "30m", "1h", "6h")

CONFIG = SLOConfig(
    Objectives(ttft=0.5, tpot=0.05, e2e=10.0, target=0.99),
    {"llama3.1:70b": Objectives(ttft=2.0, e2e=10.0, target=0.95),
     "gpt-4o-mini": Objectives(ttft=1.0, tpot=0.05, e2e=10.0, target=0.999)},
    source="cost.yaml",
)


def rules_of(text: str) -> list[dict[str, Any]]:
    document = yaml.safe_load(text)
    [group] = document["groups"]
    return list(group["rules"])


def alerts_of(text: str) -> list[dict[str, Any]]:
    return [r for r in rules_of(text) if "alert" in r]


def find(text: str, name: str, slo: str) -> dict[str, Any]:
    [found] = [r for r in alerts_of(text) if r["alert"] == name and r["labels"]["slo"] == slo]
    return found


def thresholds(expr: str) -> list[float]:
    return [float(v) for v in re.findall(r"> ([0-9.e-]+)$", expr, re.MULTILINE)]


def promql_string(literal: str) -> str:
    """The value of a PromQL double-quoted string (the escapes the rules use)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), literal)


def default_regex(expr: str) -> str:
    found = re.search(r'model!~"((?:[^"\\]|\\.)*)"', expr)
    assert found, expr
    return promql_string(found.group(1))


def test_one_group_records_the_error_ratio_per_window_then_alerts() -> None:
    text = alert_rules(CONFIG)
    document = yaml.safe_load(text)
    assert [g["name"] for g in document["groups"]] == ["tinyllm-slo-burn-rate"]
    records = [r for r in rules_of(text) if "record" in r]
    assert [r["record"] for r in records] == [f"tinyllm:slo_errors:ratio_rate{w}"
                                              for w in WINDOWS]
    for rule, window in zip(records, WINDOWS, strict=True):
        assert rule["expr"].split() == (
            f'sum by (model, objective) (rate(tinyllm_slo_requests_total{{outcome="missed"}}'
            f"[{window}])) / sum by (model, objective) (rate(tinyllm_slo_requests_total"
            f"[{window}]))").split()
    # Recording rules come first: in one group, each evaluation reads fresh ratios.
    kinds = ["record" if "record" in r else "alert" for r in rules_of(text)]
    assert kinds == ["record"] * 4 + ["alert"] * (len(kinds) - 4)


def test_a_page_and_a_ticket_per_objective_and_model_group() -> None:
    text = alert_rules(CONFIG)
    found = sorted((r["alert"], r["labels"]["slo"]) for r in alerts_of(text))
    expected = []
    for title, groups in (("TTFT", ["default", "gpt-4o-mini", "llama3.1:70b"]),
                          ("TPOT", ["default", "gpt-4o-mini"]),  # llama has no tpot
                          ("E2E", ["default", "gpt-4o-mini", "llama3.1:70b"]),
                          ("Goodput", ["default", "gpt-4o-mini", "llama3.1:70b"])):
        for speed in ("Fast", "Slow"):
            expected += [(f"TinyLLMSLO{title}Burn{speed}", g) for g in groups]
    assert found == sorted(expected)
    for rule in alerts_of(text):
        speed = "page" if rule["alert"].endswith("Fast") else "ticket"
        objective = {"TTFT": "ttft", "TPOT": "tpot", "E2E": "e2e", "Goodput": "all"}[
            rule["alert"].removeprefix("TinyLLMSLO").rsplit("Burn", 1)[0]]
        slo = rule["labels"]["slo"]
        own = {} if slo == "default" else {"model": slo}  # what its series have anyway
        assert rule["labels"] == {"severity": speed, "objective": objective, "slo": slo, **own}
        assert "for" not in rule  # both windows already smooth it; the page comes at once


@pytest.mark.parametrize(("target", "fast", "slow"), [
    (0.99, 0.144, 0.06), (0.999, 0.0144, 0.006), (0.95, 0.72, 0.3), (0.9995, 0.0072, 0.003),
])
def test_thresholds_are_the_burn_rate_times_the_error_budget(
        target: float, fast: float, slow: float) -> None:
    text = alert_rules(SLOConfig(Objectives(ttft=0.5, target=target)))
    page = find(text, "TinyLLMSLOTTFTBurnFast", "default")["expr"]
    ticket = find(text, "TinyLLMSLOTTFTBurnSlow", "default")["expr"]
    assert thresholds(page) == [fast, fast]
    assert thresholds(ticket) == [slow, slow]
    # BOTH windows must be over it: the long one first (its ratio is the alert's value).
    assert page.split() == ['tinyllm:slo_errors:ratio_rate1h{objective="ttft"}', ">", str(fast),
                            "and",
                            'tinyllm:slo_errors:ratio_rate5m{objective="ttft"}', ">", str(fast)]
    assert ticket.split()[0].startswith("tinyllm:slo_errors:ratio_rate6h{")
    assert ticket.split()[4].startswith("tinyllm:slo_errors:ratio_rate30m{")


def test_named_models_match_themselves_and_the_default_every_other_model() -> None:
    text = alert_rules(CONFIG)
    llama = find(text, "TinyLLMSLOTTFTBurnFast", "llama3.1:70b")["expr"]
    assert 'ratio_rate1h{objective="ttft",model="llama3.1:70b"} > 0.72' in llama
    assert thresholds(find(text, "TinyLLMSLOTTFTBurnFast", "gpt-4o-mini")["expr"]) == [
        0.0144, 0.0144]
    default = find(text, "TinyLLMSLOTTFTBurnFast", "default")["expr"]
    assert 'model!~"gpt-4o-mini|llama3\\\\.1:70b"' in default  # the . escaped, in PromQL
    pattern = default_regex(default)
    assert pattern == r"gpt-4o-mini|llama3\.1:70b"
    # Prometheus anchors the regex: exactly the named models are left out.
    for model, excluded in (("llama3.1:70b", True), ("gpt-4o-mini", True),
                            ("llama3x1:70b", False), ("gpt-4o-mini-2024-07-18", False),
                            ("gpt-4o", False)):
        assert bool(re.fullmatch(pattern, model)) is excluded, model


def test_model_names_with_regex_and_quote_characters_are_escaped() -> None:
    odd = ['a.b*c', 'quote"and\\back', "x|y (z)", "[br]{ace}^$+?"]
    config = SLOConfig(Objectives(e2e=1.0), {name: Objectives(e2e=2.0) for name in odd})
    text = alert_rules(config)
    pattern = default_regex(find(text, "TinyLLMSLOE2EBurnFast", "default")["expr"])
    for name in odd:
        assert re.fullmatch(pattern, name), name
        mangled = name.replace(".", "x").replace("*", "").replace("|", "")
        if mangled != name:
            assert not re.fullmatch(pattern, mangled), mangled
        expr = find(text, "TinyLLMSLOE2EBurnFast", name)["expr"]
        literal = re.search(r'model="((?:[^"\\]|\\.)*)"', expr)
        assert literal and promql_string(literal.group(1)) == name
    # Only Go's QuoteMeta set is escaped (Python's re.escape would also escape " ", "-").
    assert "\\ " not in pattern and "\\-" not in pattern


def test_a_model_called_default_is_its_own_group() -> None:
    # promtool rejects two rules with one name and the same labels: the named model's
    # rules carry its model label, the default's do not.
    config = SLOConfig(Objectives(ttft=0.5), {"default": Objectives(ttft=0.2)})
    alerts = alerts_of(alert_rules(config))
    keys = [(r["alert"], tuple(sorted(r["labels"].items()))) for r in alerts]
    assert len(keys) == len(set(keys)) == 8
    pages = [r for r in alerts if r["alert"] == "TinyLLMSLOTTFTBurnFast"]
    assert sorted(r["expr"].split()[0] for r in pages) == [
        'tinyllm:slo_errors:ratio_rate1h{objective="ttft",model!~"default"}',
        'tinyllm:slo_errors:ratio_rate1h{objective="ttft",model="default"}']


def test_without_named_models_the_default_has_no_model_matcher() -> None:
    text = alert_rules(SLOConfig(Objectives(ttft=0.5)))
    for rule in alerts_of(text):
        assert "model" not in rule["expr"]


def test_only_named_models_get_no_default_rules() -> None:
    text = alert_rules(SLOConfig(None, {"m": Objectives(e2e=3.0)}))
    assert {r["labels"]["slo"] for r in alerts_of(text)} == {"m"}
    assert {r["alert"] for r in alerts_of(text)} == {
        "TinyLLMSLOE2EBurnFast", "TinyLLMSLOE2EBurnSlow", "TinyLLMSLOGoodputBurnFast",
        "TinyLLMSLOGoodputBurnSlow"}


def test_annotations_name_model_objective_threshold_and_target() -> None:
    text = alert_rules(CONFIG)
    rule = find(text, "TinyLLMSLOTTFTBurnFast", "llama3.1:70b")
    summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
    assert summary == "{{ $labels.model }}: TTFT SLO error budget burning fast (14.4x)"
    assert description.startswith("{{ $value | humanizePercentage }} of the requests to "
                                  "{{ $labels.model }} missed the TTFT objective (2s) over "
                                  "the last 1h, and over the last 5m too.")
    assert "The target is 95% (an error budget of 5% misses)" in description
    goodput = find(text, "TinyLLMSLOGoodputBurnSlow", "default")["annotations"]
    assert "missed at least one objective (TTFT 500ms, TPOT 50ms, e2e 10s)" in (
        goodput["description"])
    assert "over the last 6h, and over the last 30m too" in goodput["description"]
    assert goodput["summary"].endswith("goodput SLO error budget burning slow (6x)")


def test_alerts_that_could_never_fire_are_left_out_and_said_so() -> None:
    # Target 0.9: 14.4 x 10 % = 144 %, over any ratio; 6 x 10 % = 60 % still works.
    config = SLOConfig(Objectives(ttft=0.5), {"batch": Objectives(e2e=60.0, target=0.9),
                                              "lax": Objectives(e2e=60.0, target=0.8)})
    text = alert_rules(config)
    names = {(r["alert"], r["labels"]["slo"]) for r in alerts_of(text)}
    assert ("TinyLLMSLOE2EBurnSlow", "batch") in names
    assert ("TinyLLMSLOE2EBurnFast", "batch") not in names
    assert not any(slo == "lax" for _, slo in names)  # 6 x 20 % = 120 %: neither
    header = text.split("groups:")[0]
    assert "# Not generated (they could never fire):" in header
    assert ("#   TinyLLMSLOE2EBurnFast for model batch: 14.4 x the error budget of 10% is "
            "144%, a miss ratio no window can reach") in header
    assert header.count("for model lax") == 4  # e2e and goodput, fast and slow


def test_the_namespace_names_the_series_and_records() -> None:
    text = alert_rules(CONFIG, "ryot")
    assert "tinyllm" not in text.replace("tinyllm slo alerts", "").replace("TinyLLM", "")
    assert "rate(ryot_slo_requests_total[6h])" in text
    assert "ryot:slo_errors:ratio_rate5m{" in text
    assert yaml.safe_load(text)["groups"][0]["name"] == "ryot-slo-burn-rate"


def test_the_namespace_comes_from_the_environment_unless_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYLLM_METRICS_NAMESPACE", "ryot")
    assert "ryot_slo_requests_total" in alert_rules(CONFIG)
    assert "tinyllm_slo_requests_total" in alert_rules(CONFIG, "tinyllm")


@pytest.mark.parametrize("namespace", ["9lives", "has-dash", "__x"])
def test_a_bad_namespace_is_a_value_error(namespace: str) -> None:
    with pytest.raises(ValueError, match="not a valid metric prefix"):
        alert_rules(CONFIG, namespace)
    with pytest.raises(ValueError, match="not a valid metric prefix"):
        alert_rule_tests(CONFIG, "rules.yml", namespace)


def test_a_configuration_without_objectives_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"in cost\.yaml sets no objectives"):
        alert_rules(SLOConfig(source="cost.yaml"))
    with pytest.raises(ValueError, match="sets no objectives"):
        alert_rule_tests(SLOConfig(), "rules.yml")


# -- the promtool tests ------------------------------------------------------------------


def test_the_tests_load_the_rules_file_and_cover_every_alert() -> None:
    rules = alert_rules(CONFIG)
    document = yaml.safe_load(alert_rule_tests(CONFIG, "../rules/slo.yml"))
    assert document["rule_files"] == ["../rules/slo.yml"]
    assert document["evaluation_interval"] == "1m"
    groups = document["tests"]
    assert [g["name"].split(":")[0] for g in groups] == [
        "ttft", "ttft", "tpot", "tpot", "e2e", "e2e", "all", "all"]
    fired = set()
    quiet = set()
    for group in groups:
        for check in group["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                fired.add((check["alertname"], alert["exp_labels"]["slo"]))
            if not check["exp_alerts"] and group["name"].endswith("error budget"):
                quiet.add(check["alertname"])
    generated = {(r["alert"], r["labels"]["slo"]) for r in alerts_of(rules)}
    assert fired == generated  # each alert shown firing
    assert quiet == {name for name, _ in generated}  # and quiet under budget


def test_firing_expectations_are_exact_and_resolve() -> None:
    document = yaml.safe_load(alert_rule_tests(CONFIG, "rules.yml"))
    burn = document["tests"][0]
    assert burn["name"] == "ttft: fires while every request misses, resolves once they stop"
    models = sorted({re.search(r'model="([^"]+)"', s["series"]).group(1)  # type: ignore[union-attr]
                     for s in burn["input_series"]})
    assert models == ["any-other-model", "gpt-4o-mini", "llama3.1:70b"]
    checks = {(c["eval_time"], c["alertname"]): c["exp_alerts"] for c in burn["alert_rule_test"]}
    page = sorted(checks["60m", "TinyLLMSLOTTFTBurnFast"], key=lambda a: a["exp_labels"]["slo"])
    assert page[0] == {
        "exp_labels": {"severity": "page", "objective": "ttft", "slo": "default",
                       "model": "any-other-model"},
        "exp_annotations": {
            "summary": "any-other-model: TTFT SLO error budget burning fast (14.4x)",
            "description": "100% of the requests to any-other-model missed the TTFT objective "
                           "(500ms) over the last 1h, and over the last 5m too. The target is "
                           "99% (an error budget of 1% misses); this is over 14.4 times the "
                           "budget (2% of a 30-day budget in 1h): a 30-day budget gone in "
                           "about 2 days.",
        },
    }
    assert checks["70m", "TinyLLMSLOTTFTBurnFast"] == []
    assert checks["100m", "TinyLLMSLOTTFTBurnSlow"] == []


def test_a_named_model_without_the_objective_is_in_the_series_but_never_alerted() -> None:
    document = yaml.safe_load(alert_rule_tests(CONFIG, "rules.yml"))
    [burn] = [g for g in document["tests"] if g["name"].startswith("tpot: fires")]
    assert any('model="llama3.1:70b"' in s["series"] for s in burn["input_series"])
    for check in burn["alert_rule_test"]:
        assert all(a["exp_labels"]["model"] != "llama3.1:70b" for a in check["exp_alerts"])


def test_the_quiet_series_spend_half_of_each_models_budget() -> None:
    document = yaml.safe_load(alert_rule_tests(CONFIG, "rules.yml"))
    [quiet] = [g for g in document["tests"] if g["name"].startswith("e2e: quiet")]
    values = {re.search(r'model="([^"]+)".*outcome="(\w+)"', s["series"]).groups():  # type: ignore[union-attr]
              s["values"] for s in quiet["input_series"]}
    assert values["llama3.1:70b", "missed"] == "0+2.5x420"  # 100 a minute, budget 5 %
    assert values["gpt-4o-mini", "missed"] == "0+0.05x420"
    assert values["gpt-4o-mini", "met"] == "0+99.95x420"
    samples = [c["exp_samples"] for c in quiet["promql_expr_test"]]
    assert samples and all(s[0]["value"] == 500 for s in samples)
    assert {c["eval_time"] for c in quiet["alert_rule_test"]} == {"10m", "60m", "360m", "420m"}
