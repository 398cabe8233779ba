"""Zero-code instrumentation of the ``openai`` and ``ollama`` SDKs.

``instrument()`` wraps the SDKs' call methods so that every call is one lifecycle
request, exactly like a call through tinyllm's own clients: the same metrics, span,
log line and store row. An SDK not imported yet is patched the moment it is imported;
one not installed is skipped; one outside its supported releases is left alone with one
warning. ``uninstrument()`` puts the originals back. Both are idempotent.

Example:
    >>> import tinyllm
    >>> tinyllm.instrument()                                   # doctest: +SKIP
    {'openai': 'instrumented', 'ollama': 'instrumented'}
    >>> tinyllm.uninstrument()                                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from types import ModuleType

from tinyllm.instrumentation import ollama as _ollama
from tinyllm.instrumentation import openai as _openai
from tinyllm.instrumentation._call import FAULTS
from tinyllm.instrumentation._patch import Patches, after_import, in_range

__all__ = ["ENV", "FAULTS", "SDKS", "instrument", "instrument_from_env", "instrumented",
           "uninstrument"]

log = logging.getLogger("tinyllm.instrumentation")

#: The SDKs that can be instrumented.
SDKS = ("openai", "ollama")
#: The environment switch (``all``, or a comma-separated list of ``SDKS``; ``0``/empty: off).
ENV = "TINYLLM_INSTRUMENT"

_lock = threading.RLock()
_patches: dict[str, Patches] = {}
_pending: dict[str, Callable[[], None]] = {}
_warned: set[str] = set()


def instrument(openai: bool = True, ollama: bool = True, *,
               stream_usage: bool = True) -> dict[str, str]:
    """Observe every call of the chosen SDKs; returns each chosen SDK's state:
    ``instrumented``, ``pending`` (patched when imported), ``not installed``,
    ``unsupported <version>`` or ``failed`` (patching raised: undone, one warning).

    ``stream_usage``: on streamed openai calls, ask the server for token usage
    (``stream_options.include_usage``) when the caller did not, and hide the extra
    chunk from the caller. Turn off for a server that rejects ``stream_options``.
    """
    chosen = [name for name, on in (("openai", openai), ("ollama", ollama)) if on]
    states: dict[str, str] = {}
    with _lock:
        for name in chosen:
            states[name] = _instrument_one(name, stream_usage)
    return states


def uninstrument(openai: bool = True, ollama: bool = True) -> None:
    """Put the chosen SDKs' original methods back (and drop pending import hooks)."""
    with _lock:
        for name, on in (("openai", openai), ("ollama", ollama)):
            if not on:
                continue
            cancel = _pending.pop(name, None)
            if cancel is not None:
                cancel()
            patches = _patches.pop(name, None)
            if patches is not None:
                patches.restore()


def instrumented() -> dict[str, str]:
    """Each SDK's state now: ``instrumented``, ``pending`` or ``off``."""
    with _lock:
        return {name: "instrumented" if name in _patches else
                "pending" if name in _pending else "off" for name in SDKS}


def instrument_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Instrument what ``$TINYLLM_INSTRUMENT`` names (``all``, ``1``, ``openai``,
    ``openai,ollama``...); nothing when it is unset, empty or ``0``.

    Example:
        >>> instrument_from_env({"TINYLLM_INSTRUMENT": "0"})
        {}
    """
    value = (os.environ if environ is None else environ).get(ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return {}
    if value in ("1", "all", "true", "yes", "on"):
        return instrument()
    names = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(SDKS))
    if unknown:
        log.warning("%s names %s; valid: all, or a comma-separated list of %s",
                    ENV, ", ".join(unknown), ", ".join(SDKS))
    return instrument(openai="openai" in names, ollama="ollama" in names)


def _instrument_one(name: str, stream_usage: bool) -> str:
    if name in _patches:
        return "instrumented"
    if name in _pending:
        return "pending"
    integration = _openai if name == "openai" else _ollama
    try:
        version = importlib.metadata.version(integration.DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    low, below = integration.SUPPORTED
    if not in_range(version, low, below):
        if name not in _warned:
            _warned.add(name)
            log.warning("tinyllm: %s %s is outside the supported releases (%s up to %s, "
                        "not included); it is left uninstrumented", name, version,
                        ".".join(map(str, low)), ".".join(map(str, below)))
        return f"unsupported {version}"

    def apply(module: ModuleType) -> None:
        with _lock:
            _pending.pop(name, None)
            if name in _patches:
                return
            patches = Patches()
            try:
                if name == "openai":
                    _openai.patch(module, patches, stream_usage=stream_usage)
                else:
                    _ollama.patch(module, patches)
            except Exception as exc:  # a release whose insides moved: leave it alone
                patches.restore()
                log.warning("tinyllm: instrumenting %s %s failed (%s: %s); it is left "
                            "uninstrumented", name, version, type(exc).__name__, exc)
                return
            _patches[name] = patches

    _pending[name] = lambda: None
    cancel = after_import(name, apply)
    if name in _patches:
        return "instrumented"
    if name in _pending:
        _pending[name] = cancel
        return "pending"
    return "failed"
