"""Graph files: YAML in, a validated ``Graph`` out, or a ``GraphError`` listing every problem.

Checking happens in two phases, like a compiler's: first each key, node and edge on its
own (types, required and unknown keys, templates, regexes, edge ends); then, only when
that found nothing, the shape of the whole graph (next nodes, reachability, a path to an
exit from every node, bounded cycles, ``max_steps`` long enough). Shape problems found
on a graph with broken nodes would mostly be echoes of those, so they wait.

Every problem is one line: ``<file>: <where>: <reason>``, e.g.
``examples/graphs/bad.yaml: node 'x': unknown type 'foo' (valid: exit, model, router, transform)``.

Example:
    >>> graph = parse_graph('''
    ... name: shout
    ... nodes:
    ...   up: {type: transform, op: upper}
    ...   done: {type: exit}
    ... edges:
    ...   - {from: up, to: done}
    ... ''')
    >>> graph.name, list(graph.nodes)
    ('shout', ['up', 'done'])
"""

from __future__ import annotations

from typing import Any

import yaml

from tinyllm.graph._graph_checks import GraphChecks
from tinyllm.graph._node_checks import TRANSFORM_OPS
from tinyllm.graph.model import Graph, GraphError

__all__ = ["TRANSFORM_OPS", "graph_from_dict", "parse_graph"]


def parse_graph(text: str, *, source: str = "<string>") -> Graph:
    """The graph in the YAML ``text``; ``source`` names it in error messages.

    Example:
        >>> try:
        ...     parse_graph("name: g\\nnodes: {done: {type: exit}}", source="g.yaml")
        ... except GraphError as err:
        ...     print(err)
        g.yaml: graph: entry 'done' is an exit node, so the graph would do nothing
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GraphError(_yaml_problem(source, exc), source=source) from None
    duplicates = _duplicate_keys(text, source)
    if duplicates:
        raise GraphError(duplicates, source=source)
    return graph_from_dict(data, source=source)


def graph_from_dict(data: Any, *, source: str = "<dict>") -> Graph:
    """The graph described by ``data`` (what a graph file's YAML loads to).

    Example:
        >>> g = graph_from_dict({"name": "g", "nodes": {"up": {"type": "transform",
        ...     "op": "upper"}, "done": {"type": "exit"}}, "edges": [{"from": "up", "to": "done"}]})
        >>> g.successors("up")
        ('done',)
    """
    return GraphChecks(source).build(data)


# -- YAML-level problems -------------------------------------------------------------------
def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return (f"{source}: line {mark.line + 1}, column {mark.column + 1}: "
                f"YAML syntax error: {problem}")
    return f"{source}: YAML syntax error: {problem}"


def _duplicate_keys(text: str, source: str) -> list[str]:
    """Keys given twice in one mapping, which ``safe_load`` silently merges (a second
    node of the same name would replace the first without a word)."""
    try:
        # compose builds the node tree only, no Python objects: as safe as safe_load.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # safe_load accepted it; nothing more to find
        return []
    problems: list[tuple[int, str]] = []
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        line = key.start_mark.line + 1
                        problems.append((line, f"{source}: line {line}: duplicate key "
                                               f"{key.value!r} (a later one would replace "
                                               "the earlier)"))
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return [problem for _, problem in sorted(problems)]

