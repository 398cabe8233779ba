"""Budgets per key: UTC periods, spend and refusals, the remaining-budget gauge; spend
shared through the real Redis (127.0.0.1:6379), and carried on without it; through the
gateway, over both APIs, with the official SDKs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import ollama
import openai
import pytest
import redis

from tests.support.fault_server import DONE, FaultServer, Reply, sse
from tests.support.servers import free_port
from tests.support.waiting import eventually
from tinyllm.accounting import configure_prices
from tinyllm.metrics import MetricsCollector
from tinyllm.pricing import ModelPrice, PriceTable
from tinyllm.serve.budgets import Budget, period_of, refusal
from tinyllm.serve.config import parse_config
from tinyllm.serve.limits import RedisLimits

from .conftest import gateway, sample
from .test_openai_api import MESSAGES, chunk

REDIS = "redis://127.0.0.1:6379/11"  # a database of its own; keys under a fresh prefix


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, text: str) -> None:
        self.now = ts(text)

    def __call__(self) -> float:
        return self.now

    def set(self, text: str) -> None:
        self.now = ts(text)


# -- periods ---------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "at", "name", "end"), [
    ("day", "2025-01-31T00:00:00", "2025-01-31", "2025-02-01T00:00:00"),
    ("day", "2025-01-31T23:59:59.999", "2025-01-31", "2025-02-01T00:00:00"),
    ("day", "2024-02-28T12:00:00", "2024-02-28", "2024-02-29T00:00:00"),  # leap year
    ("month", "2024-02-29T23:00:00", "2024-02", "2024-03-01T00:00:00"),
    ("month", "2025-12-31T23:59:59", "2025-12", "2026-01-01T00:00:00"),
    ("month", "2025-03-01T00:00:00", "2025-03", "2025-04-01T00:00:00"),
])
def test_periods_are_utc_calendar_days_and_months(
    period: str, at: str, name: str, end: str,
) -> None:
    assert period_of(period, ts(at)) == (name, ts(end))


def test_bad_arguments_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="period must be one of day, month, got 'week'"):
        period_of("week", 0.0)
    with pytest.raises(ValueError, match="usd must be a number > 0, got 0"):
        Budget("k", 0)
    with pytest.raises(ValueError, match="usd must be a number > 0, got True"):
        Budget("k", True)
    with pytest.raises(ValueError, match="period must be one of day, month"):
        Budget("k", 1.0, "year")


# -- spend, in this process ---------------------------------------------------------------


def test_a_key_is_refused_once_its_spend_reaches_the_budget(
    collector: MetricsCollector,
) -> None:
    clock = Clock("2025-06-10T12:00:00")
    budget = Budget("team-a", 1.0, clock=clock, collector=collector)
    v = sample(collector)

    async def scenario() -> list[bool]:
        seen = [await budget.exhausted()]
        await budget.add(0.6)
        seen.append(await budget.exhausted())
        await budget.add(None)  # an unpriced call adds nothing
        await budget.add(0.0)   # nor does a free one
        await budget.add(0.4)   # exactly the budget: reached
        seen.append(await budget.exhausted())
        return seen

    assert asyncio.run(scenario()) == [False, False, True]
    assert budget.spent == pytest.approx(1.0) and budget.remaining == 0.0
    assert v("tinyllm_gateway_key_budget_remaining_usd", key="team-a") == 0.0


def test_the_gauge_is_what_is_left_and_never_below_zero(collector: MetricsCollector) -> None:
    budget = Budget("team-a", 2.0, clock=Clock("2025-06-10T12:00:00"), collector=collector)
    v = sample(collector)
    asyncio.run(budget.refresh())
    assert v("tinyllm_gateway_key_budget_remaining_usd", key="team-a") == 2.0
    asyncio.run(budget.add(0.75))
    assert v("tinyllm_gateway_key_budget_remaining_usd", key="team-a") == 1.25
    asyncio.run(budget.add(5.0))  # a call in flight may overshoot: the gauge stops at 0
    assert v("tinyllm_gateway_key_budget_remaining_usd", key="team-a") == 0.0
    assert budget.spent == pytest.approx(5.75)


def test_a_new_utc_day_starts_from_zero() -> None:
    clock = Clock("2025-06-10T23:59:59")
    budget = Budget("k", 1.0, "day", clock=clock)
    asyncio.run(budget.add(1.5))
    assert asyncio.run(budget.exhausted())
    clock.set("2025-06-11T00:00:00")
    assert not asyncio.run(budget.exhausted())
    assert (budget.spent, budget.remaining) == (0.0, 1.0)
    asyncio.run(budget.add(0.25))  # counts in the day it ended in
    assert budget.spent == 0.25


def test_a_monthly_budget_holds_across_days_and_renews_on_the_first() -> None:
    clock = Clock("2025-01-01T00:00:00")
    budget = Budget("k", 10.0, "month", clock=clock)
    for day in ("2025-01-01", "2025-01-15", "2025-01-31"):
        clock.set(f"{day}T23:00:00")
        asyncio.run(budget.add(3.5))
    assert budget.spent == pytest.approx(10.5) and asyncio.run(budget.exhausted())
    assert budget.seconds_left() == 3600.0  # until 2025-02-01T00:00:00Z
    clock.set("2025-02-01T00:00:00")
    assert not asyncio.run(budget.exhausted()) and budget.remaining == 10.0


def test_the_refusal_is_openais_insufficient_quota() -> None:
    clock = Clock("2025-06-10T18:00:00")
    budget = Budget("team-a", 25, clock=clock)
    asyncio.run(budget.add(25.5))
    err = refusal(budget)
    assert err.status == 429
    assert json.loads(err.body()) == {"error": {
        "message": "key 'team-a' has used its budget of 25 USD for this day (UTC; 25.5 USD "
                   "spent); it renews at 2025-06-11T00:00:00Z",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    headers = dict(err.headers())
    assert headers[b"retry-after"] == b"21600"  # six hours to UTC midnight
    assert headers[b"x-should-retry"] == b"false"  # the OpenAI SDKs do not retry it


# -- spend shared through Redis ----------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own, removed afterwards."""
    name = f"tinyllm:test-budgets:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


