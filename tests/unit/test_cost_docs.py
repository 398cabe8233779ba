"""docs/cost-and-slo.md's cost file is examples/cost/cost.yaml, and it works as shown."""

from __future__ import annotations

import re
from pathlib import Path

from tinyllm.pricing import default_prices, load_prices
from tinyllm.slo import Objectives, load_slo

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cost-and-slo.md"
EXAMPLE = REPO / "examples" / "cost" / "cost.yaml"


def test_the_docs_show_the_example_file_verbatim() -> None:
    found = re.search(r"<!-- cost-file -->\n```yaml\n(.*?)```\n<!-- /cost-file -->",
                      DOC.read_text(), re.DOTALL)
    assert found is not None, "docs/cost-and-slo.md lost its cost-file block"
    assert found.group(1) == EXAMPLE.read_text()


def test_the_example_prices_and_objectives_are_what_its_comments_say() -> None:
    prices = load_prices(EXAMPLE)
    assert prices.lookup("gpt-4o-mini-2024-07-18").cached_input == 0.075
    assert prices.lookup("llama3.1:70b").per_hour == 2.40
    assert prices.lookup("gemma3-270m").token_cost(1000, 1000) == 0.0
    assert prices.lookup("gpt-4o") == default_prices().lookup("gpt-4o")  # layered
    slo = load_slo(EXAMPLE)
    assert slo.objectives_for("anything") == Objectives(0.5, 0.05, 10.0, 0.99)
    assert slo.objectives_for("gpt-4o-mini") == Objectives(1.0, 0.05, 10.0, 0.99)
    assert slo.objectives_for("llama3.1:70b") == Objectives(2.0, None, 10.0, 0.95)
