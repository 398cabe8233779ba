"""Which registry a process exposes: its own, or every worker's aggregated.

Example:
    >>> from prometheus_client import REGISTRY
    >>> exposition_registry() is REGISTRY  # one process, no multiprocess dir
    True
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from tinyllm.settings import multiprocess_dir

__all__ = ["exposition_registry"]


def exposition_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: ``registry``; else, in multiprocess mode, a registry that
    aggregates every worker's files; else prometheus_client's ``REGISTRY``.

    Example:
        >>> exposition_registry() is REGISTRY  # one process, no multiprocess dir
        True
    """
    if registry is not None:
        return registry
    if multiprocess_dir():
        from prometheus_client import multiprocess

        aggregate = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return aggregate
    return REGISTRY
