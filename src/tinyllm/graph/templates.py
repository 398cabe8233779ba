"""Prompt templates: ``{query}``, ``{input}``, ``{memory.KEY}``; ``{{``/``}}`` for braces.

Parsed once, when the graph is loaded, so a bad template fails before anything runs and
rendering is a join. Only plain names are allowed: no ``!r`` conversions, no ``:>10``
format specs, no attribute or index access (``str.format`` would let a template reach
into Python objects; ours only substitutes strings).

Example:
    >>> t = Template.parse("Question: {query}\\nNotes: {memory.notes}\\nAnswer:")
    >>> sorted(t.variables)
    ['memory.notes', 'query']
    >>> t.render({"query": "2+2?"}, lambda key: "be brief")
    'Question: 2+2?\\nNotes: be brief\\nAnswer:'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from string import Formatter

__all__ = ["MEMORY_PREFIX", "Template"]

#: Template variables starting with this read graph memory: ``{memory.answer}``.
MEMORY_PREFIX = "memory."

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and variable names, alternating.

    Example:
        >>> Template.parse("{input}!").render({"input": "hi"}, lambda key: "")
        'hi!'
    """

    text: str
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Parse ``text``; ValueError saying what is wrong with it.

        Example:
            >>> Template.parse("{query!r}")
            Traceback (most recent call last):
            ...
            ValueError: '{query!r}': conversions (!r) and format specs (:...) are not supported
        """
        if not isinstance(text, str):
            raise TypeError(f"template must be a str, got {type(text).__name__}")
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(Formatter().parse(text))
        except ValueError as exc:  # "Single '}' encountered in format string", ...
            raise ValueError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None))
                continue
            if conversion or spec:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (
                    f":{spec}" if spec else "") + "}"
                raise ValueError(
                    f"{shown!r}: conversions (!r) and format specs (:...) are not supported"
                )
            if not name:
                raise ValueError("'{}': an empty variable; name one, e.g. {query}")
            if name.startswith(MEMORY_PREFIX):
                key = name[len(MEMORY_PREFIX):]
                if not _NAME.match(key):
                    raise ValueError(f"'{{{name}}}': a memory key is letters, digits and _")
            elif not _NAME.match(name):
                raise ValueError(f"'{{{name}}}': not a variable name")
            parts.append((literal, name))
        return cls(text, tuple(parts))

    @property
    def variables(self) -> frozenset[str]:
        """The variable names used, e.g. ``{"query", "memory.notes"}``."""
        return frozenset(name for _, name in self.parts if name is not None)

    def render(self, values: Mapping[str, str], memory: Callable[[str], str]) -> str:
        """The text with ``values[name]`` for plain names and ``memory(key)`` for
        ``memory.KEY``; a name missing from ``values`` renders empty."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            if name.startswith(MEMORY_PREFIX):
                out.append(memory(name[len(MEMORY_PREFIX):]))
            else:
                out.append(values.get(name, ""))
        return "".join(out)
