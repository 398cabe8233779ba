"""The price table: the shipped defaults, a user's file over them, lookups by real names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyllm.pricing import ModelPrice, PriceError, PriceTable, default_prices, load_prices
from tinyllm.pricing import parse_prices as parse


def test_token_cost_is_per_million_with_cached_input_priced_apart() -> None:
    price = ModelPrice(input=0.15, output=0.60, cached_input=0.075)
    # 800 uncached at 0.15, 200 cached at 0.075, 10 output at 0.60, per million.
    assert price.token_cost(1000, 10, cached_input_tokens=200) == pytest.approx(
        (800 * 0.15 + 200 * 0.075 + 10 * 0.60) / 1e6, abs=1e-15)
    # No cached price: cached tokens cost the input price.
    assert ModelPrice(input=1.0, output=2.0).token_cost(1000, 0, 400) == pytest.approx(0.001)
    # A cached count above the input count (a confused upstream) is capped.
    assert ModelPrice(input=1.0, cached_input=0.0).token_cost(10, 0, 50) == 0.0


def test_the_shipped_table_cites_each_price_and_has_its_date() -> None:
    table = default_prices()
    assert table.effective_date and len(table) >= 30
    for name, price in table.prices.items():
        assert price.source.startswith("https://"), name
        assert price.input > 0, name
    for name in ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini",
                 "claude-3-5-haiku", "claude-sonnet-4", "gemini-2.0-flash", "mistral-small"):
        assert table.lookup(name) is not None, name
    mini = table.lookup("gpt-4o-mini")
    assert (mini.input, mini.output, mini.cached_input) == (0.15, 0.60, 0.075)


@pytest.mark.parametrize(("asked", "priced_as"), [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),     # the snapshot an answer names
    ("openai/gpt-4o", "gpt-4o"),                    # a provider prefix
    ("GPT-4o-Mini", "gpt-4o-mini"),                 # any case
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("mistral-small-2503", "mistral-small"),        # Mistral's year-month
    ("anthropic/claude-sonnet-4-20250514", "claude-sonnet-4"),
])
def test_lookup_finds_a_model_under_the_names_it_is_called_by(asked: str, priced_as: str) -> None:
    table = default_prices()
    assert table.lookup(asked) is table.prices[priced_as]


def test_lookup_never_guesses_an_unknown_model() -> None:
    table = default_prices()
    for name in ("gpt-4o-mini-tts-2048", "my-finetune", "llama3:8b", "gpt-4o-minix"):
        assert table.lookup(name) is None, name


def test_ollama_tags_are_stripped() -> None:
    table = parse({"prices": {"llama3": {"per_hour": 1.0}}})
    assert table.lookup("llama3:latest") is table.prices["llama3"]


def test_a_users_file_layers_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("effective_date: 2026-11-30\nprices:\n"
                    "  gpt-4o-mini: {input: 0.2, output: 0.8}\n"
                    "  my-llama: {per_hour: 2.5, source: our invoice}\n")
    table = load_prices(path)
    assert table.lookup("gpt-4o-mini") == ModelPrice(input=0.2, output=0.8)  # wins whole
    assert table.lookup("my-llama").per_hour == 2.5
    assert table.lookup("gpt-4o") == default_prices().lookup("gpt-4o")  # still there
    assert table.effective_date == "2026-11-30"
    alone = load_prices(path, layered=False)
    assert alone.lookup("gpt-4o") is None and len(alone) == 2


def test_json_files_are_read_too(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": {"m": {"input": 1, "output": 3}}}))
    assert load_prices(path).lookup("m").output == 3.0


def test_every_problem_is_reported_at_once_and_nothing_is_half_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("currency: EUR\nprices:\n"
                    "  a: {input: -1}\n"
                    "  b: {inputs: 2}\n"
                    "  c: 0.5\n"
                    "  d: {input: .nan}\n"
                    "  e: {output: true}\n"
                    "  ok: {input: 1}\n")
    with pytest.raises(PriceError) as caught:
        load_prices(path)
    problems = caught.value.problems
    assert problems == [
        f"{path}: top level: unknown key 'currency' (valid: effective_date, prices, slo)",
        f"{path}: prices.a: input must be a number >= 0 (USD), got -1",
        f"{path}: prices.b: unknown key 'inputs' (valid: cached_input, input, output, "
        "per_hour, source)",
        f"{path}: prices.b: give input and output (USD per million tokens) and/or per_hour "
        "(USD per hour of running)",
        f"{path}: prices.c: must be a mapping with input/output (USD per million tokens) and/or "
        "per_hour (USD), got 0.5",
        f"{path}: prices.d: input must be a number >= 0 (USD), got nan",
        f"{path}: prices.e: output must be a number >= 0 (USD), got True",
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n- b\n", "a price file must be a mapping at the top level, got list"),
    ("prices: [1]\n", "prices: must be a mapping of model name to price, got list"),
    ("prices: {a: {input: 1}\n", "not valid YAML or JSON"),
])
def test_malformed_files_name_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PriceError, match=r"p\.yaml") as caught:
        load_prices(path)
    assert message in str(caught.value)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(PriceError, match=r"/nonexistent/p.yaml: no such file"):
        load_prices("/nonexistent/p.yaml")


def test_repr_and_layering_keep_sources() -> None:
    user = PriceTable({"m": ModelPrice(1.0)}, source="mine.yaml")
    layered = user.layered_over(default_prices())
    assert layered.source == "mine.yaml over tinyllm defaults"
    assert "effective" in repr(layered)
