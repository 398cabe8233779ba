"""Property tests: the loader only ever raises GraphError, and any graph it accepts runs to
an exit or stops at a runtime bound, never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tinyllm.graph import ExitNode, GraphError, GraphExecutionError, graph_from_dict, run_graph
from tinyllm.metrics import MetricsCollector

WORK = ["a", "b", "c", "d"]
junk = st.one_of(st.none(), st.integers(-1, 3), st.text(max_size=3), st.booleans())


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed graphs (a chain a -> b -> ... -> e with random jumps, loops and
    bounds), so many are accepted and run; some with a fault, so many are not."""
    count = draw(st.integers(1, len(WORK)))
    chain = [*WORK[:count], "e"]  # "e" is the exit
    anywhere = st.sampled_from(chain)
    nodes: dict[str, Any] = {}
    edges: list[dict[str, Any]] = []
    for index, node_id in enumerate(chain[:-1]):
        following = chain[index + 1]
        kind = draw(st.sampled_from(["transform", "router", "model"]))
        spec: dict[str, Any]
        if kind == "router":
            rules = draw(st.lists(st.fixed_dictionaries(
                {"contains": st.sampled_from(["x", "Q", "zz"]), "to": anywhere}),
                min_size=1, max_size=3))
            spec = {"type": "router", "rules": rules, "default": following}
        else:
            if kind == "transform":
                spec = {"type": "transform", **draw(st.sampled_from([
                    {"op": "upper"}, {"op": "template", "template": "{input}x"},
                    {"op": "truncate", "chars": 3}, {"op": "regex_extract",
                                                     "pattern": "x+"}]))}
            else:
                spec = {"type": "model", "prompt": draw(st.sampled_from(
                    ["{query}", "{input}!", "{memory.k}"]))}
            if draw(st.booleans()):
                spec["output_key"] = "k"
            edges.append({"from": node_id,
                          "to": draw(st.sampled_from([following] * 3 + chain))})
        if draw(st.booleans()):
            spec["max_visits"] = draw(st.integers(1, 3))
        nodes[node_id] = spec
    nodes["e"] = {"type": "exit"}
    data: dict[str, Any] = {"name": "g", "nodes": nodes, "edges": edges}
    if draw(st.booleans()):
        data["max_steps"] = draw(st.integers(1, 12))
    fault = draw(st.sampled_from(["none"] * 6 + ["node", "edge", "key", "steps"]))
    if fault == "node":
        nodes[draw(anywhere)] = draw(junk)
    elif fault == "edge":
        edges.append({"from": draw(anywhere), "to": draw(st.sampled_from(["e", "zz"]))})
    elif fault == "key":
        nodes[draw(st.sampled_from(chain[:-1]))][draw(st.sampled_from(
            ["type", "op", "prompt", "rules", "default", "max_visits"]))] = draw(junk)
    elif fault == "steps":
        data["max_steps"] = draw(junk)
    return data


class _Client:
    provider, model = "scripted", "scripted-1"

    def generate(self, prompt: str, **kwargs: Any) -> Any:
        return type("C", (), {"text": prompt + "x"})()

    def stream(self, prompt: str, **kwargs: Any) -> Any:
        yield prompt


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_accepted_graphs_run_to_an_exit_or_a_bound(data: dict[str, Any]) -> None:
    try:
        graph = graph_from_dict(data, source="h.yaml")
    except GraphError as err:
        assert err.problems and all(p.startswith("h.yaml: ") for p in err.problems)
        return
    metrics = MetricsCollector(registry=CollectorRegistry())
    try:
        result = run_graph(graph, "Q", client_factory=lambda spec: _Client(),
                           collector=metrics)
    except GraphExecutionError as err:
        assert err.node_id in graph.nodes
        return
    assert isinstance(graph.nodes[result.path[-1]], ExitNode)
    assert len(result.path) <= graph.max_steps
