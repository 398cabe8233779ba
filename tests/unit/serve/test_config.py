"""The gateway's configuration file: what it accepts, and every problem at once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tinyllm.serve.config import ConfigError, default_config, load_config, parse_config

GOOD = """
models:
  - name: gemma3-270m
    provider: local
  - name: big
    provider: openai
    base_url: http://127.0.0.1:8000/v1
    model: upstream-model-name
    api_key_env: UPSTREAM_KEY
  - name: llama
    provider: ollama
keys:
  - alias: team-a
    key_env: TEAM_A_KEY
    models: [gemma3-270m]
    rpm: 600
    tpm: 200000
  - alias: team-b
    key_sha256: %s
"""


def test_the_documented_example_parses() -> None:
    digest = hashlib.sha256(b"secret-b").hexdigest()
    config = parse_config(GOOD % digest, source="g.yaml",
                          environ={"UPSTREAM_KEY": "up-key", "TEAM_A_KEY": "secret-a"})
    big = config.models["big"]
    assert (big.provider, big.base_url, big.upstream_model, big.api_key) == (
        "openai", "http://127.0.0.1:8000/v1", "upstream-model-name", "up-key")
    assert config.models["llama"].base_url == "http://127.0.0.1:11434"
    assert config.models["gemma3-270m"].upstream_model == "gemma3-270m"
    a, b = config.keys
    assert (a.alias, a.sha256, a.models, a.rpm, a.tpm) == (
        "team-a", hashlib.sha256(b"secret-a").hexdigest(), ("gemma3-270m",), 600, 200000)
    assert (b.alias, b.sha256, b.models) == ("team-b", digest, None)
    assert "secret" not in repr(config) and "up-key" not in repr(config)


def test_every_problem_is_listed_with_the_file_and_the_entry() -> None:
    text = """
models:
  - name: big
    provider: openai
  - name: big
    provider: local
  - provider: nonsense
    name: "bad name!"
    colour: red
  - name: x
    provider: local
    base_url: http://a
  - name: y
    provider: openai
    base_url: ftp://a
    api_key_env: MISSING_KEY
keys:
  - alias: k
  - alias: k2
    key_env: A
    key_sha256: abc
  - alias: k3
    key_sha256: nothex
    models: [ghost]
    rpm: 0
extra: 1
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="g.yaml", environ={"A": "a"})
    problems = info.value.problems
    expected = [
        "g.yaml: top level: unknown key 'extra' (valid: effective_date, keys, models, "
        "prices, slo)",
        "g.yaml: models[0] (big): base_url is required for provider openai",
        "g.yaml: models[1] (big): name 'big' is given twice",
        "g.yaml: models[2] (bad name!): name may contain only",
        "g.yaml: models[2] (bad name!): unknown key 'colour'",
        "g.yaml: models[2] (bad name!): provider 'nonsense' is not one of local, ollama, openai",
        "g.yaml: models[3] (x): base_url applies to providers ollama and openai",
        "g.yaml: models[4] (y): base_url must start with http:// or https://",
        "g.yaml: models[4] (y): api_key_env: the environment variable MISSING_KEY is not set",
        "g.yaml: keys[0] (k): key_env or key_sha256 is required",
        "g.yaml: keys[1] (k2): give key_env or key_sha256, not both",
        "g.yaml: keys[2] (k3): key_sha256 must be 64 hex digits",
        "g.yaml: keys[2] (k3): models: 'ghost' is not a configured model",
        "g.yaml: keys[2] (k3): rpm must be a whole number >= 1, got 0",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)


