"""Graphs: small YAML files of model, router, transform and exit nodes, and their executor.

Example:
    >>> from tinyllm.graph import load_graph, run_graph
    >>> graph = load_graph("examples/graphs/router.yaml")  # doctest: +SKIP
    >>> result = run_graph(graph, "calculate 2+2", on_token=print)  # doctest: +SKIP
    >>> result.output, result.path  # doctest: +SKIP

``load_graph`` rejects an invalid graph before anything runs, with a ``GraphError``
naming the file, the node and the reason. The executor feeds the node, graph and
memory metric families, opens a span per graph and per node, and emits execution
events. See docs/graphs.md for the file format.
"""

from tinyllm.graph.builtin import BUILTIN_GRAPHS, builtin_graph
from tinyllm.graph.executor import (
    ClientFactory,
    GraphCompletion,
    GraphExecutor,
    GraphModelClient,
    GraphResult,
    TokenCallback,
    arun_graph,
    default_client_factory,
    run_graph,
)
from tinyllm.graph.loader import TRANSFORM_OPS, graph_from_dict, parse_graph
from tinyllm.graph.memory import GraphMemory
from tinyllm.graph.model import (
    DEFAULT_MAX_STEPS,
    NODE_TYPES,
    PROVIDERS,
    ClientSpec,
    Edge,
    ExitNode,
    Graph,
    GraphError,
    GraphExecutionError,
    ModelNode,
    Node,
    RouterNode,
    RouteRule,
    TransformNode,
)
from tinyllm.graph.sources import load_graph
from tinyllm.graph.templates import Template

__all__ = [
    "BUILTIN_GRAPHS",
    "DEFAULT_MAX_STEPS",
    "NODE_TYPES",
    "PROVIDERS",
    "TRANSFORM_OPS",
    "ClientFactory",
    "ClientSpec",
    "Edge",
    "ExitNode",
    "Graph",
    "GraphCompletion",
    "GraphError",
    "GraphExecutionError",
    "GraphExecutor",
    "GraphMemory",
    "GraphModelClient",
    "GraphResult",
    "ModelNode",
    "Node",
    "RouteRule",
    "RouterNode",
    "Template",
    "TokenCallback",
    "TransformNode",
    "arun_graph",
    "builtin_graph",
    "default_client_factory",
    "graph_from_dict",
    "load_graph",
    "parse_graph",
    "run_graph",
]
