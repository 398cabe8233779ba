"""Every default sink on, for a test that checks one call reaches them all: a GenAI span
(in memory), the log lines, and a store row (SQLite in the test's folder).

Example:
    >>> with every_sink(collector, tmp_path) as sinks:          # doctest: +SKIP
    ...     client.generate("hi")
    >>> sinks.spans("openai"), sinks.lines, sinks.summary["overall"]    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tinyllm.lifecycle import get_lifecycle
from tinyllm.logging import capture_logs
from tinyllm.metrics import MetricsCollector
from tinyllm.store import MetricsDatabase
from tinyllm.store.observer import StoreObserver

__all__ = ["Sinks", "every_sink"]


@dataclass
class Sinks:
    exporter: InMemorySpanExporter
    logs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def spans(self, provider: str) -> list[Any]:
        """The finished GenAI spans of ``provider``."""
        return [s for s in self.exporter.get_finished_spans()
                if s.attributes and s.attributes.get("gen_ai.provider.name") == provider]

    @property
    def lines(self) -> list[dict[str, Any]]:
        """The request log lines."""
        return [entry for entry in self.logs if entry["event"] == "llm_request"]


@contextmanager
def every_sink(collector: MetricsCollector, folder: Path) -> Iterator[Sinks]:
    """Tracing, the store and log capture on ``collector``'s lifecycle for the block;
    ``summary`` holds the store's summary after it."""
    from tinyllm.telemetry import TelemetryConfig, configure_telemetry, shutdown_telemetry

    lifecycle = get_lifecycle(collector)
    sinks = Sinks(InMemorySpanExporter())
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(sinks.exporter)],
                        lifecycle=lifecycle)
    db = MetricsDatabase(str(folder / "m.db"), collector=collector)
    store = StoreObserver(db)
    lifecycle.add_observer(store)
    try:
        with capture_logs() as logs:
            yield sinks
        sinks.logs = list(logs)
        db.flush()
        sinks.summary = db.get_summary()
    finally:
        lifecycle.remove_observer(store)
        db.close()
        shutdown_telemetry()
