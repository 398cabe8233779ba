"""The process-wide policy, built on first use from ``TINYLLM_CAPTURE_CONTENT``, and the
module functions that use it."""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Iterable
from typing import Any

from tinyllm.redaction._policy import RedactionPolicy
from tinyllm.settings import ENV_CAPTURE_CONTENT

__all__ = [
    "configure_redaction", "get_redaction_policy", "redact", "redact_text", "reset_redaction",
]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_lock = threading.Lock()
_policy: RedactionPolicy | None = None


def _env_capture_content(strict: bool) -> bool:
    raw = os.environ.get(ENV_CAPTURE_CONTENT, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    message = (
        f"{ENV_CAPTURE_CONTENT}={raw!r} is not a boolean; use true/false (1/0, yes/no, on/off)"
    )
    if strict:
        raise ValueError(message)
    # Not at configuration time (first use on some hot path): do not break the host;
    # the safe reading of a garbled opt-in is "no".
    warnings.warn(message + "; content will not be captured", RuntimeWarning, stacklevel=3)
    return False


def get_redaction_policy() -> RedactionPolicy:
    """The process-wide policy (built on first use from ``TINYLLM_CAPTURE_CONTENT``).

    Example:
        >>> get_redaction_policy().redact({"api_key": "k"})
        {'api_key': '[REDACTED]'}
    """
    found = _policy
    if found is not None:
        return found
    return _make_default()


def _make_default() -> RedactionPolicy:
    global _policy
    with _lock:
        if _policy is None:
            _policy = RedactionPolicy(capture_content=_env_capture_content(strict=False))
        return _policy


def configure_redaction(
    extra_keys: Iterable[str] = (),
    extra_patterns: Iterable[str | re.Pattern[str]] = (),
    capture_content: bool | None = None,
) -> RedactionPolicy:
    """Replace the process-wide policy; returns the new one.

    ``capture_content=None`` means ``$TINYLLM_CAPTURE_CONTENT``, else False. Raises
    ValueError naming a pattern that does not compile, TypeError for a wrong type.

    Example:
        >>> policy = configure_redaction(extra_keys=["x-tenant-secret"], capture_content=False)
        >>> redact({"x_tenant_secret": "v"})
        {'x_tenant_secret': '[REDACTED]'}
        >>> _ = configure_redaction()  # back to the defaults
    """
    global _policy
    if capture_content is None:
        capture_content = _env_capture_content(strict=True)
    policy = RedactionPolicy(extra_keys, extra_patterns, capture_content)
    with _lock:
        _policy = policy
    return policy


def reset_redaction() -> None:
    """Forget the process-wide policy; the next use rebuilds it from the environment (tests)."""
    global _policy
    with _lock:
        _policy = None


def redact(value: Any) -> Any:
    """Redact ``value`` with the process-wide policy (see :meth:`RedactionPolicy.redact`).

    Example:
        >>> redact({"user": "ann", "password": "hunter2"})
        {'user': 'ann', 'password': '[REDACTED]'}
    """
    return get_redaction_policy().redact(value)


def redact_text(text: str) -> str:
    """Redact ``text`` with the process-wide policy (see :meth:`RedactionPolicy.redact_text`).

    Example:
        >>> redact_text("GET /cb?code=1&access_token=abc")
        'GET /cb?code=1&access_token=[REDACTED]'
    """
    return get_redaction_policy().redact_text(text)
