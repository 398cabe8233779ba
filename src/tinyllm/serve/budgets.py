"""Budgets per key: the USD a key may spend per UTC day or month.

A key with ``budget_usd`` whose spend in the current period has reached its budget is
refused before its call starts: HTTP 429 of type and code ``insufficient_quota`` (what
OpenAI answers an account out of credit), counted in
``tinyllm_gateway_key_rejections_total{reason="budget"}``. Each call's cost (the
lifecycle's ``request.cost_usd``, priced as it ended) is added to the spend when the
call is done. The check is made only when a call starts, so calls already in flight
may take a key past its budget by their own cost.

Periods are UTC calendar days (``day``, the default) or months (``month``); a call's
cost counts in the period in which it ended. ``tinyllm_gateway_key_budget_remaining_usd``
is ``max(budget - spend, 0)`` as this instance last knew it: set at start-up, at every
check and every call's end, and when a period begins.

With ``--redis-url`` the spend lives in Redis (``INCRBYFLOAT`` on one key per key
alias and period, expiring a day after the period ends), so every instance enforces
one budget. Redis down or slow is handled as the limits handle it
(``tinyllm.serve.limits``): the instance carries on with what it knows (the last
shared figure plus its own spend since), counts the failure in
``tinyllm_gateway_limit_backend_errors_total``, logs once, and adds what it spent
meanwhile to the shared figure once Redis answers again.

Example:
    >>> import asyncio
    >>> budget = Budget("team-a", 1.0, "day", clock=lambda: 0.0)   # no Redis: in-process
    >>> asyncio.run(budget.add(0.75)); budget.remaining
    0.25
    >>> asyncio.run(budget.exhausted())
    False
    >>> asyncio.run(budget.add(0.5)); asyncio.run(budget.exhausted())
    True
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tinyllm.metrics.collector import get_metrics_collector
from tinyllm.serve.errors import GatewayError

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector
    from tinyllm.serve.limits import RedisLimits

__all__ = ["PERIODS", "Budget", "period_of", "refusal", "watch_periods"]

#: The periods a budget may have: UTC calendar days and months.
PERIODS = ("day", "month")
# A period's spend is kept in Redis this long after the period ends (instances whose
# clocks lag a little still find it).
_EXPIRY_MARGIN = 86400.0


def period_of(period: str, now: float) -> tuple[str, float]:
    """The UTC ``period`` (``day`` or ``month``) holding ``now`` (epoch seconds): its
    name and the epoch second it ends.

    Example:
        >>> period_of("day", 0.0)
        ('1970-01-01', 86400.0)
        >>> period_of("month", 86400.0 * 31 - 1)
        ('1970-01', 2678400.0)
    """
    t = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = datetime(t.year, t.month, t.day, tzinfo=UTC)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    if period == "month":
        end = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
        return f"{t.year:04d}-{t.month:02d}", end.timestamp()
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")


class Budget:
    """One key's budget: ``usd`` per UTC ``period``, its spend kept in ``backend``
    (Redis, shared) when given, else in this process.

    ``name`` is the stem of its Redis key (default: ``alias``); ``collector`` is where
    the remaining-budget gauge is set (default: the process-wide collector, resolved
    when first set). Must not be shared across event loops (its Redis client is not).
    """

    __slots__ = ("_backend", "_clock", "_collector", "_end", "_id", "_name",
                 "_seen", "_unsent", "alias", "period", "usd")

    def __init__(
        self, alias: str, usd: float, period: str = "day", *,
        backend: RedisLimits | None = None, name: str | None = None,
        collector: MetricsCollector | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(usd, bool) or not isinstance(usd, int | float) or not (
                math.isfinite(usd) and usd > 0):
            raise ValueError(f"usd must be a number > 0, got {usd!r}")
        if period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        self.alias = alias
        self.usd = float(usd)
        self.period = period
        self._backend = backend
        self._name = name or alias
        self._collector = collector
        self._clock = clock
        self._id, self._end = period_of(period, clock())
        self._seen = 0.0    # the period's spend as last known (shared, or this process's)
        self._unsent = 0.0  # spent here while Redis failed: not in the shared figure yet

    @property
    def spent(self) -> float:
        """The period's spend in USD, as this instance knows it."""
        return self._seen + self._unsent

    @property
    def remaining(self) -> float:
        """``max(usd - spent, 0)``."""
        return max(round(self.usd - self.spent, 12), 0.0)

    @property
    def renews_at(self) -> float:
        """The epoch second the current period ends (and the spend starts from 0)."""
        return self._end

    def seconds_left(self) -> float:
        """Seconds until the current period ends."""
        return max(self._end - self._clock(), 0.0)

    def _roll(self) -> str:
        now = self._clock()
        if now >= self._end:
            # A new period: what was unsent belonged to the old one, and stays there.
            self._id, self._end = period_of(self.period, now)
            self._seen = self._unsent = 0.0
        return self._id

    def _key(self, period_id: str) -> str:
        return f"{self._name}:spend:{period_id}"

    async def refresh(self) -> float:
        """The period's spend, read from Redis when there is one; sets the gauge."""
        period_id = self._roll()
        backend = self._backend
        if backend is not None:
            shared = await backend.read_amount(self._key(period_id))
            if shared is not None and period_id == self._id:
                self._seen = shared
        self._show()
        return self.spent

    async def exhausted(self) -> bool:
        """Whether the period's spend has reached the budget (checked as a call starts)."""
        return await self.refresh() >= self.usd

    async def add(self, usd: float | None) -> None:
        """Add a finished call's cost (None or 0: nothing to add) to the period's spend;
        sets the gauge."""
        period_id = self._roll()
        backend = self._backend
        if usd:
            if backend is None:
                self._seen += usd
            else:
                # Taken out before the await: two calls ending at once must not both
                # send what was spent while Redis was down.
                carry, self._unsent = usd + self._unsent, 0.0
                total = await backend.add_amount(self._key(period_id), carry,
                                                 self.seconds_left() + _EXPIRY_MARGIN)
                if period_id != self._id:
                    return  # the period ended meanwhile; the cost stays in the old one
                if total is None:
                    self._unsent += carry
                else:
                    self._seen = total
        self._show()

    def _show(self) -> None:
        collector = self._collector
        if collector is None:
            collector = self._collector = get_metrics_collector()
        collector.set_gateway_key_budget_remaining(self.alias, self.remaining)