def test_two_instances_share_one_spend_through_redis(prefix: str) -> None:
    clock = Clock("2025-06-10T12:00:00")

    async def scenario() -> tuple[list[Any], float]:
        one, two = RedisLimits(REDIS, prefix=prefix), RedisLimits(REDIS, prefix=prefix)
        a = Budget("k", 1.0, backend=one, name="digest:k", clock=clock)
        b = Budget("k", 1.0, backend=two, name="digest:k", clock=clock)
        try:
            seen: list[Any] = [await b.exhausted()]
            await a.add(0.6)
            seen += [await b.refresh(), await b.exhausted()]
            await b.add(0.4)  # the instance that did not spend first reaches the budget
            seen += [await a.exhausted(), a.spent]
            ttl = await one._client.ttl(f"{prefix}digest:k:spend:2025-06-10")
        finally:
            await one.close()
            await two.close()
        return seen, ttl

    seen, ttl = asyncio.run(scenario())
    assert seen[0] is False
    assert seen[1] == pytest.approx(0.6) and seen[2] is False
    assert seen[3] is True and seen[4] == pytest.approx(1.0)
    # The key outlives the period (12 h left) by a day, then goes.
    assert 12 * 3600 + 86400 - 5 <= ttl <= 12 * 3600 + 86400 + 5


