"""Graph test fixtures: a scripted model client (the executor's seam), metrics, spans, events.

The scripted client implements ``GraphModelClient`` structurally; it stands in for
``tinyllm.models`` here only. The real embedded model runs the same graphs in the e2e
tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from tinyllm.events import BufferedEventHandler, get_event_emitter, reset_event_emitter
from tinyllm.graph import ClientSpec
from tinyllm.metrics import MetricsCollector
from tinyllm.telemetry import TelemetryConfig, configure_telemetry, shutdown_telemetry


@dataclass
class Completion:
    text: str


@dataclass
class Call:
    method: str
    prompt: str
    graph: str
    max_tokens: int | None
    temperature: float | None
    params: dict[str, Any]


@dataclass
class ScriptedClient:
    """Answers each prompt with ``reply(prompt)``; ``stream`` yields it word by word."""

    reply: Callable[[str], str]
    provider: str = "scripted"
    model: str = "scripted-1"
    calls: list[Call] = field(default_factory=list)
    closed_streams: int = 0

    def generate(self, prompt: str, *, graph: str = "default", max_tokens: int | None = None,
                 temperature: float | None = None, **params: Any) -> Completion:
        self.calls.append(Call("generate", prompt, graph, max_tokens, temperature, params))
        return Completion(self.reply(prompt))

    def stream(self, prompt: str, *, graph: str = "default", max_tokens: int | None = None,
               temperature: float | None = None, **params: Any) -> Iterator[str]:
        self.calls.append(Call("stream", prompt, graph, max_tokens, temperature, params))
        text = self.reply(prompt)
        try:
            for index, word in enumerate(text.split(" ")):
                yield word if index == 0 else " " + word
        finally:
            self.closed_streams += 1


@dataclass
class Factory:
    """A client factory handing out one ScriptedClient per spec, recording the specs."""

    reply: Callable[[str], str]
    specs: list[ClientSpec] = field(default_factory=list)
    clients: dict[ClientSpec, ScriptedClient] = field(default_factory=dict)

    def __call__(self, spec: ClientSpec) -> ScriptedClient:
        self.specs.append(spec)
        client = self.clients[spec] = ScriptedClient(self.reply, model=spec.model or "default")
        return client

    @property
    def calls(self) -> list[Call]:
        return [call for client in self.clients.values() for call in client.calls]


def echo(prompt: str) -> str:
    """The scripted answer: the prompt's last line, marked."""
    return f"<{prompt.splitlines()[-1]}>"


@pytest.fixture
def factory() -> Factory:
    return Factory(echo)


@pytest.fixture
def metrics() -> MetricsCollector:
    return MetricsCollector(registry=CollectorRegistry())


@pytest.fixture
def events() -> Iterator[BufferedEventHandler]:
    """Every event emitted during the test, on a fresh process-wide emitter."""
    reset_event_emitter()
    buffer = BufferedEventHandler()
    get_event_emitter().add_handler(buffer)
    yield buffer
    reset_event_emitter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this test."""
    shutdown_telemetry()
    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetryConfig(enable_tracing=True, exporter="none"),
                        span_processors=[SimpleSpanProcessor(exporter)])
    yield exporter
    shutdown_telemetry()
