"""Runs a graph: walks its nodes from the entry to an exit, observing every step.

Per node: ``collector.track_node_execution`` (count, duration, errors by type), a
``node_execution`` span (``node_id``, ``node_type``, ``graph_id``), an event
``node.execution.completed``/``failed`` (category ``execution``) and a debug log line.
Per run: ``collector.track_graph_execution`` (count by status, duration), a
``graph_execution`` span (``graph_id``) and the events ``graph.execution.started``,
``completed`` and ``failed``. Exit nodes are where a run stops, not work: they appear in
the path but are not executed, so they add no node metrics.

Failures propagate as raised (a ``ModelError`` stays a ``ModelError``, so a CLI prints
its one line), after being recorded, with a note naming the graph and node. Breaking a
runtime bound (``max_steps``, a node's ``max_visits``) raises ``GraphExecutionError``.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.graph import parse_graph, run_graph
    >>> from tinyllm.metrics import MetricsCollector
    >>> graph = parse_graph('''
    ... name: shout
    ... nodes:
    ...   up: {type: transform, op: upper}
    ...   done: {type: exit}
    ... edges: [{from: up, to: done}]
    ... ''')
    >>> result = run_graph(graph, "hello", collector=MetricsCollector(registry=CollectorRegistry()))
    >>> result.output, result.path
    ('HELLO', ('up', 'done'))
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from tinyllm.errors import classify_error
from tinyllm.events import EventCategory, EventSeverity, emit_event
from tinyllm.graph._clients import (
    ClientFactory,
    GraphCompletion,
    GraphModelClient,
    default_client_factory,
)
from tinyllm.graph.memory import GraphMemory
from tinyllm.graph.model import (
    ClientSpec,
    ExitNode,
    Graph,
    GraphExecutionError,
    ModelNode,
    Node,
    RouterNode,
    TransformNode,
)
from tinyllm.graph.sources import load_graph
from tinyllm.graph.templates import Template
from tinyllm.logging import get_logger
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector
from tinyllm.telemetry import trace_span

__all__ = [
    "ClientFactory",
    "GraphCompletion",
    "GraphExecutor",
    "GraphModelClient",
    "GraphResult",
    "TokenCallback",
    "arun_graph",
    "default_client_factory",
    "run_graph",
]

_logger = get_logger("tinyllm.graph")

#: Receives each streamed piece of the final answer. Runs on the executing thread.
TokenCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class GraphResult:
    """What a run produced.

    Attributes:
        output: the value produced before the exit node.
        path: node ids in visiting order, the exit included.
        memory: graph memory at the end (``output_key`` values).
        durations: seconds spent per node id (summed over visits); exits not included.
        streamed: True when ``output`` already went to ``on_token`` piece by piece.
        graph: the graph's name.
        duration_s: seconds for the whole run.

    Example:
        >>> r = GraphResult("4", ("math", "done"), {}, {"math": 0.1}, False, "qa", 0.1)
        >>> r.output, r.path[-1]
        ('4', 'done')
    """

    output: str
    path: tuple[str, ...]
    memory: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    streamed: bool = False
    graph: str = "default"
    duration_s: float = 0.0


#: The generation settings ``defaults=`` may give.
_DEFAULT_KEYS = ("max_tokens", "temperature")


def _check_defaults(defaults: Any) -> dict[str, Any]:
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise TypeError(f"defaults must be a mapping like {{'max_tokens': 64}} or None, "
                        f"got {type(defaults).__name__}")
    out: dict[str, Any] = {}
    for key, value in defaults.items():
        if key not in _DEFAULT_KEYS:
            raise ValueError(f"defaults key {key!r} is not valid; valid: "
                             f"{', '.join(_DEFAULT_KEYS)}")
        if value is None:
            continue
        if key == "max_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"defaults['max_tokens'] must be an int >= 1, got {value!r}")
        elif (isinstance(value, bool) or not isinstance(value, int | float)
              or not math.isfinite(value) or value < 0):
            raise ValueError(f"defaults['temperature'] must be a number >= 0, got {value!r}")
        out[key] = value
    return out


def _check_graph(graph: Any) -> Graph:
    if isinstance(graph, Graph):
        return graph
    if isinstance(graph, str | os.PathLike):
        return load_graph(graph)
    raise TypeError(f"graph must be a Graph, a graph file path or a built-in graph name, "
                    f"got {type(graph).__name__}")


class GraphExecutor:
    """Runs one graph, any number of times, caching model clients between runs.

    Args:
        graph: a ``Graph``, a graph file path, or a built-in name (``"default"``).
        client_factory: makes a client per ``ClientSpec`` (provider, model, base_url);
            default ``default_client_factory``. Each distinct spec is made once per
            executor, on first use, so unused branches load no model.
        collector: where metrics go; default the process-wide collector at run time.
        defaults: ``max_tokens``/``temperature`` for model nodes that do not set their
            own (a node's value wins; ``None`` leaves it to the client).

    Example:
        >>> executor = GraphExecutor("default")
        >>> executor.graph.name
        'default'
    """

    def __init__(
        self,
        graph: Graph | str | os.PathLike[str],
        *,
        client_factory: ClientFactory | None = None,
        collector: MetricsCollector | None = None,
        defaults: Mapping[str, int | float | None] | None = None,
    ) -> None:
        self.graph = _check_graph(graph)
        self._defaults = _check_defaults(defaults)
        if client_factory is not None and not callable(client_factory):
            raise TypeError(f"client_factory must be callable (ClientSpec -> client) or "
                            f"None, got {client_factory!r}")
        if collector is not None and not isinstance(collector, MetricsCollector):
            raise TypeError(f"collector must be a MetricsCollector or None, got {collector!r}")
        self._factory: ClientFactory = client_factory or default_client_factory
        self._collector = collector
        self._clients: dict[ClientSpec, GraphModelClient] = {}
        self._clients_lock = threading.Lock()
        nodes = self.graph.nodes
        # Model nodes whose only next node is an exit: the ones whose answer is the
        # run's output, so the ones worth streaming.
        self._final = frozenset(
            node_id for node_id, node in nodes.items()
            if isinstance(node, ModelNode)
            and all(isinstance(nodes[n], ExitNode) for n in self.graph.successors(node_id))
        )

    # -- running -------------------------------------------------------------------------
    def run(self, query: str, *, on_token: TokenCallback | None = None) -> GraphResult:
        """Run the graph on ``query``; see ``run_graph``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if not query.strip():
            raise ValueError("query must be non-empty text")
        if on_token is not None and not callable(on_token):
            raise TypeError(f"on_token must be callable (str -> None) or None, got {on_token!r}")
        collector = self._collector if self._collector is not None else get_metrics_collector()
        name = self.graph.name
        run = _Run(self, collector, query, on_token)
        start = perf_counter()
        with collector.track_graph_execution(name), \
                trace_span("graph_execution", attributes={"graph_id": name}):
            _event("graph.execution.started", EventSeverity.INFO,
                   f"Graph {name!r} started", {"graph_id": name, "entry": self.graph.entry})
            try:
                output = run.walk()
            except BaseException as exc:
                _event("graph.execution.failed", EventSeverity.ERROR,
                       f"Graph {name!r} failed at node {run.current!r}",
                       {"graph_id": name, "node_id": run.current,
                        "error_type": classify_error(exc), "error": type(exc).__name__,
                        "duration_ms": _ms(perf_counter() - start), "steps": len(run.path)})
                raise
            elapsed = perf_counter() - start
            _event("graph.execution.completed", EventSeverity.INFO,
                   f"Graph {name!r} completed", {"graph_id": name,
                                                 "duration_ms": _ms(elapsed),
                                                 "steps": len(run.path), "path": run.path})
        return GraphResult(output=output, path=tuple(run.path), memory=run.memory.snapshot(),
                           durations=run.durations, streamed=run.streamed, graph=name,
                           duration_s=elapsed)

    async def arun(self, query: str, *, on_token: TokenCallback | None = None) -> GraphResult:
        """``run`` on a worker thread, so the event loop keeps running.

        ``on_token`` is called on that worker thread. Cancelling the awaiting task does
        not stop a model call already under way (the clients' timeouts bound it).
        """
        return await asyncio.to_thread(self.run, query, on_token=on_token)

    def _client(self, spec: ClientSpec) -> GraphModelClient:
        client = self._clients.get(spec)
        if client is not None:
            return client
        with self._clients_lock:
            client = self._clients.get(spec)
            if client is None:
                client = self._clients[spec] = self._factory(spec)
            return client


class _Run:
    """The state of one run: where it is, what it has produced, how long nodes took."""

    def __init__(
        self, executor: GraphExecutor, collector: MetricsCollector, query: str,
        on_token: TokenCallback | None,
    ) -> None:
        self.executor = executor
        self.graph = executor.graph
        self.collector = collector
        self.query = query
        self.on_token = on_token
        self.memory = GraphMemory(collector)
        self.path: list[str] = []
        self.durations: dict[str, float] = {}
        self.streamed = False
        self.current = self.graph.entry

    def walk(self) -> str:
        graph = self.graph
        visits: Counter[str] = Counter()
        value = self.query
        while True:
            node_id = self.current
            node = graph.nodes[node_id]
            if len(self.path) >= graph.max_steps:
                raise GraphExecutionError(
                    f"graph {graph.name!r}: node {node_id!r}: max_steps={graph.max_steps} "
                    f"reached (path so far: {' -> '.join(self.path)})",
                    graph=graph.name, node_id=node_id)
            visits[node_id] += 1
            if node.max_visits is not None and visits[node_id] > node.max_visits:
                raise GraphExecutionError(
                    f"graph {graph.name!r}: node {node_id!r}: visited more than "
                    f"max_visits={node.max_visits} times", graph=graph.name, node_id=node_id)
            self.path.append(node_id)
            if isinstance(node, ExitNode):
                return value
            value, self.current = self.step(node, value)

    def step(self, node: Node, value: str) -> tuple[str, str]:
        """Execute ``node`` on the current ``value``: (its output, the next node id)."""
        graph, node_id = self.graph, node.id
        attributes = {"node_id": node_id, "node_type": node.type, "graph_id": graph.name}
        start = perf_counter()
        with self.collector.track_node_execution(node_id, graph.name), \
                trace_span("node_execution", attributes=attributes):
            try:
                output, nxt = self.execute(node, value)
            except BaseException as exc:
                elapsed = perf_counter() - start
                self.durations[node_id] = self.durations.get(node_id, 0.0) + elapsed
                error_type = classify_error(exc)
                _event("node.execution.failed", EventSeverity.ERROR,
                       f"Node {node_id!r} failed", {
                           **attributes, "duration_ms": _ms(elapsed),
                           "error_type": error_type, "error": type(exc).__name__})
                _logger.debug("node failed", **attributes, duration_ms=_ms(elapsed),
                              error_type=error_type)
                if isinstance(exc, Exception):
                    exc.add_note(f"in graph {graph.name!r} ({graph.source}), node {node_id!r}")
                raise
            elapsed = perf_counter() - start
            self.durations[node_id] = self.durations.get(node_id, 0.0) + elapsed
            _event("node.execution.completed", EventSeverity.INFO,
                   f"Node {node_id!r} completed", {**attributes, "duration_ms": _ms(elapsed)})
            _logger.debug("node executed", **attributes, duration_ms=_ms(elapsed), next=nxt)
        return output, nxt

    def execute(self, node: Node, value: str) -> tuple[str, str]:
        if isinstance(node, ModelNode):
            output = self.ask(node, node.prompt, value, {},
                              stream=self.on_token is not None
                              and node.id in self.executor._final)
            nxt = self.graph.successors(node.id)[0]
        elif isinstance(node, TransformNode):
            output = node.apply(value, lambda t: self.render(t, value, {}))
            nxt = self.graph.successors(node.id)[0]
        else:
            assert isinstance(node, RouterNode)  # exits never get here
            return value, self.route(node, value)
        key = node.output_key
        if key is not None:
            self.memory.set(key, output)
        return output, nxt

    def render(self, template: Template, value: str, extra: dict[str, str]) -> str:
        return template.render({"query": self.query, "input": value, **extra}, self.memory.get)

    def ask(
        self, node: ModelNode | RouterNode, template: Template, value: str,
        extra: dict[str, str], *, stream: bool,
    ) -> str:
        prompt = self.render(template, value, extra)
        client = self.executor._client(node.client_spec)
        graph = self.graph.name
        defaults = self.executor._defaults
        max_tokens = node.max_tokens if node.max_tokens is not None else defaults.get(
            "max_tokens")
        temperature = node.temperature if node.temperature is not None else defaults.get(
            "temperature")
        # Passed only when set, so a client without stop sequences is not bothered.
        params: dict[str, Any] = {"stop": list(node.stop)} if node.stop else {}
        if not stream:
            return client.generate(prompt, graph=graph, max_tokens=max_tokens,
                                   temperature=temperature, **params).text
        on_token = self.on_token
        assert on_token is not None
        pieces: list[str] = []
        iterator = client.stream(prompt, graph=graph, max_tokens=max_tokens,
                                 temperature=temperature, **params)
        try:
            for piece in iterator:
                pieces.append(piece)
                on_token(piece)
        finally:
            # Closed now rather than at garbage collection, so a client's request
            # accounting ends when we stop reading (on_token raising, for one).
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self.streamed = True
        return "".join(pieces)

    def route(self, node: RouterNode, value: str) -> str:
        if node.mode == "rules":
            for rule in node.rules:
                if rule.matches(value):
                    return rule.to
            return node.default
        assert node.prompt is not None  # the loader gives model routers a prompt
        answer = self.ask(node, node.prompt, value, {"routes": ", ".join(node.routes)},
                          stream=False)
        return _match_route(answer, node.routes) or node.default


def _match_route(answer: str, routes: tuple[str, ...]) -> str | None:
    """The route named earliest in ``answer`` (whole words, any case); None if none is.

    Example:
        >>> _match_route(" Math, probably.", ("explain", "math"))
        'math'
    """
    text = answer.casefold()
    best: tuple[int, int, str] | None = None
    for route in routes:
        found = re.search(rf"(?<![\w-]){re.escape(route.casefold())}(?![\w-])", text)
        if found is not None:
            candidate = (found.start(), -len(route), route)
            if best is None or candidate < best:
                best = candidate
    return None if best is None else best[2]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _event(event_type: str, severity: EventSeverity, message: str, data: dict[str, Any]) -> None:
    outcome = event_type.rsplit(".", 1)[1]  # started, completed, failed
    tags = ["execution", {"completed": "success", "failed": "failure"}.get(outcome, outcome)]
    emit_event(event_type, EventCategory.EXECUTION, severity, message, data, tags=tags)


def run_graph(
    graph: Graph | str | os.PathLike[str],
    query: str,
    *,
    client_factory: ClientFactory | None = None,
    collector: MetricsCollector | None = None,
    on_token: TokenCallback | None = None,
    defaults: Mapping[str, int | float | None] | None = None,
) -> GraphResult:
    """Run ``graph`` on ``query`` and return its ``GraphResult``.

    Args:
        graph: a ``Graph``, a graph file path, or a built-in name (``"default"``).
        query: the user's query (``{query}`` in templates; the first node's input).
        client_factory: makes model clients; default ``default_client_factory``.
        collector: metrics destination; default the process-wide collector.
        on_token: when given, a model node whose only next node is an exit streams its
            answer, piece by piece, to ``on_token`` (``result.streamed`` is then True);
            other model nodes generate whole answers. If it raises, the run fails.
        defaults: ``max_tokens``/``temperature`` for model nodes that set none
            (e.g. from ``tinyllm run --max-tokens``); a node's own value wins.

    Raises:
        GraphError: the graph file is invalid (loading a path or name).
        GraphExecutionError: ``max_steps`` or a node's ``max_visits`` was exceeded.
        Exception: a node's failure as raised (e.g. ``ModelError``), noted with the node.

    Example:
        >>> run_graph("default", "What is 2+2?").output  # doctest: +SKIP
        ' 4'
    """
    executor = GraphExecutor(graph, client_factory=client_factory, collector=collector,
                             defaults=defaults)
    return executor.run(query, on_token=on_token)


async def arun_graph(
    graph: Graph | str | os.PathLike[str],
    query: str,
    *,
    client_factory: ClientFactory | None = None,
    collector: MetricsCollector | None = None,
    on_token: TokenCallback | None = None,
    defaults: Mapping[str, int | float | None] | None = None,
) -> GraphResult:
    """``run_graph`` off the event loop (on a worker thread, context propagated).

    Example:
        >>> result = await arun_graph("default", "What is 2+2?")  # doctest: +SKIP
    """
    executor = GraphExecutor(graph, client_factory=client_factory, collector=collector,
                             defaults=defaults)
    return await executor.arun(query, on_token=on_token)