class _Switch:
    """A Redis client that can be made to fail (as Redis down does)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if self.down and name != "aclose":
            raise redis.ConnectionError("Redis is down (test)")
        return getattr(self.client, name)


def test_redis_down_spend_carries_on_here_and_reaches_redis_when_it_is_back(
    prefix: str, default_collector: MetricsCollector, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock("2025-06-10T12:00:00")
    caplog.set_level(logging.WARNING, logger="tinyllm.serve")

    async def scenario() -> list[Any]:
        limits = RedisLimits(REDIS, prefix=prefix, retry_interval=0.0)
        switch = limits._client = _Switch(limits._client)
        budget = Budget("k", 1.0, backend=limits, name="digest:k", clock=clock)
        try:
            await budget.add(0.25)
            switch.down = True
            await budget.add(0.5)   # not shared: kept here
            seen: list[Any] = [budget.spent, await budget.exhausted()]
            await budget.add(0.5)   # this instance's own figure reaches the budget
            seen.append(await budget.exhausted())
            switch.down = False
            seen.append(await budget.refresh())  # shared 0.25 + 1.0 not sent yet
            await budget.add(0.125)  # sends what was kept with it
            seen.append(float(await switch.client.get(f"{prefix}digest:k:spend:2025-06-10")))
        finally:
            await limits.close()
        return seen

    spent, exhausted_down, reached_down, refreshed, shared = asyncio.run(scenario())
    assert spent == pytest.approx(0.75) and exhausted_down is False
    assert reached_down is True
    assert refreshed == pytest.approx(1.25)
    assert shared == pytest.approx(1.375)
    # Each call while it was down: two adds, two reads.
    assert sample(default_collector)("tinyllm_gateway_limit_backend_errors_total") == 4
    assert caplog.text.count("keeps its own limits and budgets' spend") == 1
    assert caplog.text.count("answers again") == 1


def test_redis_unreachable_from_the_start(
    default_collector: MetricsCollector, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock("2025-06-10T12:00:00")

    async def scenario() -> list[bool]:
        limits = RedisLimits(f"redis://127.0.0.1:{free_port()}/0", retry_interval=0.0)
        budget = Budget("k", 1.0, backend=limits, clock=clock)
        try:
            seen = [await budget.exhausted()]
            await budget.add(1.0)
            seen.append(await budget.exhausted())
        finally:
            await limits.close()
        return seen

    assert asyncio.run(scenario()) == [False, True]
    assert sample(default_collector)("tinyllm_gateway_limit_backend_errors_total") == 3
    assert caplog.text.count("keeps its own limits") == 1


# -- through the gateway -----------------------------------------------------------------

# The upstream's usage: 1000 input tokens (200 of them from its prompt cache), 10 output.
USAGE = {"prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
         "prompt_tokens_details": {"cached_tokens": 200}}
PRICE = ModelPrice(input=2.5, output=10.0, cached_input=1.25)
# By hand: ((1000 - 200) * 2.5 + 200 * 1.25 + 10 * 10) / 1e6
COST = (800 * 2.5 + 200 * 1.25 + 10 * 10) / 1e6  # 0.00235 USD


def whole() -> Reply:
    return Reply(body=json.dumps({
        "id": "x", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}], "usage": USAGE}).encode())


def streamed() -> Reply:
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up",
             "choices": [], "usage": USAGE}
    return Reply(body=sse(chunk("o"), chunk("k"), chunk(finish="stop"), usage, DONE),
                 content_type="text/event-stream")


@pytest.fixture
def priced() -> Iterator[None]:
    configure_prices(PriceTable({"m": PRICE}))
    yield
    configure_prices(None)


BUDGETED = """
models:
  - name: m
    provider: openai
    base_url: {url}/v1
    model: up
keys:
  - alias: capped
    key_sha256: '{capped}'
    budget_usd: 0.006
  - alias: free-spender
    key_sha256: '{free}'
