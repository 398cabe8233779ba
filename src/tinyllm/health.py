"""Health checks: a registry of small probes, run together, summarised as one status.

Each check is a callable that takes a timeout in seconds and returns ``(status,
detail)``, ``status`` being ``"healthy"``, ``"degraded"`` (working, but something is
lost or off, e.g. traces cannot be exported) or ``"unhealthy"`` (a pillar is broken).
The overall status is the worst of the checks. Later pillars (the store, the model
backend) add their own checks with ``register_health_check``.

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


# -- the built-in checks ----------------------------------------------------------------


def _check_metrics(timeout: float) -> tuple[str, str]:
    """Every catalog family is registered and the registry collects without error."""
    from tinyllm.metrics import get_metrics_collector

    collector = get_metrics_collector()
    if len(collector.families) == 0:
        return UNHEALTHY, "no metric families registered"
    # prometheus_client reports a counter "x_total" under the name "x".
    collected = {metric.name.removesuffix("_total") for metric in collector.registry.collect()}
    missing = sorted(
        fam.name for fam in collector.families.values()
        if fam.name.removesuffix("_total") not in collected
    )
    if missing:
        return UNHEALTHY, f"families missing from the registry: {', '.join(missing)}"
    return HEALTHY, f"{len(collector.families)} families registered; collect() works"


def _check_events(timeout: float) -> tuple[str, str]:
    """The process-wide emitter is enabled and has somewhere to send events."""
    from tinyllm.events import get_event_emitter

    emitter = get_event_emitter()
    names = [type(h).__name__ for h in emitter.handlers]
    if not emitter.enabled:
        return DEGRADED, "event emitter is disabled: events are dropped"
    if not names:
        return DEGRADED, "event emitter has no handlers: events go nowhere"
    return HEALTHY, f"enabled; handlers: {', '.join(names)}"


def _check_telemetry(timeout: float) -> tuple[str, str]:
    """The configured trace exporter answers (``not configured`` is healthy)."""
    from tinyllm.telemetry import check_exporter

    ok, detail = check_exporter(timeout)
    # The application runs fine without its exporter; only the traces are lost.
    return (HEALTHY if ok else DEGRADED), detail


_DEFAULT_CHECKS: dict[str, HealthCheck] = {
    "metrics": _check_metrics,
    "events": _check_events,
    "telemetry": _check_telemetry,
}

_checks: dict[str, HealthCheck] = dict(_DEFAULT_CHECKS)
_checks_lock = threading.Lock()


# -- the registry -----------------------------------------------------------------------


def register_health_check(name: str, check: HealthCheck, *, replace: bool = False) -> None:
    """Add ``check`` under ``name``; ValueError if the name is taken and not ``replace``.

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
        _checks.update(_DEFAULT_CHECKS)


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
