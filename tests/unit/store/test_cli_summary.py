"""``tinyllm store summary``: the store's summary, cost by model included, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm.store import MetricsDatabase

from .conftest import T0, record_priced


def tinyllm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYLLM_")}
    env["COLUMNS"] = "120"  # rich's tables, wide enough for a row a line
    return subprocess.run([sys.executable, "-m", "tinyllm", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def priced(db: MetricsDatabase) -> Path:
    record_priced(db)
    db.close()
    return Path(db.engine.url.database or "")


def test_json_is_the_summary_with_cost_by_model(priced: Path) -> None:
    done = tinyllm("store", "summary", "--db", str(priced), "--json")
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["cost"]["total_usd"] == pytest.approx(0.0123 + 0.0456 + 1e-7 + 0.3, abs=1e-9)
    assert s["cost"]["by_model"]["mystery"] == {"requests": 3, "cost_usd": 0.0,
                                                "unpriced_requests": 3}
    assert s["slo"]["met"] == 4 and len(s["recent_events"]) == 9
    ranged = tinyllm("store", "summary", "--db", str(priced), "--json", "--model", "gpt-4o",
                     "--since", str(T0 + 1), "--until", str(T0 + 3700))
    assert json.loads(ranged.stdout)["cost"]["total_usd"] == pytest.approx(0.0456, abs=1e-9)


def test_tables_show_totals_and_one_row_per_model(priced: Path) -> None:
    done = tinyllm("store", "summary", "--db", str(priced))
    assert done.returncode == 0 and not done.stderr, done.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in done.stdout.splitlines() if line.startswith("│")}
    assert rows["requests"] == ["9"]
    assert rows["cost (priced requests)"] == ["$0.357900"]
    assert rows["unpriced requests"] == ["3"]
    assert rows["goodput (met every SLO objective)"] == ["66.7 % of 6 judged"]
    assert rows["gpt-4o"] == ["4", "$0.357900", "0", "66.7 % of 3"]
    assert rows["mystery"] == ["3", "$0.000000", "3", "0.0 % of 1"]


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--since", "yesterday"], 2, "--since"),
    (["--since", "1h", "--until", "2h"], 2, "after --until"),
    (["--model", " "], 2, "--model"),
    (["--db", "/nonexistent/metrics.db"], 1, "no metrics database"),
])
def test_bad_options_are_one_line(priced: Path, args: list[str], code: int,
                                  needle: str) -> None:
    done = tinyllm("store", "summary", *(["--db", str(priced)] if "--db" not in args else []),
                   *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