"""


def test_spend_per_key_over_both_apis_and_the_budget_refusal(
    upstream: FaultServer, default_collector: MetricsCollector, priced: None,
) -> None:
    config = parse_config(BUDGETED.format(
        url=upstream.url, capped=hashlib.sha256(b"key-capped").hexdigest(),
        free=hashlib.sha256(b"key-free").hexdigest()))
    upstream.script(whole(), streamed(), streamed(), whole())
    v = sample(default_collector)
    with gateway(config) as url:
        assert v("tinyllm_gateway_key_budget_remaining_usd", key="capped") == 0.006
        with openai.OpenAI(base_url=f"{url}/v1", api_key="key-capped") as capped:
            capped.chat.completions.create(model="m", messages=MESSAGES)
            eventually(lambda: v("tinyllm_gateway_key_budget_remaining_usd",
                                 key="capped") == pytest.approx(0.006 - COST))
            assert "".join(c.choices[0].delta.content or "" for c in
                           capped.chat.completions.create(model="m", messages=MESSAGES,
                                                          stream=True) if c.choices) == "ok"
            eventually(lambda: v("tinyllm_gateway_key_budget_remaining_usd",
                                 key="capped") == pytest.approx(0.006 - 2 * COST))
            # The Ollama API, same key: 0.00705 spent, past the 0.006 (the check is made
            # as a call starts, so the call in flight may overshoot).
            answer = ollama.Client(host=url, headers={"Authorization": "Bearer key-capped"}
                                   ).chat(model="m", messages=MESSAGES, stream=False)
            assert answer.message.content == "ok"
            eventually(lambda: v("tinyllm_gateway_key_budget_remaining_usd",
                                 key="capped") == 0.0)
            with pytest.raises(openai.RateLimitError) as info:
                capped.chat.completions.create(model="m", messages=MESSAGES)
        assert info.value.code == "insufficient_quota"
        assert info.value.body["type"] == "insufficient_quota"  # type: ignore[index]
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=url, headers={"Authorization": "Bearer key-capped"}).chat(
                model="m", messages=MESSAGES, stream=False)
        assert refused.value.status_code == 429 and "budget" in refused.value.error
        raw = httpx.post(f"{url}/v1/chat/completions", headers={
            "Authorization": "Bearer key-capped"}, json={"model": "m", "messages": MESSAGES})
        assert raw.status_code == 429 and raw.headers["x-should-retry"] == "false"
        assert raw.json()["error"]["code"] == "insufficient_quota"
        assert raw.json()["error"]["param"] is None
        # Another key spends on; its spend is counted though it has no budget.
        with openai.OpenAI(base_url=f"{url}/v1", api_key="key-free") as other:
            other.chat.completions.create(model="m", messages=MESSAGES)
        eventually(lambda: v("tinyllm_gateway_key_cost_usd_total", key="free-spender") > 0)
    assert upstream.requests == 4  # the refused calls never reached it
    assert v("tinyllm_gateway_key_cost_usd_total", key="capped") == pytest.approx(3 * COST)
    assert v("tinyllm_gateway_key_cost_usd_total", key="free-spender") == pytest.approx(COST)
    assert v("tinyllm_cost_usd_total", model="m") == pytest.approx(4 * COST)
    assert v("tinyllm_gateway_key_rejections_total", key="capped", reason="budget") == 3
    # The SDK (2 retries by default) did not retry: one 429 for its one call.
    assert v("tinyllm_gateway_requests_total", route="/v1/chat/completions",
             status="429") == 2
    assert v("tinyllm_gateway_requests_total", route="/api/chat", status="429") == 1
    assert v("tinyllm_gateway_key_requests_total", key="capped") == 3


def test_the_gauge_shows_the_whole_budget_again_when_a_period_begins(
    collector: MetricsCollector,
) -> None:
    from tinyllm.serve.budgets import watch_periods

    started, midnight = time.monotonic(), ts("2025-06-11T00:00:00")

    def clock() -> float:  # 50 ms before UTC midnight, then running
        return midnight - 0.05 + (time.monotonic() - started)

    budget = Budget("k", 1.0, clock=clock, collector=collector)
    v = sample(collector)

    async def scenario() -> float:
        await budget.add(2.0)
        assert v("tinyllm_gateway_key_budget_remaining_usd", key="k") == 0.0
        watcher = asyncio.create_task(watch_periods([budget]))
        await asyncio.sleep(0.3)  # no call comes
        watcher.cancel()
        return v("tinyllm_gateway_key_budget_remaining_usd", key="k")

    assert asyncio.run(scenario()) == 1.0
    assert budget.spent == 0.0
