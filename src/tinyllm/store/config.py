"""``configure_store``: turn the store on for the whole process, in one call or by env.

``configure_store(target)`` opens a ``MetricsDatabase`` (target: the argument, else
``$TINYLLM_METRICS_DB``, else none), attaches a ``StoreObserver`` to the process-wide
request lifecycle (so every request that ``InferenceContext``, the decorators or the
lifecycle track also becomes one performance event), and registers a ``store`` health
check. Calling it again replaces the previous store (closed, observer removed).

With ``$TINYLLM_METRICS_DB`` set, no call is needed: when the process-wide lifecycle is
made (the first ``get_lifecycle()``), tinyllm's composition root configures the store.

Example:
    >>> import tempfile, os
    >>> from tinyllm.store import configure_store, get_store
    >>> db = configure_store(os.path.join(tempfile.mkdtemp(), "metrics.db"))
    >>> get_store() is db
    True
    >>> configure_store(None) is None  # with $TINYLLM_METRICS_DB unset: store off
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING

from sqlalchemy import update

from tinyllm.health import register_health_check, unregister_health_check
from tinyllm.lifecycle import get_lifecycle
from tinyllm.settings import ENV_METRICS_DB
from tinyllm.store import schema
from tinyllm.store.database import MetricsDatabase
from tinyllm.store.observer import StoreObserver

if TYPE_CHECKING:
    from tinyllm.lifecycle import RequestLifecycle

__all__ = [
    "HEALTH_CHECK_NAME",
    "close_store",
    "configure_store",
    "configure_store_from_env",
    "get_store",
    "store_health",
]

log = logging.getLogger("tinyllm.store")

#: The name the store's health check is registered under.
HEALTH_CHECK_NAME = "store"

_lock = threading.RLock()
_current: tuple[MetricsDatabase, StoreObserver, RequestLifecycle] | None = None
_configuring = False


def store_health(db: MetricsDatabase, timeout: float = 3.0) -> tuple[str, str]:
    """``(status, detail)`` for ``db``: unhealthy when the writer is dead or a write probe
    fails (unreachable, read-only); degraded once any event was dropped; else healthy.

    The probe rewrites one ``store_meta`` value to itself and rolls back: it needs the
    write lock for a moment and writes nothing.

    Example:
        >>> store_health(db)  # doctest: +SKIP
        ('healthy', 'sqlite:///.../metrics.db writable; 0 queued; 0 dropped')
    """
    if not db.writer_alive:
        return "unhealthy", f"{db.url}: the writer is not running (store closed?)"
    meta = schema.store_meta
    try:
        with db.engine.connect() as conn, conn.begin() as tx:
            conn.execute(update(meta).where(meta.c.key == "rollups")
                         .values(value=meta.c.value))
            tx.rollback()
    except Exception as exc:  # any failure to write is the finding, not an error
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return "unhealthy", f"{db.url} is not writable: {reason}"
    dropped = db.dropped
    lost = sum(dropped.values())
    detail = f"{db.url} writable; {db.pending} queued; {lost} dropped"
    if lost:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()))
        return "degraded", f"{detail} ({reasons})"
    return "healthy", detail


def _teardown() -> None:
    global _current
    if _current is None:
        return
    db, observer, lifecycle = _current
    _current = None
    lifecycle.remove_observer(observer)
    with contextlib.suppress(ValueError):  # someone removed it already
        unregister_health_check(HEALTH_CHECK_NAME)
    db.close()


def configure_store(
    target: str | os.PathLike[str] | None = None, *, event_prefix: str = ""
) -> MetricsDatabase | None:
    """Open the store at ``target`` (else ``$TINYLLM_METRICS_DB``) and wire it in.

    Returns the new ``MetricsDatabase``, or None (after closing any previous store) when
    neither names one. ``event_prefix`` goes to the ``StoreObserver`` (``"diffusion_"``
    gives the diffusion service's ``diffusion_generate``). Raises ValueError/TypeError for
    a bad target and SQLAlchemy's errors when the database cannot be opened; the previous
    store then stays in place.

    Example:
        >>> configure_store("postgresql://tinyllm@db/metrics")  # doctest: +SKIP
        MetricsDatabase('postgresql+psycopg://tinyllm@db/metrics')
    """
    global _current, _configuring
    chosen = target
    if chosen is None:
        chosen = os.environ.get(ENV_METRICS_DB, "").strip() or None
    with _lock:
        _configuring = True
        try:
            db = MetricsDatabase(chosen) if chosen is not None else None
            _teardown()
            if db is None:
                return None
            observer = StoreObserver(db, event_prefix=event_prefix)
            lifecycle = get_lifecycle()
            lifecycle.add_observer(observer)
            register_health_check(HEALTH_CHECK_NAME, lambda timeout: store_health(db, timeout),
                                  replace=True)
            _current = (db, observer, lifecycle)
            return db
        finally:
            _configuring = False


def close_store() -> None:
    """Close the configured store (if any), detach its observer and its health check.

    Example:
        >>> close_store()
        >>> get_store() is None
        True
    """
    with _lock:
        _teardown()


def get_store() -> MetricsDatabase | None:
    """The store ``configure_store`` set up, or None.

    Example:
        >>> get_store()  # doctest: +SKIP
        MetricsDatabase('sqlite:////srv/metrics.db')
    """
    current = _current
    return current[0] if current is not None else None


def configure_store_from_env() -> None:
    """``configure_store()`` from ``$TINYLLM_METRICS_DB``, as the process-wide lifecycle
    is made (tinyllm's composition root calls it). A store that cannot be opened is
    logged, never raised: the host's requests must not fail because of it."""
    if _configuring:  # configure_store itself asked for the lifecycle
        return
    try:
        configure_store()
    except Exception as exc:
        log.error("%s=%r: metrics store not configured: %s", ENV_METRICS_DB,
                  os.environ.get(ENV_METRICS_DB), str(getattr(exc, "orig", None) or exc))
