"""The house has layers: each module imports only from its own layer or the ones below,
deferred imports counted, and no import circle exists anywhere in tinyllm.

The layers are read from docs/architecture.md (the table between the ``layers``
markers), so the document and the code cannot drift apart: a new module must be put in
a layer there, and an import that climbs a layer fails here.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.support.imports import circles, import_graph, is_package

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> list[tuple[str, list[str]]]:
    """``[(layer, [module prefixes])]`` from the architecture doc, lowest layer first."""
    text = DOC.read_text()
    found = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert found, "docs/architecture.md has no <!-- layers --> table"
    rows = []
    for line in found.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[0] in ("layer", "") or set(cells[0]) <= {"-", " "}:
            continue
        rows.append((cells[0], re.findall(r"`(tinyllm[\w.]*)`", cells[1])))
    assert rows, "the layers table is empty"
    return rows[::-1]  # the doc lists the top layer first


def layers_of(edges: dict[str, set[str]], files: dict[str, Path]) -> dict[str, int]:
    """Each module's layer (0 = core). A package's ``__init__`` (a facade that
    re-exports) stands where the highest thing it imports stands."""
    table = layer_table()
    rank: dict[str, int] = {}
    unplaced = []
    for module, path in files.items():
        if is_package(path):
            continue
        matches = [(len(prefix), level) for level, (_, prefixes) in enumerate(table)
                   for prefix in prefixes
                   if module == prefix or module.startswith(prefix + ".")]
        if not matches:
            unplaced.append(module)
            continue
        rank[module] = max(matches)[1]
    assert not unplaced, (
        f"modules in no layer (add them to the table in docs/architecture.md): {unplaced}")
    facades = [m for m, path in files.items() if is_package(path)]
    for _ in facades:  # facades importing facades settle within len(facades) rounds
        for facade in facades:
            rank[facade] = max((rank.get(dep, 0) for dep in edges[facade]), default=0)
    return rank


def test_no_import_circle_among_tinyllms_modules() -> None:
    edges, _ = import_graph(SRC, "tinyllm")
    assert circles(edges) == []


def test_every_import_goes_down_or_sideways_never_up() -> None:
    edges, files = import_graph(SRC, "tinyllm")
    rank = layers_of(edges, files)
    names = [name for name, _ in layer_table()]
    climbing = sorted(
        f"{a} ({names[rank[a]]}) imports {b} ({names[rank[b]]})"
        for a, deps in edges.items() for b in deps if rank[b] > rank[a]
    )
    assert climbing == []


def test_the_core_knows_no_sink_and_only_the_composition_root_knows_them_all() -> None:
    edges, files = import_graph(SRC, "tinyllm")
    rank = layers_of(edges, files)
    names = [name for name, _ in layer_table()]
    assert names[:2] == ["core", "sinks"] and "composition" in names
    sinks = ("tinyllm.logging", "tinyllm.telemetry", "tinyllm.events", "tinyllm.store")

    def sinks_known(module: str) -> set[str]:
        return {s for s in sinks for dep in edges[module] if dep == s or dep.startswith(s + ".")}

    core = [m for m in files if rank[m] == 0]
    assert "tinyllm.lifecycle" in core and "tinyllm.health" in core
    assert all(not sinks_known(m) for m in core)
    knows_all = sorted(m for m in files if rank[m] < names.index("surfaces")
                       and not is_package(files[m]) and sinks_known(m) == set(sinks))
    assert knows_all == ["tinyllm._composition"]


def test_the_analysis_counts_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    # The checks above are only as good as the graph: a circle hidden in a function body
    # must be found, and one that exists only for the type checker must not.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text(textwrap.dedent("""
        def late():
            from pkg.a import thing
            return thing
    """))
    (pkg / "c.py").write_text("from pkg import d\n")
    (pkg / "d.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from pkg.c import Thing
        else:
            from pkg import e
    """))
    (pkg / "e.py").write_text("from . import a\n")
    edges, _ = import_graph(tmp_path, "pkg")
    assert edges["pkg.d"] == {"pkg.e"} and edges["pkg.e"] == {"pkg.a"}
    assert circles(edges) == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize("module", ["tinyllm.lifecycle", "tinyllm.health"])
def test_core_modules_have_no_sink_imports_even_deferred(module: str) -> None:
    # The two that used to wire sinks themselves (the lifecycle attached the log, event
    # and store observers; the health registry knew each pillar's check).
    edges, _ = import_graph(SRC, "tinyllm")
    assert all(dep.startswith(("tinyllm.metrics.", "tinyllm._", "tinyllm.errors",
                               "tinyllm.settings", "tinyllm.accounting"))
               for dep in edges[module]), edges[module]


FIRST_IMPORT = textwrap.dedent("""
    import importlib, os, sys, traceback

    modules = sys.argv[1:]

    def start(work):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                out, code = work() or "", 0
            except BaseException:
                out, code = traceback.format_exc(), 1
            os.write(write, out.encode())
            os._exit(code)
        os.close(write)
        return pid, read

    def finish(pid, read):
        with os.fdopen(read) as f:
            out = f.read()
        return os.waitpid(pid, 0)[1] == 0, out

    def everything():
        for m in modules:
            importlib.import_module(m)
        return " ".join({n.split(".")[0] for n in sys.modules} - {"tinyllm", "__main__"})

    ok, third_party = finish(*start(everything))
    if not ok:
        print(f"== importing every module in turn\\n{third_party}")
        sys.exit(0)
    for name in third_party.split():  # so that each child below imports only tinyllm
        try:
            importlib.import_module(name)
        except Exception:
            pass
    running = []
    for m in modules + [None] * 2:
        if m is not None:
            running.append((m, start(lambda m=m: importlib.import_module(m) and None)))
        if len(running) > (os.cpu_count() or 1) or (m is None and running):
            name, child = running.pop(0)
            ok, out = finish(*child)
            if not ok:
                print(f"== {name}\\n{out}")
    while running:
        name, child = running.pop(0)
        ok, out = finish(*child)
        if not ok:
            print(f"== {name}\\n{out}")
""")


def test_every_module_can_be_the_first_one_imported() -> None:
    # The static graph above cannot see Python's own order: importing a.b.c runs a and
    # a.b first. A package facade that re-exported a higher layer eagerly made
    # `import tinyllm.http.store` fail when it came before `import tinyllm.store`.
    # Each module is imported first in a process of its own (forked, third-party
    # libraries already loaded, so this takes seconds).
    import subprocess
    import sys

    _, files = import_graph(SRC, "tinyllm")
    modules = sorted(m for m in files if m != "tinyllm.__main__" and
                     not m.startswith("tinyllm.cli.__main__"))
    out = subprocess.run([sys.executable, "-c", FIRST_IMPORT, *modules], capture_output=True,
                         text=True, timeout=300, check=True)
    assert out.stdout == "", out.stdout[:4000]