@pytest.mark.parametrize(("text", "words"), [
    ("", "expected a mapping"),
    ("models: [", "not valid YAML"),
    ("models: []", "must be a non-empty list"),
    ("keys: []", "models: required"),
    ("models:\n  - name: a\n    provider: local\n  - name: b\n    provider: local",
     "only one local model"),
])
def test_shapes_that_are_not_a_configuration(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(text, source="g.yaml")


def test_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_text("models:\n  - name: m\n    provider: local\n")
    assert list(load_config(path).models) == ["m"]


def test_the_default_serves_the_embedded_model() -> None:
    config = default_config()
    assert [(r.name, r.provider) for r in config.models.values()] == [("gemma3-270m", "local")]
    assert config.keys == ()


PRICED = """
models:
  - name: big
    provider: openai
    base_url: http://127.0.0.1:8000/v1
keys:
  - alias: daily
    key_sha256: '%s'
    budget_usd: 25
  - alias: monthly
    key_sha256: '%s'
    budget_usd: 0.5
    budget_period: month
  - alias: unlimited
    key_sha256: '%s'
effective_date: 2026-01-31
prices:
  big: {input: 2.5, output: 10, cached_input: 1.25, source: our contract}
slo:
  default: {ttft: 500ms, e2e: 10s}
  models:
    big: {ttft: 1s, target: 0.95}
"""


def _digests(n: int) -> tuple[str, ...]:
    return tuple(hashlib.sha256(f"k{i}".encode()).hexdigest() for i in range(n))


def test_budgets_prices_and_the_slo() -> None:
    config = parse_config(PRICED % _digests(3), source="g.yaml")
    daily, monthly, unlimited = config.keys
    assert (daily.budget_usd, daily.budget_period) == (25.0, "day")
    assert (monthly.budget_usd, monthly.budget_period) == (0.5, "month")
    assert unlimited.budget_usd is None
    assert config.price_section is not None and list(config.price_section.prices) == ["big"]
    assert config.prices is not None
    big = config.prices.lookup("big")
    assert big is not None and (big.input, big.output, big.cached_input) == (2.5, 10.0, 1.25)
    assert config.prices.lookup("gpt-4o-mini") is not None  # the shipped table underneath
    assert config.prices.effective_date == "2026-01-31"
    assert config.slo is not None
    own, default = config.slo.objectives_for("big"), config.slo.objectives_for("other")
    assert own is not None and (own.ttft, own.e2e, own.target) == (1.0, 10.0, 0.95)
    assert default is not None and (default.ttft, default.e2e) == (0.5, 10.0)


def test_without_prices_or_slo_the_process_keeps_its_own() -> None:
    config = parse_config("models: [{name: m, provider: local}]")
    assert (config.prices, config.price_section, config.slo) == (None, None, None)


def test_every_budget_price_and_slo_problem_is_listed_at_once() -> None:
    a, b, c, d, e = _digests(5)
    text = f"""
models:
  - name: big
    provider: openai
    base_url: http://127.0.0.1:8000/v1
keys:
  - alias: negative
    key_sha256: '{a}'
    budget_usd: -5
  - alias: weekly
    key_sha256: '{b}'
    budget_usd: 10
    budget_period: week
  - alias: no-budget
    key_sha256: '{c}'
    budget_period: month
  - alias: boolean
    key_sha256: '{d}'
    budget_usd: true
  - alias: zero
    key_sha256: '{e}'
    budget_usd: 0
prices:
  big: {{input: -1, output: 10}}
  other: {{inptu: 1}}
slo:
  default: {{ttft: fast}}
  models:
    big: {{target: 2}}
  extra: 1
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="g.yaml")
    problems = info.value.problems
    expected = [
        "g.yaml: keys[0] (negative): budget_usd must be a number > 0 (USD per day or month), "
        "got -5",
        "g.yaml: keys[1] (weekly): budget_period 'week' is not one of day, month",
        "g.yaml: keys[2] (no-budget): budget_period applies to a budget: give budget_usd too",
        "g.yaml: keys[3] (boolean): budget_usd must be a number > 0",
        "g.yaml: keys[4] (zero): budget_usd must be a number > 0",
        "g.yaml: prices.big: input must be a number >= 0 (USD), got -1",
        "g.yaml: prices.other: unknown key 'inptu'",
        "g.yaml: prices.other: give input and output",
        "g.yaml: slo: unknown key 'extra'",
        "g.yaml: slo.default: ttft: expected seconds",
        "g.yaml: slo.models.big: target must be a ratio between 0 and 1",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(("text", "words"), [
    ("prices: [1]", "prices: must be a mapping of model name to price"),
    ("slo: 3", "slo: must be a mapping with default and/or models"),
    ("effective_date: 2026-01-01", "effective_date: applies to the prices"),
])
def test_prices_and_slo_sections_of_the_wrong_shape(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("models: [{name: m, provider: local}]\n" + text, source="g.yaml")
    assert any(words in p for p in info.value.problems), info.value.problems
    assert all(p.startswith("g.yaml: ") for p in info.value.problems)


def test_the_budgets_example_in_the_docs_works_as_shown() -> None:
    import re

    doc = Path(__file__).resolve().parents[3] / "docs" / "gateway.md"
    found = re.search(r"<!-- gateway-budgets -->\n```yaml\n(.*?)```\n<!-- /gateway-budgets -->",
                      doc.read_text(), re.DOTALL)
    assert found is not None, "docs/gateway.md lost its gateway-budgets block"
    config = parse_config(found.group(1), source="gateway.yaml", environ={
        "OPENAI_API_KEY": "sk-up", "TEAM_A_KEY": "a", "BATCH_KEY": "b", "OPS_KEY": "o"})
    budgets = {k.alias: (k.budget_usd, k.budget_period) for k in config.keys}
    assert budgets == {"team-a": (25.0, "day"), "batch": (300.0, "month"),
                       "ops": (None, "day")}
    assert config.prices is not None and config.prices.effective_date == "2026-11-30"
    price = config.prices.lookup("gpt-4o-mini-2024-07-18")
    assert price is not None and price.cached_input == 0.075
    assert config.prices.lookup("claude-3-5-haiku") is not None  # the shipped table under it
    assert config.slo is not None
    llama, other = config.slo.objectives_for("llama"), config.slo.objectives_for("gpt-4o-mini")
    assert llama is not None and (llama.ttft, llama.e2e, llama.target) == (2.0, 10.0, 0.99)
    assert other is not None and (other.ttft, other.e2e) == (0.5, 10.0)
