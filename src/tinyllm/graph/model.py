"""The graph model: read-only dataclasses built (and validated) by ``tinyllm.graph.loader``.

A ``Graph`` is a name, an ordered mapping of node id to node, the edges, an entry node and
a step bound. Build one with ``load_graph``/``parse_graph``/``graph_from_dict``: they
check everything the executor relies on (every node but an exit has a next node, only
routers branch, every cycle is bounded, every template variable exists), so the executor
itself never has to.

Example:
    >>> from tinyllm.graph import builtin_graph
    >>> graph = builtin_graph("default")
    >>> graph.name, graph.entry, graph.successors("answer")
    ('default', 'answer', ('done',))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from tinyllm.errors import TinyLLMError
from tinyllm.graph.templates import Template

__all__ = [
    "DEFAULT_MAX_STEPS",
    "NODE_TYPES",
    "PROVIDERS",
    "ClientSpec",
    "Edge",
    "ExitNode",
    "Graph",
    "GraphError",
    "GraphExecutionError",
    "ModelNode",
    "Node",
    "RouteRule",
    "RouterNode",
    "TransformNode",
]

#: The node types a graph file may use, sorted.
NODE_TYPES = ("exit", "model", "router", "transform")

#: The model providers a node may name (``tinyllm.models`` implements them).
PROVIDERS = ("local", "ollama", "openai")

#: Node visits a run may make when the graph file does not set ``max_steps``.
DEFAULT_MAX_STEPS = 50


class GraphError(TinyLLMError):
    """A graph is invalid. The message names the file, the node and the reason.

    ``problems`` holds every problem found, one line each, in file order; ``str(err)``
    is those lines joined by newlines, so a CLI can print it as it is.

    Example:
        >>> from tinyllm.graph import parse_graph
        >>> try:
        ...     parse_graph("name: g\\nnodes: {a: {type: foo}}", source="g.yaml")
        ... except GraphError as err:
        ...     print(err.problems[0])
        g.yaml: node 'a': unknown type 'foo' (valid: exit, model, router, transform)
    """

    def __init__(self, problems: list[str] | tuple[str, ...] | str, *, source: str = "") -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        self.source = source
        super().__init__("\n".join(self.problems))


class GraphExecutionError(GraphError):
    """A run broke a runtime bound (``max_steps``, a node's ``max_visits``).

    ``graph`` and ``node_id`` say where. Model failures are *not* wrapped in this: they
    propagate as raised (a ``ModelError`` stays a ``ModelError``) with a note naming the
    graph and node (``exc.__notes__``).

    Example:
        >>> err = GraphExecutionError("graph 'g': node 'a': visited more than max_visits=2 times",
        ...                           graph="g", node_id="a")
        >>> err.node_id
        'a'
    """

    def __init__(self, message: str, *, graph: str = "", node_id: str = "") -> None:
        super().__init__(message, source=graph)
        self.graph = graph
        self.node_id = node_id


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """Which model client a node wants; ``None`` means "the run's default".

    The executor hands it to its ``client_factory`` and caches the client per spec.

    Example:
        >>> ClientSpec(provider="ollama", model="llama3")
        ClientSpec(provider='ollama', model='llama3', base_url=None)
    """

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """A directed edge ``source -> target`` (``from``/``to`` in the file).

    Example:
        >>> Edge("answer", "done")
        Edge(source='answer', target='done')
    """

    source: str
    target: str


@dataclass(frozen=True, slots=True)
class ModelNode:
    """Renders ``prompt`` and asks a model; its answer becomes the current value.

    Example:
        >>> from tinyllm.graph.templates import Template
        >>> node = ModelNode("answer", Template.parse("Question: {query}\\nAnswer:"))
        >>> node.type, node.client_spec
        ('model', ClientSpec(provider=None, model=None, base_url=None))
    """

    type: ClassVar[Literal["model"]] = "model"
    id: str
    prompt: Template
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    output_key: str | None = None
    max_visits: int | None = None

    @property
    def client_spec(self) -> ClientSpec:
        """The client this node runs on."""
        return ClientSpec(self.provider, self.model, self.base_url)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One router rule: ``kind`` is contains, regex or equals; first match wins.

    ``contains`` and ``equals`` compare case-insensitively (``equals`` also ignores
    surrounding whitespace); ``regex`` is searched as written (``(?i)`` for no case).

    Example:
        >>> rule = RouteRule("contains", "calculate", "math")
        >>> rule.matches("Please CALCULATE 2+2"), rule.matches("hello")
        (True, False)
    """

    kind: Literal["contains", "regex", "equals"]
    value: str
    to: str
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "regex" and self._pattern is None:
            object.__setattr__(self, "_pattern", re.compile(self.value))

    def matches(self, text: str) -> bool:
        """Whether this rule selects its target for ``text``."""
        if self.kind == "contains":
            return self.value.casefold() in text.casefold()
        if self.kind == "equals":
            return self.value.strip().casefold() == text.strip().casefold()
        assert self._pattern is not None  # set in __post_init__
        return self._pattern.search(text) is not None


@dataclass(frozen=True, slots=True)
class RouterNode:
    """Chooses the next node; passes the current value through unchanged.

    ``mode="rules"``: the first of ``rules`` matching the current value wins, else
    ``default``. ``mode="model"``: the model's answer to ``prompt`` is matched to one of
    ``routes`` (the earliest route name in the answer), else ``default``.

    Example:
        >>> node = RouterNode("route", rules=(RouteRule("contains", "sum", "math"),),
        ...                   default="answer")
        >>> node.targets
        ('math', 'answer')
    """

    type: ClassVar[Literal["router"]] = "router"
    id: str
    default: str
    mode: Literal["rules", "model"] = "rules"
    rules: tuple[RouteRule, ...] = ()
    routes: tuple[str, ...] = ()
    prompt: Template | None = None
    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    max_visits: int | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        """Every node this router can choose, without repeats, default last."""
        named = [r.to for r in self.rules] if self.mode == "rules" else list(self.routes)
        return tuple(dict.fromkeys([*named, self.default]))

    @property
    def client_spec(self) -> ClientSpec:
        """The client a model-mode router asks."""
        return ClientSpec(self.provider, self.model, self.base_url)


@dataclass(frozen=True, slots=True)
class TransformNode:
    """Changes the current value with ``op`` (strip, upper, lower, template, truncate,
    regex_extract) and the op's argument.

    Example:
        >>> TransformNode("shout", "upper").apply("hi", lambda t: "")
        'HI'
    """

    type: ClassVar[Literal["transform"]] = "transform"
    id: str
    op: Literal["strip", "upper", "lower", "template", "truncate", "regex_extract"]
    template: Template | None = None
    chars: int | None = None
    pattern: str | None = None
    group: int | str = 0
    output_key: str | None = None
    max_visits: int | None = None
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op == "regex_extract" and self._regex is None and self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    def apply(self, value: str, render: Callable[[Template], str]) -> str:
        """The transformed ``value``; ``render(template)`` fills a template op's text.

        ``regex_extract`` gives ``group`` of the first match, or ``value`` unchanged
        when nothing matches (an answer that is already bare stays usable).
        """
        op = self.op
        if op == "strip":
            return value.strip()
        if op == "upper":
            return value.upper()
        if op == "lower":
            return value.lower()
        if op == "truncate":
            assert self.chars is not None
            return value[: self.chars]
        if op == "template":
            assert self.template is not None
            return render(self.template)
        assert self._regex is not None
        found = self._regex.search(value)
        if found is None:
            return value
        return found.group(self.group) or ""


@dataclass(frozen=True, slots=True)
class ExitNode:
    """Ends the run; the run's output is the value produced before it.

    Example:
        >>> ExitNode("done").type
        'exit'
    """

    type: ClassVar[Literal["exit"]] = "exit"
    id: str
    max_visits: int | None = None


#: Any node.
Node = ModelNode | RouterNode | TransformNode | ExitNode


@dataclass(frozen=True, slots=True)
class Graph:
    """A validated graph. Build it with ``load_graph``, ``parse_graph`` or
    ``graph_from_dict``, which check what the executor relies on.

    ``source`` is where it came from (a path, ``<string>``, ``<builtin:default>``).

    Example:
        >>> from tinyllm.graph import parse_graph
        >>> g = parse_graph('''
        ... name: echo
        ... nodes:
        ...   shout: {type: transform, op: upper}
        ...   done: {type: exit}
        ... edges: [{from: shout, to: done}]
        ... ''')
        >>> g.entry, [n.type for n in g.nodes.values()]
        ('shout', ['transform', 'exit'])
    """

    name: str
    nodes: Mapping[str, Node]
    edges: tuple[Edge, ...]
    entry: str
    max_steps: int = DEFAULT_MAX_STEPS
    description: str = ""
    source: str = "<string>"
    _successors: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self._successors:
            object.__setattr__(self, "_successors", _successor_map(self.nodes, self.edges))

    def successors(self, node_id: str) -> tuple[str, ...]:
        """The nodes ``node_id`` can go to next (a router's targets, else its edges)."""
        if node_id not in self.nodes:
            raise ValueError(f"node_id={node_id!r} is not in graph {self.name!r} "
                             f"(nodes: {', '.join(self.nodes)})")
        return self._successors[node_id]

    @property
    def memory_keys(self) -> tuple[str, ...]:
        """The memory keys some node writes (``output_key``), in node order."""
        keys = (getattr(n, "output_key", None) for n in self.nodes.values())
        return tuple(dict.fromkeys(k for k in keys if k))


def _successor_map(
    nodes: Mapping[str, Node], edges: tuple[Edge, ...]
) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {node_id: [] for node_id in nodes}
    for node_id, node in nodes.items():
        if isinstance(node, RouterNode):
            out[node_id].extend(node.targets)
    for edge in edges:
        out.setdefault(edge.source, []).append(edge.target)
    return {k: tuple(v) for k, v in out.items()}
