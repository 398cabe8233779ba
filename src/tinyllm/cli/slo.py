"""``tinyllm slo alerts``: Prometheus burn-rate alert rules for a cost file's SLOs, and
``promtool`` unit tests for them.

Example:
    $ tinyllm slo alerts --config cost.yaml > slo-rules.yml
    $ tinyllm slo alerts --config cost.yaml --output slo-rules.yml --tests slo-rules.test.yml
    $ promtool check rules slo-rules.yml && promtool test rules slo-rules.test.yml
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tinyllm.cli._app import app, err_console, fail
from tinyllm.settings import ENV_METRICS_NAMESPACE, ENV_SLO

__all__ = ["slo_app"]

slo_app = typer.Typer(help="Service-level objectives: burn-rate alert rules for Prometheus.",
                      no_args_is_help=True)
app.add_typer(slo_app, name="slo")


def _write(option: str, path: Path, text: str) -> None:
    if path.is_dir():
        fail(f"{option} {path} is a directory; give a file name", 2)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{option} {path}: cannot write: {exc.strerror or exc}", 2)


@slo_app.command("alerts")
def alerts(
    config: str = typer.Option(
        None, "--config", "-c", metavar="FILE",
        help=f"Cost file (YAML or JSON) whose slo section sets the objectives (default "
        f"${ENV_SLO}). See docs/cost-and-slo.md.",
    ),
    output: str = typer.Option(
        None, "--output", "-o", metavar="RULES",
        help="Write the rules to this file instead of stdout.",
    ),
    tests: str = typer.Option(
        None, "--tests", metavar="TESTS",
        help="Also write promtool unit tests for the rules here (needs --output; run "
        "them with: promtool test rules TESTS).",
    ),
    namespace: str = typer.Option(
        None, "--namespace", metavar="NS",
        help=f"Metric name prefix the rules query (default ${ENV_METRICS_NAMESPACE}, else "
        "tinyllm).",
    ),
) -> None:
    """Multi-window, multi-burn-rate alert rules for every objective of every model.

    Page when the error ratio over 1h and 5m is over 14.4 times the error budget;
    ticket when it is over 6 times over 6h and 30m.

    Example: tinyllm slo alerts --config cost.yaml -o slo-rules.yml --tests slo-tests.yml
    """
    from tinyllm.settings import metrics_namespace
    from tinyllm.slo import SLOError, alert_rule_tests, alert_rules, load_slo

    if tests is not None and output is None:
        fail("--tests needs --output RULES: the tests load the rules from that file", 2)
    source = config if config is not None else os.environ.get(ENV_SLO, "").strip()
    if not source:
        fail(f"no SLO file given; pass --config FILE (a cost file with an slo section) or "
             f"set ${ENV_SLO}", 2)
    try:
        ns = metrics_namespace(namespace)
    except ValueError as exc:
        fail(str(exc).replace("namespace=", "--namespace ", 1), 2)
    try:
        slo = load_slo(source)
    except SLOError as exc:
        fail("\n".join(exc.problems), 2)
    try:
        rules = alert_rules(slo, ns)
    except ValueError as exc:  # no objectives
        fail(str(exc), 2)
    if output is None:
        sys.stdout.write(rules)
        return
    rules_path = Path(output)
    tests_path = Path(tests) if tests is not None else None
    if tests_path is not None and tests_path.resolve() == rules_path.resolve():
        fail("--tests and --output name the same file; give two files", 2)
    _write("--output", rules_path, rules)
    count = rules.count("\n  - alert: ")
    err_console.print(f"wrote {count} alerts and their recording rules to {rules_path}",
                      soft_wrap=True)
    if tests_path is not None:
        relative = os.path.relpath(rules_path.resolve(), tests_path.resolve().parent)
        _write("--tests", tests_path, alert_rule_tests(slo, relative, ns))
        err_console.print(f"wrote promtool tests to {tests_path}; run: promtool test rules "
                          f"{tests_path}", soft_wrap=True)
