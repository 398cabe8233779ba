"""What this process already observes, so that a request is counted once.

Two ways a call can be observed twice in one process: SDK instrumentation inside a
block that already opened a lifecycle request (``with lifecycle.start(...)``,
``InferenceContext``, ``track_inference_request``), and an instrumented SDK calling a
gateway (``tinyllm serve``) that runs in the same process. The lifecycle marks the
first (``open_request``); the gateway registers the addresses it serves (the second).

Example:
    >>> observe_endpoint("127.0.0.1", 8080)
    >>> observed_endpoint("http://127.0.0.1:8080/v1"), observed_endpoint("http://127.0.0.1:9/v1")
    (True, False)
    >>> forget_endpoint("127.0.0.1", 8080)
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

__all__ = ["forget_endpoint", "observe_endpoint", "observed_endpoint", "observing_endpoints",
           "open_request"]

#: The lifecycle request open around the running code (set by ``with request:``).
open_request: ContextVar[Any] = ContextVar("tinyllm_open_request", default=None)

_ANY = ("0.0.0.0", "::", "")
_LOCAL = ("127.0.0.1", "localhost", "::1", "[::1]")
_endpoints: set[tuple[str, int]] = set()


def observe_endpoint(host: str, port: int) -> None:
    """Note that this process observes the requests it serves at ``host:port``."""
    _endpoints.add((host.strip("[]").lower(), int(port)))


def forget_endpoint(host: str, port: int) -> None:
    """Undo ``observe_endpoint`` (a server that stopped)."""
    _endpoints.discard((host.strip("[]").lower(), int(port)))


def observing_endpoints() -> bool:
    """Whether any server of this process observes what it serves (almost always not:
    callers skip building the URL they would check)."""
    return bool(_endpoints)


def observed_endpoint(url: str) -> bool:
    """Whether ``url`` points at a server of this process that observes its requests."""
    if not _endpoints:  # the common case: no gateway here, nothing to parse
        return False
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if (host, port) in _endpoints:
        return True
    # A server on every interface (0.0.0.0) answers the loopback names; an address of
    # another machine is never ours.
    return host in _LOCAL and any(p == port and (h in _ANY or h in _LOCAL)
                                  for h, p in _endpoints)
