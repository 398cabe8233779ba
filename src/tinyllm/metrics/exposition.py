"""Which registry a process exposes: its own, or every worker's aggregated.

Example:
    >>> from prometheus_client import REGISTRY
    >>> exposition_registry() is REGISTRY  # one process, no multiprocess dir
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Metric
from prometheus_client.registry import RestrictedRegistry

from tinyllm.settings import multiprocess_dir

__all__ = ["WholeReadRegistry", "exposition_registry"]


class WholeReadRegistry(CollectorRegistry):
    """A registry whose collectors cannot describe themselves, restricted by filtering.

    prometheus_client restricts a read to the collectors that named their metrics when
    registered; the multiprocess collector learns its names from the workers' files at
    each read, so a plain restricted read of the aggregate finds nothing. Here a
    restricted read collects everything and keeps the samples asked for.

    Example:
        >>> from prometheus_client.core import GaugeMetricFamily
        >>> class Two:
        ...     def collect(self):
        ...         yield GaugeMetricFamily("a", "A", value=1)
        ...         yield GaugeMetricFamily("b", "B", value=2)
        >>> registry = WholeReadRegistry(auto_describe=False)
        >>> registry.register(Two())
        >>> [m.name for m in registry.restricted_registry(["b"]).collect()]
        ['b']
    """

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        return _Filtered(names, self)


class _Filtered(RestrictedRegistry):
    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            samples = [s for s in metric.samples if s.name in self._name_set]
            if samples:
                kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                kept.samples = samples
                yield kept


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

        aggregate = WholeReadRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return aggregate
    return REGISTRY
