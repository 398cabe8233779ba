"""Where a graph comes from: a YAML file, or the name of a graph that ships with tinyllm.

Example:
    >>> load_graph("default").name
    'default'
"""

from __future__ import annotations

import os

from tinyllm._files import FileProblem, read_text
from tinyllm.graph.builtin import BUILTIN_GRAPHS, builtin_graph
from tinyllm.graph.loader import parse_graph
from tinyllm.graph.model import Graph, GraphError

__all__ = ["load_graph"]


def load_graph(source: str | os.PathLike[str]) -> Graph:
    """The graph in the YAML file ``source``, or the built-in graph of that name.

    A bare name of a built-in graph (``"default"``) gives the built-in; write
    ``./default`` for a file of that name.

    Raises:
        GraphError: the file is missing, unreadable or invalid; the message names the
            file, the node and the reason, one line per problem.
        TypeError: ``source`` is not a str or path.

    Example:
        >>> load_graph("default").name
        'default'
    """
    if not isinstance(source, str | os.PathLike):
        raise TypeError(f"source must be a str or path, got {type(source).__name__}")
    if isinstance(source, str) and source in BUILTIN_GRAPHS:
        return builtin_graph(source)
    shown = os.fspath(source)
    try:
        text = read_text(source, missing_hint=f" (built-in graphs: {', '.join(BUILTIN_GRAPHS)})")
    except FileProblem as exc:
        raise GraphError(str(exc), source=shown) from None
    return parse_graph(text, source=shown)
