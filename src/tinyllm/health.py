"""Health checks: a registry of small probes, run together, summarised as one status.

Each check is a callable that takes a timeout in seconds and returns ``(status,
detail)``, ``status`` being ``"healthy"``, ``"degraded"`` (working, but something is
lost or off, e.g. traces cannot be exported) or ``"unhealthy"`` (a pillar is broken).
The overall status is the worst of the checks. The registry knows no pillar: tinyllm's
own checks (metrics, events, telemetry) are registered by its composition root, and the
store, the model backends and applications add theirs with ``register_health_check``.

Example:
    >>> from tinyllm.health import register_health_check, run_health_checks
    >>> register_health_check("answer", lambda timeout: ("healthy", "42"))
    >>> report = run_health_checks()
    >>> report["checks"]["answer"]
    {'status': 'healthy', 'detail': '42'}
    >>> unregister_health_check("answer")

A check that raises, returns something else, or does not answer within the timeout
counts as ``unhealthy`` with a detail saying so: ``run_health_checks`` itself never
raises because of a check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEGRADED",
    "HEALTHY",
    "STATUSES",
    "UNHEALTHY",
    "HealthCheck",
    "health_check_names",
    "register_health_check",
    "reset_health_checks",
    "run_health_checks",
    "unregister_health_check",
]

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
#: The statuses, best first; the overall status is the worst one present.
STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)
#: Seconds every check gets (together, they run in parallel).
DEFAULT_TIMEOUT = 3.0

#: A check: given a timeout in seconds, returns ``(status, detail)``.
HealthCheck = Callable[[float], tuple[str, str]]


# The built-in checks (metrics, events, telemetry) are registered by the composition root
# (tinyllm._composition) with builtin=True: this registry knows no pillar.
_builtin: dict[str, HealthCheck] = {}
_checks: dict[str, HealthCheck] = {}
_checks_lock = threading.Lock()


# -- the registry -----------------------------------------------------------------------


def register_health_check(
    name: str, check: HealthCheck, *, replace: bool = False, builtin: bool = False,
) -> None:
    """Add ``check`` under ``name``; ValueError if the name is taken and not ``replace``.

    ``builtin=True`` makes it one of the checks ``reset_health_checks()`` goes back to
    (tinyllm's own: metrics, events, telemetry).

    Example:
        >>> register_health_check("store", lambda timeout: ("healthy", "sqlite ok"))
        >>> unregister_health_check("store")
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not callable(check):
        raise TypeError(f"check must be callable as check(timeout) -> (status, detail), "
                        f"got {check!r}")
    with _checks_lock:
        if name in _checks and not replace:
            raise ValueError(
                f"a health check named {name!r} is already registered "
                "(pass replace=True to replace it)"
            )
        _checks[name] = check
        if builtin:
            _builtin[name] = check


def unregister_health_check(name: str) -> None:
    """Remove the check ``name``; ValueError naming the registered ones if there is none."""
    with _checks_lock:
        if name not in _checks:
            raise ValueError(
                f"no health check named {name!r}; registered: {', '.join(_checks) or 'none'}"
            )
        del _checks[name]


def health_check_names() -> list[str]:
    """The registered checks' names, in the order they run and are reported."""
    with _checks_lock:
        return list(_checks)


def reset_health_checks() -> None:
    """Back to the built-in checks only (metrics, events, telemetry). A test seam."""
    with _checks_lock:
        _checks.clear()
        _checks.update(_builtin)


# -- running ----------------------------------------------------------------------------


def _result(outcome: Any) -> dict[str, str]:
    if (
        isinstance(outcome, tuple)
        and len(outcome) == 2
        and outcome[0] in STATUSES
        and isinstance(outcome[1], str)
    ):
        return {"status": outcome[0], "detail": outcome[1]}
    return {
        "status": UNHEALTHY,
        "detail": f"check returned {outcome!r}, not (status, detail) with status one of "
        f"{', '.join(STATUSES)}",
    }


def run_health_checks(timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Run every registered check in parallel and summarise.

    Args:
        timeout: seconds the checks get; a check still running then is ``unhealthy``.

    Returns:
        ``{"status": overall, "checks": {name: {"status": ..., "detail": ...}}}``,
        checks in registration order; ``overall`` is the worst status present
        (``healthy`` when no check is registered).

    Example:
        >>> run_health_checks()["status"] in STATUSES
        True
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    with _checks_lock:
        checks = dict(_checks)
    results: dict[str, dict[str, str]] = {}

    def run(name: str, check: HealthCheck) -> None:
        try:
            results[name] = _result(check(float(timeout)))
        except Exception as exc:
            results[name] = {
                "status": UNHEALTHY,
                "detail": f"check raised {type(exc).__name__}: {exc}",
            }

    # Daemon threads: a check that hangs past its timeout is reported and abandoned,
    # and cannot keep the process from exiting.
    threads = {
        name: threading.Thread(target=run, args=(name, check), daemon=True,
                               name=f"tinyllm-health-{name}")
        for name, check in checks.items()
    }
    for thread in threads.values():
        thread.start()
    deadline = monotonic() + timeout
    for thread in threads.values():
        thread.join(max(0.0, deadline - monotonic()))
    report: dict[str, dict[str, str]] = {}
    for name in checks:
        found = results.get(name)
        report[name] = found if found is not None else {
            "status": UNHEALTHY,
            "detail": f"no answer within {timeout:g} s",
        }
    worst = max((STATUSES.index(r["status"]) for r in report.values()), default=0)
    return {"status": STATUSES[worst], "checks": report}
