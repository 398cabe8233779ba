"""tinyllm.graph's facade, templates and memory."""

from __future__ import annotations

import importlib

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.graph import GraphMemory, Template
from tinyllm.metrics import MetricsCollector


def test_all_is_sorted_and_complete() -> None:
    mod = importlib.import_module("tinyllm.graph")

    def key(name: str) -> tuple[int, str]:  # ruff's RUF022 order
        return (0, name) if name.isupper() else ((1, name) if name[0].isupper() else (2, name))

    assert mod.__all__ == sorted(mod.__all__, key=key)
    public = {n for n in vars(mod) if not n.startswith("_")
              and not isinstance(getattr(mod, n), type(importlib))}
    assert public == set(mod.__all__)


def test_template_render_and_escapes() -> None:
    template = Template.parse("{{literal}} {query}/{input}/{memory.k}/{routes}")
    assert template.variables == {"query", "input", "memory.k", "routes"}
    reads: list[str] = []

    def memory(key: str) -> str:
        reads.append(key)
        return "M"

    assert template.render({"query": "Q", "input": "I"}, memory) == "{literal} Q/I/M/"
    assert reads == ["k"]


@pytest.mark.parametrize(("text", "message"), [
    ("{query", "expected '}' before end of string"),
    ("query}", "Single '}' encountered"),
    ("{}", "an empty variable"),
    ("{0}", "not a variable name"),
    ("{query.upper}", "not a variable name"),
    ("{memory.a-b}", "a memory key is letters, digits and _"),
    ("{query:>10}", "conversions (!r) and format specs (:...) are not supported"),
])
def test_template_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        Template.parse(text)


def test_template_type_error() -> None:
    with pytest.raises(TypeError, match="template must be a str, got int"):
        Template.parse(3)  # type: ignore[arg-type]


def test_memory_counts_gets_and_sets() -> None:
    metrics = MetricsCollector(registry=CollectorRegistry())
    memory = GraphMemory(metrics)
    memory.set("a", "1")
    memory.set("a", "2")
    assert memory.get("a") == "2" and memory.get("b") == ""
    assert memory.snapshot() == {"a": "2"}

    def count(op: str) -> float:
        return metrics.registry.get_sample_value(
            "tinyllm_memory_operations_total", {"operation_type": op}) or 0.0

    assert (count("set"), count("get")) == (2, 2)
