"""``RequestLogger``: one line per HTTP request and response, headers and body redacted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from structlog.typing import FilteringBoundLogger

from tinyllm._validation import check_amount
from tinyllm.logging._config import get_logger
from tinyllm.redaction import get_redaction_policy

#: Longer string bodies are cut (after redaction, so a secret is never cut in half).
MAX_BODY_CHARS = 4096

Headers = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value


def _headers(headers: Headers | None) -> dict[str, Any] | None:
    if headers is None:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, Any] = {}
    try:
        for name, value in pairs:
            name, value = str(_text(name)), _text(value)
            # Repeated headers (Set-Cookie, Via) are joined as HTTP allows.
            out[name] = f"{out[name]}, {value}" if name in out else value
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"headers must be a mapping or an iterable of (name, value) pairs, got {headers!r}"
        ) from exc
    return out


def _body(body: Any) -> Any:
    body = _text(body)
    if not isinstance(body, str):
        return body  # dicts and lists: the chain redacts them by key
    stripped = body.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(body)  # structured, so keys like api_key are recognised
        except ValueError:
            pass
    text = get_redaction_policy().redact_text(body)
    if len(text) > MAX_BODY_CHARS:
        return f"{text[:MAX_BODY_CHARS]}...[truncated {len(text) - MAX_BODY_CHARS} chars]"
    return text


class RequestLogger:
    """Logs HTTP requests and responses with secrets and prompt text left out.

    Headers may be a mapping or ``(name, value)`` pairs; a body may be a dict/list, or a
    str/bytes (parsed when it is JSON). Everything goes through the redaction policy:
    ``Authorization`` and ``api_key`` values become ``[REDACTED]``, ``prompt`` and
    ``messages`` become ``[NOT CAPTURED: N chars]`` unless content capture is on.
    Responses log at ``info``, ``warning`` for 4xx, ``error`` for 5xx.

    Example:
        >>> req_logger = RequestLogger()
        >>> req_logger.log_request(
        ...     request_id="req-123", method="POST", path="/api/generate",
        ...     headers={"Authorization": "Bearer sk-abc123"},
        ...     body={"prompt": "Hello", "api_key": "secret"},
        ... )
    """

    def __init__(self, logger: FilteringBoundLogger | None = None) -> None:
        self._log = logger if logger is not None else get_logger("tinyllm.http")

    def log_request(
        self,
        request_id: str,
        method: str,
        path: str,
        headers: Headers | None = None,
        body: Any = None,
    ) -> None:
        """Log one incoming or outgoing request (event ``http_request``)."""
        fields: dict[str, Any] = {"request_id": request_id, "method": method, "path": path}
        if headers is not None:
            fields["headers"] = _headers(headers)
        if body is not None:
            fields["body"] = _body(body)
        self._log.info("http_request", **fields)

    def log_response(
        self,
        request_id: str,
        status_code: int,
        duration_ms: float | None = None,
        headers: Headers | None = None,
        body: Any = None,
    ) -> None:
        """Log the response to ``request_id`` (event ``http_response``)."""
        if isinstance(status_code, bool) or not isinstance(status_code, int):
            raise TypeError(f"status_code must be an int (100-599), got {status_code!r}")
        if not 100 <= status_code <= 599:
            raise ValueError(f"status_code must be between 100 and 599, got {status_code!r}")
        fields: dict[str, Any] = {"request_id": request_id, "status_code": status_code}
        if duration_ms is not None:
            check_amount("duration_ms", duration_ms)
            fields["duration_ms"] = duration_ms
        if headers is not None:
            fields["headers"] = _headers(headers)
        if body is not None:
            fields["body"] = _body(body)
        if status_code >= 500:
            self._log.error("http_response", **fields)
        elif status_code >= 400:
            self._log.warning("http_response", **fields)
        else:
            self._log.info("http_response", **fields)


_request_logger: RequestLogger | None = None
_lock = threading.Lock()


def get_request_logger() -> RequestLogger:
    """The process-wide :class:`RequestLogger` (logger name ``tinyllm.http``).

    Example:
        >>> get_request_logger() is get_request_logger()
        True
    """
    global _request_logger
    found = _request_logger
    if found is None:
        with _lock:
            if _request_logger is None:
                _request_logger = RequestLogger()
            found = _request_logger
    return found
