"""Multi-window, multi-burn-rate alert rules for an SLO configuration, and their tests.

The rules follow the Google SRE workbook ("Alerting on SLOs", its recommended setup):
the error ratio of each objective (``ttft``, ``tpot``, ``e2e``, and ``all``: goodput) is
recorded per model over 5m, 30m, 1h and 6h from ``<ns>_slo_requests_total``
(``missed / (met + missed)``); an alert needs BOTH its long and its short window over
``burn rate * error budget``:

====================  =========  ============  ===========  ====================
alert                 severity   long window   short window burn rate
====================  =========  ============  ===========  ====================
``...BurnFast``       page       1h            5m           14.4 (2 % of 30 days
                                                            of budget in 1h)
``...BurnSlow``       ticket     6h            30m          6 (5 % in 6h)
====================  =========  ============  ===========  ====================

The long window keeps an alert from firing on a blip; the short one resolves it
minutes after the misses stop, not hours. A model named in the configuration gets
rules matching ``model="name"`` with its own objectives and target; the default
objectives apply to every other model (``model!~"name|..."``). An alert whose threshold
is 100 % or more (a fast burn for a target under 93.06 %, a slow one under 83.3 %) could
never fire: it is left out, and the file's header says so.

``alert_rule_tests`` writes ``promtool test rules`` unit tests for the same rules: each
alert fires while every request misses, resolves once misses stop, and stays quiet
while misses use half the budget.

Example:
    >>> from tinyllm.slo import Objectives, SLOConfig
    >>> config = SLOConfig(Objectives(ttft=0.5, target=0.99), {"big": Objectives(e2e=30.0)})
    >>> rules = alert_rules(config, namespace="tinyllm")
    >>> "alert: TinyLLMSLOTTFTBurnFast" in rules, "> 0.144" in rules
    (True, True)
    >>> 'model!~"big"' in rules and 'model="big"' in rules
    True
    >>> tests = alert_rule_tests(config, "slo-rules.yml", namespace="tinyllm")
    >>> tests.startswith("# promtool test rules")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tinyllm.settings import metrics_namespace
from tinyllm.slo._config import OBJECTIVES, Objectives, SLOConfig

__all__ = ["alert_rule_tests", "alert_rules"]

#: The windows the error ratio is recorded over.
_WINDOWS = ("5m", "30m", "1h", "6h")
#: The name each objective has in alert names (``all`` is the goodput objective).
_TITLES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E", "all": "Goodput"}
_WORDS = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "e2e"}
#: Go's regexp.QuoteMeta set, the characters RE2 gives a meaning: only those are escaped
#: (re.escape also escapes "-", "#", " ", ...), so the pattern reads like the names.
_REGEX_SPECIAL = frozenset(r"\.+*?()|[]{}^$")
_MODEL_TEMPLATE = "{{ $labels.model }}"
_VALUE_TEMPLATE = "{{ $value | humanizePercentage }}"
_BUDGET_DAYS = 30  # the SLO period the burn rates are sized for


@dataclass(frozen=True)
class _Speed:
    suffix: str
    severity: str
    long: str
    short: str
    burn_rate: float
    spent: str  # what the burn rate means, for the description


_SPEEDS = (
    _Speed("Fast", "page", "1h", "5m", 14.4, "2% of a 30-day budget in 1h"),
    _Speed("Slow", "ticket", "6h", "30m", 6.0, "5% of a 30-day budget in 6h"),
)


@dataclass(frozen=True)
class _Group:
    """One set of objectives and the models it applies to."""

    model: str | None  # None: the default, for every model not named
    objectives: Objectives
    matcher: str  # PromQL label matchers selecting its models ("" for any)

    @property
    def label(self) -> str:
        """The alerts' ``slo`` label: the model named, or ``default``."""
        return self.model if self.model is not None else "default"

    def labels(self, severity: str, objective: str) -> dict[str, str]:
        """An alert's labels. A named model's rules also set ``model`` (the value its
        series have anyway), so no two rules share a name and labels, whatever the
        models are called."""
        found = {"severity": severity, "objective": objective, "slo": self.label}
        if self.model is not None:
            found["model"] = self.model
        return found

    def names(self) -> list[str]:
        return [*self.objectives.thresholds, "all"]


