"""The endpoint rule, the token estimate, what makes an event an error, and its spend."""

from __future__ import annotations

import math

import pytest

from tinyllm.store import derive_endpoint, estimate_tokens
from tinyllm.store.rules import classify, spend
from tinyllm.store.schema import BIN_NONE, bin_value, latency_bin


@pytest.mark.parametrize(("event_type", "endpoint"), [
    ("diffusion_generate", "generate"),
    ("diffusion_infill", "infill"),
    ("diffusion_generate_stream", "generate/stream"),
    ("diffusion_infill_stream", "infill/stream"),
    ("generate", "generate"),
    ("generate_stream", "generate/stream"),
    ("stream", "stream"),
    ("acme_chat_completion", "chat_completion"),
    ("acme_chat_completion_stream", "chat_completion/stream"),
])
def test_derive_endpoint(event_type: str, endpoint: str) -> None:
    assert derive_endpoint(event_type) == endpoint


def test_derive_endpoint_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="event_type"):
        derive_endpoint(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("abc", 1), ("abcd", 1), ("a" * 9, 2),
                                              ("a" * 100, 25)])
def test_estimate_tokens_is_the_seed_formula(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens == max(1, len(text) // 4)


def test_estimate_tokens_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="text"):
        estimate_tokens(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("metadata", "expected"), [
    (None, (None, False, 0)),
    ({}, (None, False, 0)),
    ({"success": True, "token_count": 25}, (None, False, 25)),
    ({"success": False}, (None, True, 0)),
    ({"error": "boom"}, (None, True, 0)),
    ({"error": None, "error_type": ""}, (None, False, 0)),
    ({"error_type": "timeout"}, (None, True, 0)),
    ({"endpoint": "generate/stream", "token_count": 4.0}, ("generate/stream", False, 4)),
    ({"endpoint": "", "token_count": -3}, (None, False, 0)),
    ({"token_count": True}, (None, False, 0)),
    ({"token_count": "12"}, (None, False, 0)),
    ({"token_count": float("inf")}, (None, False, 0)),
    ({"token_count": 2.5}, (None, False, 0)),
])
def test_classify(metadata: dict[str, object] | None, expected: tuple[object, ...]) -> None:
    assert classify(metadata) == expected


def test_latency_bins_are_monotonic_and_within_4_4_percent() -> None:
    previous = BIN_NONE
    value = 1e-6
    while value < 1e4:
        b = latency_bin(value)
        assert b >= previous
        assert abs(bin_value(b) / value - 1) <= 2 ** (1 / 16) - 1 + 1e-12
        previous = b
        value *= 1.013
    assert latency_bin(0.0) == BIN_NONE and bin_value(BIN_NONE) == 0.0


@pytest.mark.parametrize(("metadata", "expected"), [
    (None, (None, None)),
    ({}, (None, None)),
    ({"cost_usd": 0.0025}, (0.0025, None)),
    ({"cost_usd": 0.0}, (0.0, None)),  # priced at nothing (a local model): not unpriced
    ({"cost_usd": 3}, (3.0, None)),
    ({"cost_usd": None}, (None, None)),
    ({"cost_usd": -0.5}, (None, None)),
    ({"cost_usd": math.nan}, (None, None)),
    ({"cost_usd": math.inf}, (None, None)),
    ({"cost_usd": 2**1100}, (None, None)),
    ({"cost_usd": True}, (None, None)),
    ({"cost_usd": "0.1"}, (None, None)),
    ({"slo_met": True}, (None, True)),
    ({"slo_met": False, "cost_usd": 1e-7}, (1e-7, False)),
    ({"slo_met": 1}, (None, None)),
    ({"slo_met": None}, (None, None)),
])
def test_spend(metadata: dict[str, object] | None, expected: tuple[object, ...]) -> None:
    got = spend(metadata)
    assert got == expected
    assert got[0] is None or type(got[0]) is float
