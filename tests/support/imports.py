"""The import graph of a package, as a reader sees it: deferred (function-level) imports
count, imports under ``if TYPE_CHECKING:`` do not. Used by the layering tests."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def module_files(src: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of ``package`` under ``src``."""
    files: dict[str, Path] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str, files: dict[str, Path]) -> str | None:
    """The module an import of ``name`` loads last: a submodule if there is one, else
    the nearest package."""
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, files: dict[str, Path], package: str) -> set[str]:
    """The modules of ``package`` that ``module`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                # The else branch runs: its statements are examined like any others.
                stack.append(ast.Module(body=child.orelse, type_ignores=[]))
                continue
            stack.append(child)
            targets: Iterable[str] = ()
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    here = module.split(".") if is_package(path) else module.split(".")[:-1]
                    here = here[: len(here) - (child.level - 1)]
                    base = ".".join([*here, base] if base else here)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in child.names]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    resolved = _resolve(target, files)
                    if resolved is not None and resolved != module:
                        found.add(resolved)
    return found


def import_graph(src: Path, package: str) -> tuple[dict[str, set[str]], dict[str, Path]]:
    """``({module: modules it imports}, {module: file})`` for ``package``."""
    files = module_files(src, package)
    return {m: imports_of(m, f, files, package) for m, f in files.items()}, files


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle: the strongly connected components of more than one module
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