def refusal(budget: Budget) -> GatewayError:
    """The 429 a call gets when its key's budget is spent: OpenAI's
    ``insufficient_quota`` (type and code), ``Retry-After`` the seconds until the period
    ends, and ``x-should-retry: false`` (the OpenAI SDKs then do not retry it).

    Example:
        >>> err = refusal(Budget("team-a", 5, clock=lambda: 43200.0))
        >>> err.status, err.kind, err.code, err.retry_after
        (429, 'insufficient_quota', 'insufficient_quota', 43200.0)
    """
    renews = datetime.fromtimestamp(budget.renews_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return GatewayError(
        429, f"key {budget.alias!r} has used its budget of {budget.usd:g} USD for this "
             f"{budget.period} (UTC; {budget.spent:.6g} USD spent); it renews at {renews}",
        code="insufficient_quota", kind="insufficient_quota",
        retry_after=budget.seconds_left(), headers=((b"x-should-retry", b"false"),))


async def watch_periods(budgets: Sequence[Budget]) -> None:
    """Refresh every budget as its period ends, so the gauge shows the new period's
    remaining budget without waiting for a call (runs until cancelled)."""
    if not budgets:
        return
    while True:
        await asyncio.sleep(min(b.seconds_left() for b in budgets) + 0.001)
        for budget in budgets:
            if budget.seconds_left() == 0.0:
                await budget.refresh()
