"""Reading a text file a user named (a graph, a configuration): one message per failure.

Example:
    >>> read_text("/nonexistent.yaml")
    Traceback (most recent call last):
    ...
    tinyllm._files.FileProblem: /nonexistent.yaml: no such file
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["FileProblem", "read_mapping", "read_text"]


class FileProblem(ValueError):
    """A file that cannot be read as UTF-8 text; the message names it and why."""


def read_text(path: str | os.PathLike[str], *, missing_hint: str = "") -> str:
    """The UTF-8 text of ``path``, else ``FileProblem`` (``missing_hint`` is added to
    the message when there is no such file)."""
    shown = os.fspath(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileProblem(f"{shown}: no such file{missing_hint}") from None
    except IsADirectoryError:
        raise FileProblem(f"{shown}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    except OSError as exc:
        raise FileProblem(f"{shown}: cannot read: {exc.strerror or exc}") from None


def read_mapping(path: str | os.PathLike[str], *, what: str = "file") -> dict[str, Any]:
    """The YAML (or JSON, a subset of YAML) mapping in ``path``, else ``FileProblem``
    naming the file, the line and what a valid ``what`` looks like.

    Example:
        >>> read_mapping("/nonexistent.yaml", what="price file")
        Traceback (most recent call last):
        ...
        tinyllm._files.FileProblem: /nonexistent.yaml: no such file
    """
    import yaml  # only when a file is read: `import tinyllm` stays cheap

    shown = os.fspath(path)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise FileProblem(f"{shown}: {where}: not valid YAML or JSON: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise FileProblem(f"{shown}: a {what} must be a mapping at the top level, got "
                          f"{type(data).__name__}")
    return data
