"""What a model costs: the price table, a user's price file layered over the shipped one.

The shipped table (``default_prices.yaml``, beside this module) prices well-known hosted
models, each entry citing its source; ``load_prices(path)`` reads a user's file (YAML or
JSON) and layers it over the shipped one. The lifecycle computes each request's cost
from these once (``tinyllm.accounting``).

Example:
    >>> default_prices().lookup("gpt-4o-mini-2024-07-18").output
    0.6
"""

from __future__ import annotations

import functools
import os
from importlib import resources

from tinyllm._files import FileProblem, read_mapping
from tinyllm.pricing._table import ModelPrice, PriceError, PriceTable, parse_prices

__all__ = [
    "ModelPrice",
    "PriceError",
    "PriceTable",
    "default_prices",
    "load_prices",
    "parse_prices",
]


@functools.cache
def default_prices() -> PriceTable:
    """The shipped table of hosted models' prices (read once)."""
    path = resources.files("tinyllm.pricing").joinpath("default_prices.yaml")
    with resources.as_file(path) as real:
        return parse_prices(read_mapping(real, what="price file"), source="tinyllm defaults")


def load_prices(path: str | os.PathLike[str], *, layered: bool = True) -> PriceTable:
    """The prices in the file ``path`` (YAML or JSON: ``prices:`` model -> price), over
    the shipped table unless ``layered`` is False; ``PriceError`` lists every problem.
    """
    try:
        data = read_mapping(path, what="price file")
    except FileProblem as exc:
        raise PriceError([str(exc)]) from None
    table = parse_prices(data, source=os.fspath(path))
    return table.layered_over(default_prices()) if layered else table
