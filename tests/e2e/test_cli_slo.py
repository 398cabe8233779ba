"""``tinyllm slo alerts``: the rules on stdout or in a file, promtool tests beside them, and
one line per problem (exit 2, no traceback) for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tinyllm.slo import alert_rule_tests, alert_rules, load_slo

CLI = [sys.executable, "-m", "tinyllm"]

COST_FILE = """\
slo:
  default: {ttft: 500ms, tpot: 50ms, e2e: 10s, target: 0.99}
  models:
    llama3.1:70b: {ttft: 2s, tpot: null, target: 0.95}
"""


def run(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("TINYLLM_SLO", "TINYLLM_METRICS_NAMESPACE")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, cwd=cwd)


def cost_file(tmp_path: Path, text: str = COST_FILE) -> Path:
    path = tmp_path / "cost.yaml"
    path.write_text(text)
    return path


def assert_usage_error(done: subprocess.CompletedProcess[str], *lines: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == list(lines), done.stderr


def test_the_rules_go_to_stdout(tmp_path: Path) -> None:
    path = cost_file(tmp_path)
    done = run("slo", "alerts", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == alert_rules(load_slo(path), "tinyllm")
    document = yaml.safe_load(done.stdout)
    alerts = [r["alert"] for r in document["groups"][0]["rules"] if "alert" in r]
    assert "TinyLLMSLOTTFTBurnFast" in alerts and "TinyLLMSLOGoodputBurnSlow" in alerts


def test_output_and_tests_files(tmp_path: Path) -> None:
    path = cost_file(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    done = run("slo", "alerts", "--config", str(path), "--output", "rules/slo.yml",
               "--tests", "tests/slo.test.yml", "--namespace", "ryot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    config = load_slo(path)
    rules = (tmp_path / "rules" / "slo.yml").read_text()
    assert rules == alert_rules(config, "ryot")
    count = sum(1 for r in yaml.safe_load(rules)["groups"][0]["rules"] if "alert" in r)
    tests = (tmp_path / "tests" / "slo.test.yml").read_text()
    # promtool reads rule_files relative to the tests file.
    assert tests == alert_rule_tests(config, "../rules/slo.yml", "ryot")
    assert yaml.safe_load(tests)["rule_files"] == ["../rules/slo.yml"]
    assert done.stderr.splitlines() == [
        f"wrote {count} alerts and their recording rules to rules/slo.yml",
        "wrote promtool tests to tests/slo.test.yml; run: promtool test rules "
        "tests/slo.test.yml",
    ]


def test_the_slo_file_and_namespace_come_from_the_environment(tmp_path: Path) -> None:
    path = cost_file(tmp_path)
    done = run("slo", "alerts", env={"TINYLLM_SLO": str(path),
                                     "TINYLLM_METRICS_NAMESPACE": "ryot"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == alert_rules(load_slo(path), "ryot")
    # The global --slo option puts the file in the environment for the command.
    done = run("--slo", str(path), "slo", "alerts")
    assert done.returncode == 0, done.stderr
    assert done.stdout == alert_rules(load_slo(path), "tinyllm")


def test_tests_need_an_output_file(tmp_path: Path) -> None:
    path = cost_file(tmp_path)
    done = run("slo", "alerts", "--config", str(path), "--tests", str(tmp_path / "t.yml"))
    assert_usage_error(
        done, "error: --tests needs --output RULES: the tests load the rules from that file")
    assert not (tmp_path / "t.yml").exists()


def test_a_missing_file_and_no_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert_usage_error(run("slo", "alerts", "--config", str(missing)),
                       f"error: {missing}: no such file")
    assert_usage_error(run("slo", "alerts"),
                       "error: no SLO file given; pass --config FILE (a cost file with an slo "
                       "section) or set $TINYLLM_SLO")


def test_a_bad_file_names_every_problem_one_line_each(tmp_path: Path) -> None:
    path = cost_file(tmp_path, "slo:\n  default: {ttft: fast, target: 2}\n")
    assert_usage_error(
        run("slo", "alerts", "--config", str(path)),
        f"error: {path}: slo.default: ttft: expected seconds (a number > 0) or text like "
        "'500ms', '2s', '1m', got 'fast'",
        f"{path}: slo.default: target must be a ratio between 0 and 1 (e.g. 0.99 for 99 %), "
        "got 2")


def test_a_file_without_objectives(tmp_path: Path) -> None:
    path = cost_file(tmp_path, "prices:\n  m: {input: 1, output: 2}\n")
    assert_usage_error(
        run("slo", "alerts", "--config", str(path)),
        f"error: the SLO configuration in {path} sets no objectives: give slo.default "
        "and/or slo.models (ttft, tpot, e2e, target)")


def test_a_bad_namespace_and_an_unwritable_output(tmp_path: Path) -> None:
    path = cost_file(tmp_path)
    assert_usage_error(
        run("slo", "alerts", "--config", str(path), "--namespace", "9lives"),
        "error: --namespace '9lives' is not a valid metric prefix: use letters, digits and "
        "underscores, not starting with a digit (e.g. 'tinyllm' or 'ryot')")
    assert_usage_error(
        run("slo", "alerts", "--config", str(path), "--output", str(tmp_path)),
        f"error: --output {tmp_path} is a directory; give a file name")
    nowhere = tmp_path / "missing-dir" / "r.yml"
    assert_usage_error(
        run("slo", "alerts", "--config", str(path), "--output", str(nowhere)),
        f"error: --output {nowhere}: cannot write: No such file or directory")


def test_help_names_the_capability() -> None:
    done = run("slo", "alerts", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "multi-burn-rate alert rules" in text and "promtool unit tests" in text
    assert "issue" not in text.lower() and "seed" not in text.lower()
