"""Replacing an SDK's attributes and putting them back; versions; patching on import.

Example:
    >>> class Api:
    ...     def create(self):
    ...         return "sdk"
    >>> patches = Patches()
    >>> patches.replace(Api, "create", lambda original: lambda self: "ours+" + original(self))
    >>> Api().create()
    'ours+sdk'
    >>> patches.restore()
    >>> Api().create()
    'sdk'
    >>> release("3.57.0"), release("0.6.3rc1"), in_range("0.6.3", (0, 4), (0, 7))
    ((3, 57, 0), (0, 6, 3), True)
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__all__ = ["Patches", "after_import", "in_range", "release"]

_MISSING = object()


class Patches:
    """The attributes replaced on an SDK, kept to put back in reverse order."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self._saved)

    def replace(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        """Set ``owner.name`` to ``make(original)``. A class's own attribute is read from
        its ``__dict__`` (the plain function, not a bound method); an attribute the
        owner lacks (an older SDK) is skipped."""
        if isinstance(owner, type):
            original = owner.__dict__.get(name, _MISSING)
        else:
            original = getattr(owner, name, _MISSING)
        if original is _MISSING:
            return
        setattr(owner, name, make(original))
        self._saved.append((owner, name, original))

    def restore(self) -> None:
        """Put every original back (the newest replacement first)."""
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (pre-release tags dropped)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3]) or (0,)


def in_range(version: str, low: Sequence[int], below: Sequence[int]) -> bool:
    """Whether ``low <= version < below``."""
    found = release(version)
    return tuple(low) <= found < tuple(below)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` once the module ``name`` has finished importing."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.then = then
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, then, finder = spec.loader, self.then, self

        class _Then(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                module.__loader__ = loader  # as if we had never been here
                if finder in sys.meta_path:
                    sys.meta_path.remove(finder)
                then(module)

        spec.loader = _Then()
        return spec


def after_import(name: str, then: Callable[[ModuleType], None]) -> Callable[[], None]:
    """Call ``then(module)`` when ``name`` is imported: now if it already is, else right
    after its import finishes. Returns a function that cancels a pending hook."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
        return lambda: None
    finder = _AfterImport(name, then)
    sys.meta_path.insert(0, finder)

    def cancel() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    return cancel
