"""Model prices and the table they are looked up in.

A price is USD per million input, output and cached-input tokens, and/or USD per hour of
running (a self-hosted model: its hourly cost is spread over the requests it serves).
``PriceTable.lookup`` finds a model under the names it is really called by: an answer's
dated snapshot (``gpt-4o-mini-2024-07-18``), a provider prefix (``openai/gpt-4o``), an
Ollama tag (``llama3:latest``) or an alias (``claude-3-5-haiku-latest``).

Example:
    >>> table = parse_prices({"prices": {"m": {"input": 1.0, "output": 2.0}}}, source="p.yaml")
    >>> table.lookup("m-2025-01-31").token_cost(1_000_000, 500_000)
    2.0
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyllm._validation import unknown_keys
from tinyllm.errors import TinyLLMError

__all__ = ["COST_FILE_KEYS", "ModelPrice", "PriceError", "PriceTable", "parse_prices"]

_PER_MILLION = 1e-6
_PRICE_KEYS = ("cached_input", "input", "output", "per_hour", "source")
#: The sections of a cost file: prices (here) and SLOs (``tinyllm.slo``).
COST_FILE_KEYS = ("effective_date", "prices", "slo")
# A snapshot or tag: -2024-07-18 (OpenAI), -20241022 (Anthropic), -2411 (Mistral's
# year-month), -latest, @001 (Vertex), :latest (Ollama).
_DATE_SUFFIX = re.compile(
    r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-2[3-9](0[1-9]|1[0-2])|-latest|@[\w.-]+|:latest)$")
_LOOKUP_CACHE = 4096  # distinct names remembered per table (answers' snapshot names)


class PriceError(TinyLLMError, ValueError):
    """A price file tinyllm cannot use; ``problems`` has one line each.

    Example:
        >>> str(PriceError(["p.yaml: prices.m: input must be a number >= 0, got 'x'"]))
        "p.yaml: prices.m: input must be a number >= 0, got 'x'"
    """

    error_type = "bad_request"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens (``input``, ``output``, ``cached_input``: the part of the
    input the provider served from its prompt cache, default the input price) and USD
    per hour of running (``per_hour``, for self-hosted models).

    Example:
        >>> ModelPrice(input=0.15, output=0.60, cached_input=0.075).token_cost(
        ...     2_000, 1_000, cached_input_tokens=1_000)
        0.000825
    """

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    per_hour: float = 0.0
    source: str = field(default="", compare=False)

    def token_cost(self, input_tokens: int, output_tokens: int,
                   cached_input_tokens: int = 0) -> float:
        """The USD the tokens cost (``cached_input_tokens`` is part of ``input_tokens``)."""
        cached = min(cached_input_tokens, input_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = ((input_tokens - cached) * self.input + cached * cached_price
               + output_tokens * self.output) * _PER_MILLION
        return round(usd, 12)  # drop float noise: 0.15e-6 * 2000 is not 0.0003 exactly


class PriceTable:
    """Prices by model name, with the date they were taken from their sources.

    ``layered_over(base)`` is this table with ``base``'s other models underneath (a
    user's file over the shipped defaults: the user's entry for a model wins whole).
    """

    def __init__(self, prices: Mapping[str, ModelPrice], effective_date: str | None = None,
                 source: str = "") -> None:
        self.prices: dict[str, ModelPrice] = dict(prices)
        self.effective_date = effective_date
        self.source = source
        self._folded = {name.lower(): price for name, price in self.prices.items()}
        self._found: dict[str, ModelPrice | None] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.prices)

    def __repr__(self) -> str:
        return f"PriceTable({len(self.prices)} models, effective {self.effective_date})"

    def layered_over(self, base: PriceTable) -> PriceTable:
        """This table's prices over ``base``'s (this one wins for a model in both)."""
        return PriceTable({**base.prices, **self.prices},
                          self.effective_date or base.effective_date,
                          " over ".join(s for s in (self.source, base.source) if s))

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model`` or None (unpriced); remembered per name.

        Tried in order: the name as is (any case), without a provider prefix
        (``openai/``), without a snapshot or tag suffix (``-2024-07-18``, ``-20241022``,
        ``-2411``, ``-latest``, ``:latest``, ``@001``), without both.
        """
        found = self._found.get(model, _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        price = self._search(model)
        with self._lock:
            if len(self._found) < _LOOKUP_CACHE:
                self._found[model] = price
        return price

    def _search(self, model: str) -> ModelPrice | None:
        name = model.strip().lower()
        bare = name.rsplit("/", 1)[-1]
        for candidate in (name, bare, _DATE_SUFFIX.sub("", name), _DATE_SUFFIX.sub("", bare)):
            price = self._folded.get(candidate)
            if price is not None:
                return price
        return None


_MISSING = object()


def _number(entry: Mapping[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        problems.append(f"{where}: {key} must be a number >= 0 (USD), got {value!r}"[:200])
        return None
    return float(value)


def parse_prices(data: Mapping[str, Any], *, source: str = "<string>") -> PriceTable:
    """The price table in ``data`` (a cost file's mapping: ``prices``, optionally
    ``effective_date``; a ``slo`` section is left to the SLO reader). Every problem is
    reported at once in a ``PriceError``; nothing is half-read.
    """
    problems = unknown_keys(data, COST_FILE_KEYS, f"{source}: top level")
    effective = data.get("effective_date")
    if effective is not None:
        effective = str(effective)
    raw = data.get("prices")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PriceError([*problems, f"{source}: prices: must be a mapping of model name to "
                                     f"price, got {type(raw).__name__}"])
    prices: dict[str, ModelPrice] = {}
    for name, entry in raw.items():
        where = f"{source}: prices.{name}"
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{source}: prices: model names must be non-empty text, "
                            f"got {name!r}")
            continue
        if not isinstance(entry, dict) or not entry:
            problems.append(f"{where}: must be a mapping with input/output (USD per million "
                            f"tokens) and/or per_hour (USD), got {entry!r}"[:200])
            continue
        problems += unknown_keys(entry, _PRICE_KEYS, where)
        values = {k: _number(entry, k, where, problems)
                  for k in ("input", "output", "cached_input", "per_hour")}
        src = entry.get("source", "")
        if not isinstance(src, str):
            problems.append(f"{where}: source must be text (where the price came from)")
            src = ""
        if not any(k in entry for k in values):
            problems.append(f"{where}: give input and output (USD per million tokens) "
                            f"and/or per_hour (USD per hour of running)")
            continue
        if problems:
            continue  # reported above; nothing is half-read
        prices[name.strip()] = ModelPrice(
            values["input"] or 0.0, values["output"] or 0.0, values["cached_input"],
            values["per_hour"] or 0.0, src)
    if problems:
        raise PriceError(problems)
    return PriceTable(prices, effective, source)
