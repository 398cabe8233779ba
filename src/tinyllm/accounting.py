"""What each request cost and whether it was good enough: computed once, as it ends.

The lifecycle hands every finished request to its model's ``ModelAccounting``
(``settle``), which prices it from the process's price table and judges it against the
process's SLO configuration, then records both: ``tinyllm_cost_usd_total`` (or
``tinyllm_unpriced_requests_total``), ``tinyllm_slo_requests_total``, the goodput
gauges. The request keeps the figures (``cost_usd``, ``slo``) for the sinks that run
after it: the span, the log line, the store row, the gateway's per-key spend.

The process-wide configuration comes from ``$TINYLLM_PRICES`` and ``$TINYLLM_SLO`` (each
a cost file, YAML or JSON, possibly the same one), read on first use, or from
``configure_prices`` / ``configure_slo`` (the CLI's ``--prices`` / ``--slo``). SLO
thresholds become histogram bucket boundaries when the metric families are built, so
configure the SLO before the first request (the environment always is).

Example:
    >>> from tinyllm.pricing import PriceTable, ModelPrice
    >>> from tinyllm.slo import SLOConfig, Objectives
    >>> previous = configure_prices(PriceTable({"m": ModelPrice(input=1.0, output=4.0)}))
    >>> get_prices().lookup("m").output
    4.0
    >>> _ = configure_prices(None)  # back to the environment / the shipped table
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tinyllm._trailing import TrailingMinute
from tinyllm.pricing import ModelPrice, PriceError, PriceTable, default_prices, load_prices
from tinyllm.settings import ENV_PRICES, ENV_SLO
from tinyllm.slo import SLOConfig, SLOError, load_slo

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request
    from tinyllm.metrics.collector import MetricsCollector

__all__ = [
    "LOCAL_PROVIDERS",
    "ModelAccounting",
    "bucket_boundaries",
    "configure_prices",
    "configure_slo",
    "generation",
    "get_prices",
    "get_slo",
]

log = logging.getLogger("tinyllm.accounting")
T = TypeVar("T")

#: Providers that run on the user's own machine: their models cost 0 unless priced
#: (give a ``per_hour`` price to count what running them costs).
LOCAL_PROVIDERS = frozenset({"local", "ollama"})

_lock = threading.Lock()
# Bumped by every configure_*: lifecycles re-resolve a model's accounting when it moves.
_generation = 0


def generation() -> int:
    """How many times prices or SLOs were (re)configured in this process."""
    return _generation


class _Setting(Generic[T]):
    """One process-wide setting: what ``set`` gave, else the file ``$env`` names (read
    once, on first use), else ``default()``."""

    def __init__(self, env: str, load: Callable[[str], T], default: Callable[[], T]) -> None:
        self.env, self._load, self._default = env, load, default
        self._value: T | None = None

    def get(self) -> T:
        found = self._value
        if found is None:
            with _lock:
                if self._value is None:
                    self._value = self._from_env()
                found = self._value
        return found

    def _from_env(self) -> T:
        path = os.environ.get(self.env, "").strip()
        if path:
            try:
                return self._load(path)
            except (PriceError, SLOError) as exc:
                # A library cannot stop its host over a bad file: say so once, carry on
                # without it.
                log.error("%s=%s is not used: %s", self.env, path, exc)
        return self._default()

    def set(self, value: T | None) -> T | None:
        """Use ``value`` from now on (None: the environment again); the one before."""
        global _generation
        with _lock:
            previous, self._value = self._value, value
            _generation += 1
        return previous


_PRICES: _Setting[PriceTable] = _Setting(ENV_PRICES, load_prices, default_prices)
_SLO: _Setting[SLOConfig] = _Setting(ENV_SLO, load_slo, SLOConfig)


def get_prices() -> PriceTable:
    """The process's price table: ``configure_prices``'s, else ``$TINYLLM_PRICES`` over
    the shipped table, else the shipped table."""
    return _PRICES.get()


def get_slo() -> SLOConfig:
    """The process's SLO configuration: ``configure_slo``'s, else ``$TINYLLM_SLO``'s,
    else none (no objectives)."""
    return _SLO.get()


def configure_prices(prices: PriceTable | str | os.PathLike[str] | None) -> PriceTable | None:
    """Use ``prices`` (a table, or a price file layered over the shipped table) from now
    on; None goes back to the environment. Returns the table in force before.

    Raises ``PriceError`` (listing every problem) for a bad file; nothing changes then.
    """
    return _PRICES.set(load_prices(prices) if isinstance(prices, str | os.PathLike) else prices)


def configure_slo(slo: SLOConfig | str | os.PathLike[str] | None) -> SLOConfig | None:
    """Hold requests to ``slo`` (a configuration, or a cost file's ``slo:`` section) from
    now on; None goes back to the environment. Returns the configuration before.

    Thresholds are bucket boundaries only of metric families built afterwards: one that
    arrives after the first request is logged as a warning (the met/missed counters
    still count it exactly). Raises ``SLOError`` for a bad file; nothing changes then.
    """
    config = load_slo(slo) if isinstance(slo, str | os.PathLike) else slo
    previous = _SLO.set(config)
    if config is not None:
        _warn_late_boundaries(config)
    return previous


def bucket_boundaries() -> dict[str, tuple[float, ...]]:
    """Histogram family -> the SLO thresholds its buckets must include (the metric
    families call this as they are built)."""
    found = get_slo().boundaries()
    with _lock:
        for family, limits in found.items():
            _handed_out.setdefault(family, set()).update(limits)
        _families_built[0] = True
    return found


# What bucket_boundaries() has handed to families already built: a threshold outside
# these and the catalog's own buckets came too late to be a boundary.
_handed_out: dict[str, set[float]] = {}
_families_built = [False]


def _warn_late_boundaries(config: SLOConfig) -> None:
    if not _families_built[0]:
        return
    # Deferred: the catalog's package (tinyllm.metrics) imports the lifecycle, which
    # imports this module.
    from tinyllm.metrics.catalog import CATALOG

    for family, limits in config.boundaries().items():
        have = _handed_out.get(family, set()) | set(CATALOG[family].buckets or ())
        missing = [v for v in limits if v not in have]
        if missing:
            log.warning("SLO thresholds %s are not bucket boundaries of %s (its families were "
                        "built before the SLO was configured: set $%s or --slo before the "
                        "first request); met/missed are still counted exactly",
                        missing, family, ENV_SLO)


# -- per model ---------------------------------------------------------------------------


class _HourlyMeter:
    """A self-hosted model's running cost, charged to the requests it serves: each
    request ending pays for the time since the previous one ended (the first, since it
    started), so the charges add up to ``per_hour`` times the hours it served."""

    __slots__ = ("_last", "_lock", "per_second")

    def __init__(self, per_hour: float) -> None:
        self.per_second = per_hour / 3600.0
        self._last: float | None = None
        self._lock = threading.Lock()

    def charge(self, started: float, now: float) -> float:
        with self._lock:
            last = started if self._last is None else self._last
            self._last = max(now, last)
        return max(now - last, 0.0) * self.per_second


class ModelAccounting:
    """One model's price, objectives and the metric children they record into.

    Resolved once per (collector, model, configuration generation); ``settle`` is the
    per-request path: a few multiplications and counter increments.
    """

    __slots__ = (
        "_good_requests",
        "_good_tokens",
        "_goodput",
        "_goodput_tokens",
        "_meters",
        "_outcomes",
        "_prices",
        "collector",
        "cost",
        "generation",
        "model",
        "objectives",
        "price",
        "unpriced",
    )

    def __init__(self, collector: MetricsCollector, model: str) -> None:
        self.generation = _generation
        self.collector = collector
        self.model = model
        self._prices = get_prices()
        self.price: ModelPrice | None = self._prices.lookup(model)
        self.cost = collector._child("cost_usd_total", (model,))
        self.unpriced: Any = None  # resolved when first needed: most models are priced
        self._meters: dict[int, _HourlyMeter] = {}
        self.objectives = get_slo().objectives_for(model)
        self._outcomes: dict[tuple[str, bool], Any] = {}
        if self.objectives is not None:
            for name, limit in self.objectives.thresholds.items():
                collector._child("slo_objective_seconds", (model, name)).set(limit)
            collector._child("slo_target_ratio", (model,)).set(self.objectives.target)
            for name in (*self.objectives.thresholds, "all"):
                for met in (True, False):
                    key = (model, name, "met" if met else "missed")
                    self._outcomes[name, met] = collector._child("slo_requests_total", key)
            self._goodput = collector._child("goodput_requests_per_second", (model,))
            self._goodput_tokens = collector._child("goodput_tokens_per_second", (model,))
            self._good_requests, self._good_tokens = TrailingMinute(), TrailingMinute()

    def settle(self, request: Request, tpot: float | None, now: float) -> None:
        """Price and judge ``request`` (ended at ``now``), record both on it and in the
        metrics."""
        price = self.price
        answered = request.response_model
        if answered is not None and answered != self.model:
            price = self._prices.lookup(answered) or price
        if price is not None:
            usd = price.token_cost(request.input_tokens, request.output_tokens,
                                   request.cached_input_tokens)
            if price.per_hour:
                usd += self._meter(price).charge(request.start_time, now)
            request.cost_usd = usd
            if usd:
                self.cost.inc(usd)
        elif request.provider in LOCAL_PROVIDERS:
            request.cost_usd = 0.0
        else:
            unpriced = self.unpriced
            if unpriced is None:
                unpriced = self.unpriced = self.collector._child(
                    "unpriced_requests_total", (self.model,))
            unpriced.inc()
        objectives = self.objectives
        if objectives is None:
            return
        outcome = objectives.judge(request.status or "error", ttft=request.ttft, tpot=tpot,
                                   e2e=request.duration)
        if not outcome:
            return
        request.slo = outcome
        children = self._outcomes
        for name, met in outcome.items():
            children[name, met].inc()
        good = outcome["all"]
        self._goodput.set(self._good_requests.add(1 if good else 0, now) / 60.0)
        self._goodput_tokens.set(
            self._good_tokens.add(request.output_tokens if good else 0, now) / 60.0)

    def _meter(self, price: ModelPrice) -> _HourlyMeter:
        key = id(price)
        found = self._meters.get(key)
        if found is None:
            with _lock:
                found = _METERS.setdefault((self.model, price.per_hour),
                                           _HourlyMeter(price.per_hour))
            self._meters[key] = found
        return found


# One meter per (model, hourly price) in the process, shared by every collector and
# request type, so the running time is charged once.
_METERS: dict[tuple[str, float], _HourlyMeter] = {}