def _quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _regex_literal(text: str) -> str:
    """An RE2 pattern matching exactly ``text``."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _groups(config: SLOConfig) -> list[_Group]:
    named = sorted(config.models)
    found = [_Group(name, config.models[name], f"model={_quote(name)}") for name in named]
    if config.default is not None:
        others = (f"model!~{_quote('|'.join(_regex_literal(n) for n in named))}"
                  if named else "")
        found.append(_Group(None, config.default, others))
    if not found:
        where = f" in {config.source}" if config.source else ""
        raise ValueError(f"the SLO configuration{where} sets no objectives: give slo.default "
                         "and/or slo.models (ttft, tpot, e2e, target)")
    return found


def _number(value: float) -> str:
    return repr(round(value, 12))


def _threshold(objectives: Objectives, speed: _Speed) -> float:
    return round(speed.burn_rate * objectives.error_budget, 12)


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.6g}%"


def _record(namespace: str, window: str) -> str:
    return f"{namespace}:slo_errors:ratio_rate{window}"


def _alert_name(objective: str, speed: _Speed) -> str:
    return f"TinyLLMSLO{_TITLES[objective]}Burn{speed.suffix}"


def _selector(namespace: str, window: str, group: _Group, objective: str) -> str:
    matchers = ",".join(m for m in (f"objective={_quote(objective)}", group.matcher) if m)
    return f"{_record(namespace, window)}{{{matchers}}}"


def _objective_text(group: _Group, objective: str) -> str:
    limits = group.objectives.thresholds
    if objective != "all":
        return f"the {_WORDS[objective]} objective ({_seconds(limits[objective])})"
    listed = ", ".join(f"{_WORDS[n]} {_seconds(v)}" for n, v in limits.items())
    return f"at least one objective ({listed})"


def _annotations(group: _Group, objective: str, speed: _Speed, model: str,
                 value: str) -> dict[str, str]:
    """The alert's annotations with ``model`` and ``value`` (templates in the rules,
    their rendering in the tests)."""
    target = group.objectives.target
    budget = group.objectives.error_budget
    days = round(_BUDGET_DAYS / speed.burn_rate)
    what = "goodput" if objective == "all" else _WORDS[objective]
    return {
        "summary": f"{model}: {what} SLO error budget burning {speed.suffix.lower()} "
                   f"({speed.burn_rate:g}x)",
        "description": (
            f"{value} of the requests to {model} missed {_objective_text(group, objective)} "
            f"over the last {speed.long}, and over the last {speed.short} too. The target "
            f"is {_percent(target)} (an error budget of {_percent(budget)} misses); this is "
            f"over {speed.burn_rate:g} times the budget ({speed.spent}): a 30-day budget "
            f"gone in about {days} days."),
    }


def _skipped(group: _Group, speed: _Speed, objective: str) -> str | None:
    threshold = _threshold(group.objectives, speed)
    if threshold < 1:
        return None
    who = f"model {group.model}" if group.model is not None else "the default objectives"
    return (f"{_alert_name(objective, speed)} for {who}: {speed.burn_rate:g} x the error "
            f"budget of {_percent(group.objectives.error_budget)} is "
            f"{_percent(threshold)}, a miss ratio no window can reach")


def _dump(document: dict[str, Any], header: Sequence[str]) -> str:
    import yaml  # deferred: `import tinyllm` stays cheap

    class _Dumper(yaml.SafeDumper):
        pass

    def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _text)
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=10**6,
                     allow_unicode=True, default_flow_style=False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + body


def _header(config: SLOConfig, groups: list[_Group], first: str) -> list[str]:
    source = f" from {config.source}" if config.source else ""
    lines = [first + source + " by `tinyllm slo alerts`.",
             "Multi-window, multi-burn-rate SLO alerts (Google SRE workbook, "
             "\"Alerting on SLOs\"):",
             "page: 1h and 5m error ratio both over 14.4 x the error budget; "
             "ticket: 6h and 30m both over 6 x."]
    skipped = [s for g in groups for o in g.names() for speed in _SPEEDS
               if (s := _skipped(g, speed, o)) is not None]
    if skipped:
        lines += ["Not generated (they could never fire):", *(f"  {s}" for s in skipped)]
    return lines


def alert_rules(config: SLOConfig, namespace: str | None = None) -> str:
    """Prometheus rules (YAML) for ``config``: the error-ratio recording rules and a
    page and a ticket alert per objective of each model group.

    ``namespace`` is the metric prefix (else ``$TINYLLM_METRICS_NAMESPACE``, else
    ``tinyllm``). Raises ``ValueError`` for a configuration without objectives or a bad
    namespace. Check the result with ``promtool check rules``.

    Example:
        >>> from tinyllm.slo import Objectives, SLOConfig
        >>> rules = alert_rules(SLOConfig(Objectives(e2e=2.0, target=0.999)), "ryot")
        >>> "record: ryot:slo_errors:ratio_rate30m" in rules
        True
        >>> print(rules.split("alert: TinyLLMSLOE2EBurnFast")[1].split("labels:")[0].strip())
        expr: |
          ryot:slo_errors:ratio_rate1h{objective="e2e"} > 0.0144
          and
          ryot:slo_errors:ratio_rate5m{objective="e2e"} > 0.0144
    """
    ns = metrics_namespace(namespace)
    groups = _groups(config)
    from tinyllm.metrics.catalog import CATALOG, full_name  # deferred: metrics imports slo

    counter = full_name(ns, CATALOG["slo_requests_total"])
    rules: list[dict[str, Any]] = []
    for window in _WINDOWS:
        rules.append({
            "record": _record(ns, window),
            "expr": (f'sum by (model, objective) (rate({counter}{{outcome="missed"}}[{window}]))'
                     f"\n/\nsum by (model, objective) (rate({counter}[{window}]))\n"),
        })
    for objective in (*OBJECTIVES, "all"):
        for group in groups:
            if objective not in group.names():
                continue
            for speed in _SPEEDS:
                if _skipped(group, speed, objective) is not None:
                    continue
                limit = _number(_threshold(group.objectives, speed))
                rules.append({
                    "alert": _alert_name(objective, speed),
                    "expr": (f"{_selector(ns, speed.long, group, objective)} > {limit}\nand\n"
                             f"{_selector(ns, speed.short, group, objective)} > {limit}\n"),
                    "labels": group.labels(speed.severity, objective),
                    "annotations": _annotations(group, objective, speed, _MODEL_TEMPLATE,
                                                _VALUE_TEMPLATE),
                })
    document = {"groups": [{"name": f"{ns}-slo-burn-rate", "rules": rules}]}
    return _dump(document, _header(config, groups, "Prometheus rules generated"))


# -- promtool unit tests -----------------------------------------------------------------

_BURN_MINUTES = 60  # every request misses for this long, then every one meets
_CALM_MINUTES = 120
_QUIET_MINUTES = 420  # misses at half the budget: past the longest window (6h)
_PER_MINUTE = 100  # requests per minute in the test series


def _representative(group: _Group, named: Sequence[str]) -> str:
    if group.model is not None:
        return group.model
    name = "any-other-model"
    while name in named:
        name += "-x"
    return name


def _series(counter: str, model: str, objective: str, outcome: str, values: str
            ) -> dict[str, str]:
    labels = (f"model={_quote(model)},objective={_quote(objective)},"
              f"outcome={_quote(outcome)}")
    return {"series": f"{counter}{{{labels}}}", "values": values}


def _alert_test(at: int, name: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_time": f"{at}m", "alertname": name, "exp_alerts": expected}


def _burn_group(counter: str, objective: str, groups: list[_Group],
                named: Sequence[str]) -> dict[str, Any]:
    burn, calm, rate = _BURN_MINUTES, _CALM_MINUTES, _PER_MINUTE
    total = burn * rate
    series = []
    firing: dict[str, list[dict[str, Any]]] = {_alert_name(objective, s): [] for s in _SPEEDS}
    for group in groups:
        model = _representative(group, named)
        # Every group gets the series, those without the objective included: the
        # default's rules must leave a named model alone.
        series.append(_series(counter, model, objective, "missed",
                              f"0+{rate}x{burn} {total}+0x{calm}"))
        series.append(_series(counter, model, objective, "met",
                              f"0+0x{burn} 0+{rate}x{calm}"))
        if objective not in group.names():
            continue
        for speed in _SPEEDS:
            if _skipped(group, speed, objective) is None:
                firing[_alert_name(objective, speed)].append({
                    "exp_labels": {"severity": speed.severity, "objective": objective,
                                   "slo": group.label, "model": model},
                    # The long window's ratio: every request in it missed.
                    "exp_annotations": _annotations(group, objective, speed, model, "100%"),
                })
    fast, slow = (_alert_name(objective, s) for s in _SPEEDS)
    tests = [
        _alert_test(burn, fast, firing[fast]),
        _alert_test(burn, slow, firing[slow]),
        # Misses stopped at 60m: the short window (5m) clears the page though the hour
        # still holds them; the ticket's 30m window clears it by 100m.
        _alert_test(burn + 10, fast, []),
        _alert_test(burn + 40, slow, []),
    ]
    return {"name": f"{objective}: fires while every request misses, resolves once they stop",
            "interval": "1m", "input_series": series, "alert_rule_test": tests}


def _quiet_group(ns: str, counter: str, objective: str, groups: list[_Group],
                 named: Sequence[str]) -> dict[str, Any] | None:
    minutes, rate = _QUIET_MINUTES, _PER_MINUTE
    series = []
    checks = []
    for group in groups:
        if objective not in group.names():
            continue
        model = _representative(group, named)
        budget = group.objectives.error_budget
        missed = _number(rate * budget / 2)
        met = _number(rate - rate * budget / 2)
        series.append(_series(counter, model, objective, "missed", f"0+{missed}x{minutes}"))
        series.append(_series(counter, model, objective, "met", f"0+{met}x{minutes}"))
        for window in _WINDOWS:  # the misses are there: half the budget in every window
            selector = (f"{_record(ns, window)}{{model={_quote(model)},"
                        f"objective={_quote(objective)}}}")
            checks.append({
                "expr": f"round({selector} / {_number(budget)} * 1000)",
                "eval_time": f"{minutes}m",
                "exp_samples": [{"labels": f"{{model={_quote(model)},"
                                           f"objective={_quote(objective)}}}",
                                 "value": 500}],
            })
    if not series:
        return None
    tests = [_alert_test(at, _alert_name(objective, speed), [])
             for at in (10, 60, 360, minutes) for speed in _SPEEDS]
    return {"name": f"{objective}: quiet while misses use half the error budget",
            "interval": "1m", "input_series": series, "alert_rule_test": tests,
            "promql_expr_test": checks}


def alert_rule_tests(config: SLOConfig, rules_file: str, namespace: str | None = None) -> str:
    """``promtool test rules`` unit tests (YAML) for ``alert_rules(config, namespace)``
    written to ``rules_file`` (a path relative to the tests file, as promtool reads it).

    For each objective: every alert fires, with its exact labels and annotations, while
    every request misses, and resolves after the misses stop; none fires while misses
    run at half the error budget for seven hours (and the recorded ratios show them).

    Example:
        >>> from tinyllm.slo import Objectives, SLOConfig
        >>> tests = alert_rule_tests(SLOConfig(Objectives(ttft=0.2)), "rules.yml")
        >>> "rule_files:\\n- rules.yml" in tests, "alertname: TinyLLMSLOGoodputBurnSlow" in tests
        (True, True)
    """
    ns = metrics_namespace(namespace)
    groups = _groups(config)
    from tinyllm.metrics.catalog import CATALOG, full_name

    counter = full_name(ns, CATALOG["slo_requests_total"])
    named = sorted(config.models)
    present = [o for o in (*OBJECTIVES, "all") if any(o in g.names() for g in groups)]
    tests: list[dict[str, Any]] = []
    for objective in present:
        tests.append(_burn_group(counter, objective, groups, named))
        quiet = _quiet_group(ns, counter, objective, groups, named)
        if quiet is not None:
            tests.append(quiet)
    document = {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}
    header = _header(config, groups, "promtool test rules: unit tests generated")
    return _dump(document, [*header, f"Run: promtool test rules <this file> "
                                      f"(next to {rules_file})"])
