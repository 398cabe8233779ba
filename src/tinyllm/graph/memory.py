"""Graph memory: the small key-value store one run's nodes share.

A node's ``output_key`` writes its output here; templates read it as ``{memory.KEY}``.
Every read and write is counted in ``tinyllm_memory_operations_total{operation_type}``
(``get``/``set``). One ``GraphMemory`` lives for one run, on one thread, so it takes
no lock.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.metrics import MetricsCollector
    >>> memory = GraphMemory(MetricsCollector(registry=CollectorRegistry()))
    >>> memory.set("answer", "4")
    >>> memory.get("answer"), memory.get("missing")
    ('4', '')
    >>> memory.snapshot()
    {'answer': '4'}
"""

from __future__ import annotations

from tinyllm.metrics.collector import MetricsCollector

__all__ = ["GraphMemory"]


class GraphMemory:
    """Key-value strings for one graph run, each operation counted.

    Args:
        collector: where ``increment_memory_operation`` goes.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.metrics import MetricsCollector
        >>> GraphMemory(MetricsCollector(registry=CollectorRegistry())).get("k")
        ''
    """

    __slots__ = ("_collector", "_data")

    def __init__(self, collector: MetricsCollector) -> None:
        self._collector = collector
        self._data: dict[str, str] = {}

    def get(self, key: str) -> str:
        """The value under ``key``; empty when no node has written it (yet).

        A branch may read a key another branch would have written: empty text is
        the useful answer there, where an error would make such graphs impossible.
        """
        self._collector.increment_memory_operation("get")
        return self._data.get(key, "")

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (a later write replaces it)."""
        self._collector.increment_memory_operation("set")
        self._data[key] = value

    def snapshot(self) -> dict[str, str]:
        """A copy of everything stored (not counted as an operation)."""
        return dict(self._data)
