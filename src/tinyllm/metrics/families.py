"""prometheus_client families built from the catalog, with cached children and a guard.

A ``Family`` wraps one prometheus_client metric. ``Family.child(key)`` returns the
labelled child for a tuple of label values, from a plain dict on the fast path (no
``.labels()`` validation, no lock of ours). A new combination takes the slow path,
under a lock, where the cardinality guard decides: within budget it becomes a real
series; past it, the update is folded into the series whose labels are all
``other`` — counted there, never lost — and ``dropped`` grows by one.

A ``FamilySet`` is every family of the catalog for one (registry, namespace) pair.
It is built once and shared, so that any number of ``MetricsCollector`` objects can
exist in a process without prometheus_client's "Duplicated timeseries" error.
"""

from __future__ import annotations

import contextlib
import platform
import re
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tinyllm._version import __version__
from tinyllm.metrics.catalog import CATALOG, Kind, MetricSpec, full_name

__all__ = [
    "OTHER",
    "Family",
    "FamilySet",
    "family_set",
    "forget_family_sets",
]

#: The label value new combinations are folded into past the cardinality budget.
OTHER = "other"


class Family:
    """One metric family, its children cache and its cardinality guard."""

    __slots__ = ("_lock", "_other_key", "children", "dropped", "metric", "name", "spec")

    def __init__(self, spec: MetricSpec, metric: Any, name: str) -> None:
        self.spec = spec
        self.metric = metric
        self.name = name
        # Only real combinations live here; folded ones are looked up again each time
        # so that a label carrying, say, request ids cannot grow this dict without end.
        self.children: dict[tuple[Any, ...], Any] = {}
        self.dropped = 0
        self._other_key = (OTHER,) * len(spec.labels)
        self._lock = threading.Lock()

    @property
    def cardinality(self) -> int:
        """Label combinations exported, the ``other`` fold included."""
        return len(self.children) + (1 if self.dropped else 0)

    def child(self, key: tuple[Any, ...], budget: int) -> Any:
        """The child for ``key``; folds into ``other`` once ``budget`` is spent."""
        found = self.children.get(key)
        if found is not None:
            return found
        return self._new_child(key, budget)

    def _new_child(self, key: tuple[Any, ...], budget: int) -> Any:
        with self._lock:
            found = self.children.get(key)
            if found is not None:
                return found
            if len(key) != len(self.spec.labels):
                raise ValueError(
                    f"{self.name} takes labels {self.spec.labels}, got {len(key)} values"
                )
            if len(self.children) < budget or key == self._other_key:
                child = self.metric.labels(*_encodable(key)) if key else self.metric
                self.children[key] = child
                return child
            self.dropped += 1
            return self.metric.labels(*self._other_key)


# Lone surrogates ("\ud800", from ``json.loads`` or ``surrogateescape`` decoding) have
# no UTF-8 form: one in a label value would make every later scrape of the registry fail
# (``generate_latest`` encodes the whole page). They become U+FFFD, once per new series.
_SURROGATES = re.compile("[\ud800-\udfff]")


def _encodable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    if any(isinstance(v, str) and _SURROGATES.search(v) for v in key):
        return tuple(_SURROGATES.sub("\ufffd", v) if isinstance(v, str) else v for v in key)
    return key


def _build(spec: MetricSpec, name: str, registry: CollectorRegistry,
           boundaries: Mapping[str, tuple[float, ...]]) -> Any:
    common: dict[str, Any] = {"labelnames": spec.labels, "registry": registry}
    if spec.kind is Kind.COUNTER:
        return Counter(name, spec.help, **common)
    if spec.kind is Kind.HISTOGRAM:
        buckets = sorted({*(spec.buckets or ()), *boundaries.get(spec.name, ())})
        return Histogram(name, spec.help, buckets=buckets, **common)
    return Gauge(name, spec.help, multiprocess_mode=spec.multiprocess_mode or "all", **common)


class FamilySet(Mapping[str, Family]):
    """Every catalog family for one registry and namespace, keyed by catalog name."""

    def __init__(self, registry: CollectorRegistry, namespace: str,
                 boundaries: Mapping[str, tuple[float, ...]] | None = None) -> None:
        self.registry = registry
        self.namespace = namespace
        # Bucket boundaries added to the catalog's (the SLO thresholds), by family.
        self.boundaries: Mapping[str, tuple[float, ...]] = dict(boundaries or {})
        families: dict[str, Family] = {}
        try:
            for spec in CATALOG.values():
                name = full_name(namespace, spec)
                metric = _build(spec, name, registry, self.boundaries)
                families[spec.name] = Family(spec, metric, name)
        except Exception:
            # All or nothing: never leave half a catalog registered.
            for fam in families.values():
                registry.unregister(fam.metric)
            raise
        self._families = families
        # The original metrics set's system info: constant labels, value 1 (an "info" gauge that
        # prometheus_client's multiprocess mode can carry, unlike Info).
        info = families["system_info"]
        info.child((__version__, platform.python_version(), platform.platform()), 1).set(1)
        # Circuit-breaker state per model, to count transitions (see the collector).
        self.breaker_states: dict[str, str] = {}
        self.breaker_lock = threading.Lock()

    def __getitem__(self, name: str) -> Family:
        return self._families[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._families)

    def __len__(self) -> int:
        return len(self._families)

    def unregister(self) -> None:
        """Remove every family from the registry (for tests and reconfiguration)."""
        for fam in self._families.values():
            with contextlib.suppress(KeyError):
                self.registry.unregister(fam.metric)


_SETS: dict[tuple[int, str], FamilySet] = {}
_SETS_LOCK = threading.Lock()


def family_set(registry: CollectorRegistry | None, namespace: str) -> FamilySet:
    """The shared ``FamilySet`` for ``registry`` (default: prometheus_client's REGISTRY).

    Built with the SLO thresholds in force then as extra bucket boundaries
    (``tinyllm.accounting.bucket_boundaries``).
    """
    reg = REGISTRY if registry is None else registry
    key = (id(reg), namespace)
    found = _SETS.get(key)
    if found is not None and found.registry is reg:
        return found
    with _SETS_LOCK:
        found = _SETS.get(key)
        if found is None or found.registry is not reg:
            # Deferred: tinyllm.accounting reads the catalog, whose package imports us.
            from tinyllm.accounting import bucket_boundaries

            found = FamilySet(reg, namespace, bucket_boundaries())
            _SETS[key] = found
        return found


def forget_family_sets() -> None:
    """Unregister and forget every family set (a fresh start for tests)."""
    with _SETS_LOCK:
        for fs in _SETS.values():
            fs.unregister()
        _SETS.clear()
