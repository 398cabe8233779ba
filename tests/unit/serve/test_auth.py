"""Client keys: identification by digest, model allow-lists, the per-minute bucket."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm.serve.auth import Key, Keys
from tinyllm.serve.config import KeySpec
from tinyllm.serve.errors import GatewayError
from tinyllm.serve.limits import MinuteBucket


def check(keys: Keys, header: bytes | None, model: str) -> Key:
    return asyncio.run(keys.check(header, model))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = Keys([KeySpec("team-a", digest("key-a"), ("small",), rpm=2),
             KeySpec("team-b", digest("key-b"))])


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_api_key"), (b"", "missing_api_key"), (b"Basic a2V5LWE=", "invalid_api_key"),
    (b"Bearer ", "invalid_api_key"), (b"Bearer key-c", "invalid_api_key"),
    (b"bearer key-A", "invalid_api_key"),
])
def test_no_key_or_an_unknown_one_is_401(header: bytes | None, code: str) -> None:
    with pytest.raises(GatewayError) as info:
        check(KEYS, header, "small")
    assert info.value.status == 401 and info.value.code == code
    assert "key-c" not in info.value.message and "a2V5" not in info.value.message


def test_a_known_key_by_its_alias_and_its_models() -> None:
    assert check(KEYS, b"Bearer key-b", "anything").alias == "team-b"
    assert check(KEYS, b"bearer  key-b ", "anything").alias == "team-b"
    with pytest.raises(GatewayError) as info:
        check(KEYS, b"Bearer key-a", "big")
    assert info.value.status == 403 and "may use: small" in info.value.message
    assert KEYS.may_use(b"Bearer key-a", "small") and not KEYS.may_use(b"Bearer key-a", "big")


def test_the_rate_is_per_key_and_answers_429_with_the_wait() -> None:
    keys = Keys([KeySpec("k", digest("k"), rpm=2)])
    check(keys, b"Bearer k", "m")
    check(keys, b"Bearer k", "m")
    with pytest.raises(GatewayError) as info:
        check(keys, b"Bearer k", "m")
    assert info.value.status == 429 and 0 < (info.value.retry_after or 0) <= 30
    assert dict(info.value.headers())[b"retry-after"]


def test_the_bucket_refills_continuously() -> None:
    now = [0.0]
    bucket = MinuteBucket(60, clock=lambda: now[0])
    assert all(bucket.take() == 0.0 for _ in range(60))
    assert bucket.take() == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 30.0  # half a minute: half the bucket back
    assert sum(bucket.take() == 0.0 for _ in range(40)) == 30


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 600), st.lists(st.floats(0, 5), max_size=50))
def test_a_bucket_never_grants_more_than_its_minute_allows(rpm: int, gaps: list[float]) -> None:
    now = [0.0]
    bucket = MinuteBucket(rpm, clock=lambda: now[0])
    granted = 0
    for gap in gaps:
        now[0] += gap
        granted += sum(bucket.take() == 0.0 for _ in range(3))
    # At most a full bucket at the start plus what the elapsed time refilled.
    assert granted <= rpm + now[0] * rpm / 60 + 1e-9


def test_tokens_are_charged_after_the_fact_and_the_debt_is_paid_by_the_refill() -> None:
    now = [0.0]
    bucket = MinuteBucket(600, clock=lambda: now[0])  # 10 tokens a second
    assert bucket.wait() == 0.0
    bucket.charge(900)  # one big answer overdraws
    assert bucket.wait() == pytest.approx(30.0, rel=1e-6)
    now[0] = 29.0
    assert bucket.wait() == pytest.approx(1.0, rel=1e-6)
    now[0] = 30.5
    assert bucket.wait() == 0.0


def test_a_key_over_its_tokens_per_minute_is_429() -> None:
    keys = Keys([KeySpec("k", digest("k"), tpm=100)])
    key = check(keys, b"Bearer k", "m")
    asyncio.run(key.charge_tokens(250))
    with pytest.raises(GatewayError) as info:
        check(keys, b"Bearer k", "m")
    assert info.value.status == 429 and "tokens per minute" in info.value.message
    assert 60 <= (info.value.retry_after or 0) <= 91
