"""Graphs that ship with tinyllm, written in the same YAML and checked by the same loader.

``default`` is one model node and an exit. Its prompt is the completion-shaped
``"Question: {query}\\nAnswer:"`` because the embedded model (Gemma 3 270M) is a small
base model, which continues such a prompt with an answer far more reliably than it
follows an instruction; it stops at ``"\\nQuestion:"``, where such a model would start
inventing the next question.

Example:
    >>> graph = builtin_graph("default")
    >>> list(graph.nodes), graph.nodes["answer"].prompt.text
    (['answer', 'done'], 'Question: {query}\\nAnswer:')
"""

from __future__ import annotations

import functools

from tinyllm.graph.loader import parse_graph
from tinyllm.graph.model import Graph

__all__ = ["BUILTIN_GRAPHS", "builtin_graph"]

_SOURCES: dict[str, str] = {
    "default": """\
name: default
description: One model node answering the query, then exit.
nodes:
  answer:
    type: model
    prompt: "Question: {query}\\nAnswer:"
    # A base model goes on to invent the next question; stop before it does.
    stop: ["\\nQuestion:"]
  done:
    type: exit
edges:
  - {from: answer, to: done}
""",
}

#: Names ``builtin_graph`` and ``load_graph`` accept.
BUILTIN_GRAPHS: tuple[str, ...] = tuple(sorted(_SOURCES))


@functools.cache
def builtin_graph(name: str = "default") -> Graph:
    """The built-in graph ``name`` (graphs are read-only, so one object is shared).

    Raises:
        ValueError: no built-in graph of that name; the message lists them.

    Example:
        >>> builtin_graph().name
        'default'
    """
    if name not in _SOURCES:
        raise ValueError(f"name={name!r} is not a built-in graph; valid: "
                         f"{', '.join(BUILTIN_GRAPHS)}")
    return parse_graph(_SOURCES[name], source=f"<builtin:{name}>")
