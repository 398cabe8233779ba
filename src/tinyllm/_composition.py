"""The composition root: the one module that knows every sink and wires them to the core.

The core (the lifecycle, the health registry, the metrics collector) knows no sink; the
sinks (logging, events, telemetry, the store) each plug into the core as an observer or
a health check. This module decides what is plugged in by default and reads the
environment that turns sinks on without code:

* every lifecycle ``get_lifecycle()`` makes gets a log line per request
  (``RequestLogObserver``) and an ``llm.request.failed`` event per failure
  (``RequestErrorObserver``);
* the process-wide lifecycle also records every request in the store when
  ``$TINYLLM_METRICS_DB`` names one (``configure_store``);
* the built-in health checks (metrics, events, telemetry) are registered.

``tinyllm/__init__.py`` imports it, so it is in place before any ``tinyllm`` module can
be used (Python runs a package's ``__init__`` before any of its modules). Sinks are
imported when the first lifecycle is made, not at ``import tinyllm``.

Example:
    >>> from tinyllm.lifecycle import get_lifecycle
    >>> sorted(type(o).__name__ for o in get_lifecycle().observers)[:2]
    ['RequestErrorObserver', 'RequestLogObserver']
"""

from __future__ import annotations

import os

from tinyllm.health import DEGRADED, HEALTHY, UNHEALTHY, register_health_check
from tinyllm.lifecycle import RequestLifecycle, set_lifecycle_setup
from tinyllm.settings import ENV_METRICS_DB

__all__ = ["install"]


def _setup_lifecycle(lifecycle: RequestLifecycle, is_default: bool) -> None:
    """Attach the default sinks to a new lifecycle (see the module docstring)."""
    from tinyllm.events import RequestErrorObserver
    from tinyllm.logging import RequestLogObserver

    lifecycle.add_observer(RequestLogObserver())
    lifecycle.add_observer(RequestErrorObserver())
    if is_default and os.environ.get(ENV_METRICS_DB, "").strip():
        from tinyllm.store.config import configure_store_from_env

        configure_store_from_env()


# -- the built-in health checks -----------------------------------------------------------


def _check_metrics(timeout: float) -> tuple[str, str]:
    """Every catalog family is registered and the registry collects without error."""
    from tinyllm.metrics.collector import get_metrics_collector

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


def install() -> None:
    """Put the defaults in place: the lifecycle set-up and the built-in health checks.

    Idempotent; ``tinyllm`` calls it on import.
    """
    set_lifecycle_setup(_setup_lifecycle)
    for name, check in (("metrics", _check_metrics), ("events", _check_events),
                        ("telemetry", _check_telemetry)):
        register_health_check(name, check, replace=True, builtin=True)


install()
