"""Errors as clients expect them: OpenAI's shape and the status its SDK maps to a class.

``{"error": {"message", "type", "param", "code"}}`` with 400 (bad request), 401 (no or
unknown key), 403 (model not allowed for the key), 404 (unknown model or path), 405,
413 (body too large), 429 (rate limited, ``Retry-After``), 431 (headers too large), 501
(not supported by the provider), 502 (the upstream failed), 503 (overloaded or circuit
open, ``Retry-After``), 504 (the upstream timed out); a key past its budget is a 429 of
type and code ``insufficient_quota``, as OpenAI answers an account out of credit.
Messages never echo the request's input back.

Example:
    >>> err = GatewayError(404, "model 'x' is not served here; available: gemma3-270m",
    ...                    code="model_not_found", param="model")
    >>> err.body()[:60]
    b'{"error":{"message":"model \\'x\\' is not served here; available'
"""

from __future__ import annotations

import orjson

from tinyllm.errors import TinyLLMError, classify_error
from tinyllm.redaction import redact_text

__all__ = ["GatewayError", "from_exception"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    501: "not_implemented_error",
    502: "upstream_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class GatewayError(TinyLLMError):
    """An answer the gateway gives instead of the model's; ``status`` is the HTTP status.

    ``retry_after`` (seconds) becomes a ``Retry-After`` header; ``headers`` are more
    headers for the answer. ``error_type`` (the lifecycle's classification) follows the
    status; ``kind`` (OpenAI's ``type``) too, unless given (``insufficient_quota`` is a
    429 whose type is its own).
    """

    def __init__(
        self, status: int, message: str, *, code: str | None = None,
        param: str | None = None, retry_after: float | None = None,
        error_type: str | None = None, kind: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        message = redact_text(message)  # an upstream's error text may quote the key we sent
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.error_type = error_type or _error_type(status)
        self.extra_headers = headers
        self._kind = kind

    @property
    def kind(self) -> str:
        """OpenAI's ``type``: the one given, else the status's."""
        if self._kind is not None:
            return self._kind
        return _TYPES.get(self.status, "api_error" if self.status >= 500 else
                          "invalid_request_error")

    def payload(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.payload())

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            out.append((b"retry-after", str(max(1, round(self.retry_after))).encode()))
        out.extend(self.extra_headers)
        return out


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 504:
        return "timeout"
    if status == 503:
        return "server_error"
    if status >= 500:
        return "server_error"
    return "bad_request"


def from_exception(exc: BaseException, what: str) -> GatewayError:
    """The client-facing error for a failure while serving ``what`` (a model name):
    a ``GatewayError`` as it is, else by ``classify_error``. Never the exception's text
    when it may hold the request (only classified backend messages are passed on)."""
    if isinstance(exc, GatewayError):
        return exc
    kind = classify_error(exc)
    retry_after = getattr(exc, "retry_after", None)
    status_code = getattr(exc, "status_code", None)
    message = redact_text(str(exc))[:500]  # redacted before cut: no half key is left
    if kind == "timeout":
        return GatewayError(504, f"{what}: the upstream did not answer in time: {message}",
                            code="upstream_timeout")
    if kind == "circuit_open":
        return GatewayError(503, f"{what}: the upstream is failing; the circuit breaker is "
                                 f"open: {message}", code="circuit_open",
                            retry_after=retry_after or 5.0)
    if kind == "rate_limited":
        return GatewayError(429, f"{what}: rate limited: {message}", code="rate_limited",
                            retry_after=retry_after or 1.0)
    if kind == "bad_request" and isinstance(status_code, int) and status_code in (400, 404,
                                                                                   413, 422):
        return GatewayError(status_code, f"{what}: the upstream refused the request: "
                                         f"{message}", code="upstream_rejected")
    if kind == "bad_request" and status_code is None:
        return GatewayError(400, f"{what}: {message}", code="invalid_request")
    if kind in ("server_error", "connection", "bad_request"):
        return GatewayError(502, f"{what}: the upstream failed: {message}",
                            code="upstream_error", error_type=kind)
    return GatewayError(502, f"{what}: the upstream failed ({kind})", code="upstream_error",
                        error_type=kind)
