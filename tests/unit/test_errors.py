"""classify_error: one closed vocabulary for every error label."""

from __future__ import annotations

import asyncio

import pytest

from tinyllm.errors import ERROR_TYPES, ModelError, classify_error


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class HTTPStatusError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.response = _Response(code)


class ConnectError(Exception):
    """Named like httpx's."""


class ReadTimeout(Exception):
    """Named like httpx's."""


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), "oom"),
        (RuntimeError("CUDA out of memory. Tried to allocate"), "oom"),
        (RuntimeError("CUDA error: an illegal memory access"), "cuda"),
        (TimeoutError(), "timeout"),
        (ReadTimeout("x"), "timeout"),
        (asyncio.CancelledError(), "cancelled"),
        (ConnectionRefusedError(), "connection"),
        (ConnectError("x"), "connection"),
        (HTTPStatusError(429), "rate_limited"),
        (HTTPStatusError(503), "server_error"),
        (HTTPStatusError(400), "bad_request"),
        (ModelError("x", error_type="rate_limited"), "rate_limited"),
        (KeyError("x"), "unknown"),
    ],
)
def test_classification(exc: BaseException, expected: str) -> None:
    assert classify_error(exc) == expected
    assert expected in ERROR_TYPES


def test_broken_str_does_not_break_classification() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert classify_error(Weird()) == "unknown"


def test_model_error_rejects_unknown_types() -> None:
    with pytest.raises(ValueError, match="valid: oom"):
        ModelError("x", error_type="mystery")
