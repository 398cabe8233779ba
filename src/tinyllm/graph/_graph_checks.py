"""The checks of a graph file as a whole: its name and entry, the edges between its
nodes, the template variables they read, and the shape of the graph (next nodes,
reachability, a path to an exit, bounded cycles, a long enough ``max_steps``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tinyllm.graph._node_checks import NodeChecks
from tinyllm.graph._problems import _NAME, _kind, _listing
from tinyllm.graph._shape import reachable, shortest_run, unbounded_cycles
from tinyllm.graph.model import (
    DEFAULT_MAX_STEPS,
    Edge,
    ExitNode,
    Graph,
    Node,
    RouterNode,
)
from tinyllm.graph.templates import MEMORY_PREFIX

_GRAPH_KEYS = ("description", "edges", "entry", "max_steps", "name", "nodes")
_EDGE_KEYS = ("from", "to")


class GraphChecks(NodeChecks):
    """Builds a graph from loaded YAML, collecting every problem on the way; the shape
    is checked only once everything else is sound."""

    # -- the whole file ----------------------------------------------------------------
    def build(self, data: Any) -> Graph:
        if not isinstance(data, Mapping):
            what = "the file is empty" if data is None else f"got {_kind(data)}"
            self.add("graph", f"a graph file is a mapping with name, nodes and edges; {what}")
            raise self.fail()
        self.unknown_keys("graph", data, _GRAPH_KEYS, "graph files")
        name = self.name(data)
        description = data.get("description", "")
        if not isinstance(description, str):
            self.add("graph", f"description must be text, got {_kind(description)}")
            description = ""
        max_steps = DEFAULT_MAX_STEPS
        if "max_steps" in data:
            max_steps = self.integer("graph", "max_steps", data["max_steps"], 1) or max_steps
        nodes = self.nodes(data)
        edges = self.edges(data.get("edges", []), nodes)
        entry = self.entry(data, nodes)
        self.check_templates(nodes)
        if self.problems:
            raise self.fail()
        graph = Graph(name=name, nodes=nodes, edges=edges, entry=entry, max_steps=max_steps,
                      description=description, source=self.source)
        self.check_shape(graph)
        if self.problems:
            raise self.fail()
        return graph

    def name(self, data: Mapping[str, Any]) -> str:
        if "name" not in data:
            self.add("graph", "missing required key 'name' (the graph's label in metrics, "
                              "[a-z0-9_-]+)")
            return ""
        name = data["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            self.add("graph", f"name {name!r} must be lowercase letters, digits, _ and - "
                              "([a-z0-9_-]+); it labels metrics")
            return ""
        return name

    def entry(self, data: Mapping[str, Any], nodes: Mapping[str, Node]) -> str:
        if "entry" not in data:
            return next(iter(self.known), "")
        entry = data["entry"]
        if not isinstance(entry, str):
            self.add("graph", f"entry must be a node id, got {_kind(entry)}")
            return ""
        if self.known and entry not in self.known:
            self.add("graph", f"entry {entry!r} is not a node (nodes: {_listing(self.known)})")
        return entry
    # -- edges -------------------------------------------------------------------------
    def edges(self, raw: Any, nodes: Mapping[str, Node]) -> tuple[Edge, ...]:
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.add("graph", f"edges must be a list like [{{from: a, to: b}}], got {_kind(raw)}")
            return ()
        edges: list[Edge] = []
        for index, item in enumerate(raw):
            at = f"edges[{index}]"
            if not isinstance(item, Mapping):
                self.add(at, f"an edge is a mapping like {{from: a, to: b}}, got {_kind(item)}")
                continue
            self.unknown_keys(at, item, _EDGE_KEYS, "edges")
            source, target = item.get("from"), item.get("to")
            if not isinstance(source, str) or not isinstance(target, str):
                self.add(at, f"an edge needs 'from' and 'to' node ids, got from={source!r}, "
                             f"to={target!r}")
                continue
            at = f"{at} ({source} -> {target})"
            bad = False
            for end, node_id in (("source", source), ("target", target)):
                if self.known and node_id not in self.known:
                    self.add(at, f"unknown {end} node {node_id!r} "
                                 f"(nodes: {_listing(self.known)})")
                    bad = True
            if bad:
                continue
            if isinstance(nodes.get(source), RouterNode):
                self.add(at, f"router {source!r} chooses its next node with its "
                             "rules/routes and default, not with edges; remove this edge")
                continue
            if isinstance(nodes.get(source), ExitNode):
                self.add(f"node {source!r}", f"an exit node has no outgoing edges "
                                             f"({at} leaves it)")
                continue
            edges.append(Edge(source, target))
        # A router's targets are its edges: check they exist here, with the edges.
        for node_id, node in nodes.items():
            if not isinstance(node, RouterNode):
                continue
            named = ([(f"rules[{i}].to", r.to) for i, r in enumerate(node.rules)]
                     + [(f"routes[{i}]", r) for i, r in enumerate(node.routes)]
                     + [("default", node.default)])
            for key, target in named:
                if target not in self.known:
                    self.add(f"node {node_id!r}", f"{key}: {target!r} is not a node "
                                                  f"(nodes: {_listing(self.known)})")
        return tuple(edges)

    # -- templates ---------------------------------------------------------------------
    def check_templates(self, nodes: Mapping[str, Node]) -> None:
        written = [k for n in nodes.values() if (k := getattr(n, "output_key", None))]
        for node_id, key, template, extra in self.templates:
            valid = ["query", "input", *extra]
            for name in sorted(template.variables):
                if name in valid:
                    continue
                if name.startswith(MEMORY_PREFIX):
                    if name[len(MEMORY_PREFIX):] in written:
                        continue
                    wrote = (f"keys some node writes with output_key: {_listing(written)}"
                             if written else "no node sets output_key")
                    self.add(f"node {node_id!r}", f"{key}: {{{name}}} reads a memory key no "
                                                  f"node writes ({wrote})")
                    continue
                memory = f"{{{MEMORY_PREFIX}KEY}}"
                self.add(f"node {node_id!r}",
                         f"{key}: unknown template variable {{{name}}} (valid: "
                         f"{_listing('{' + v + '}' for v in valid)}, {memory}; "
                         f"write {{{{ and }}}} for literal braces)")

    # -- shape -------------------------------------------------------------------------
    def check_shape(self, graph: Graph) -> None:
        nodes = graph.nodes
        if isinstance(nodes[graph.entry], ExitNode):
            self.add("graph", f"entry {graph.entry!r} is an exit node, so the graph would "
                              "do nothing")
            return
        for node_id, node in nodes.items():
            nexts = graph.successors(node_id)
            if isinstance(node, ExitNode | RouterNode):
                continue
            if not nexts:
                self.add(f"node {node_id!r}", f"no outgoing edge; add one under edges "
                                              f"(e.g. {{from: {node_id}, to: done}})")
            elif len(nexts) > 1:
                self.add(f"node {node_id!r}", f"{len(nexts)} outgoing edges (to "
                                              f"{_listing(nexts)}); only a router may choose "
                                              "between next nodes")
        if self.problems:
            return
        exits = [n for n, node in nodes.items() if isinstance(node, ExitNode)]
        if not exits:
            self.add("graph", "no exit node; add one, e.g. done: {type: exit}")
            return
        reached = reachable(graph, [graph.entry], forward=True)
        for node_id in nodes:
            if node_id not in reached:
                self.add(f"node {node_id!r}", f"unreachable from entry {graph.entry!r} "
                                              "(no edge or router leads to it)")
        finishing = reachable(graph, exits, forward=False)
        if graph.entry not in finishing:
            self.add("graph", f"no exit node is reachable from entry {graph.entry!r}")
        for node_id in nodes:
            if node_id in reached and node_id not in finishing and node_id != graph.entry:
                self.add(f"node {node_id!r}", "no path from here to an exit node")
        if self.problems:
            return
        for cycle in unbounded_cycles(graph):
            first = min(cycle[:-1], key=list(nodes).index)
            self.add(f"node {first!r}", f"in a cycle without a bound ({' -> '.join(cycle)}); "
                                        "set max_visits on one of its nodes")
        if self.problems:
            return
        shortest = shortest_run(graph)
        if shortest > graph.max_steps:
            self.add("graph", f"max_steps {graph.max_steps} is too small: the shortest run "
                              f"from {graph.entry!r} to an exit visits {shortest} nodes")
