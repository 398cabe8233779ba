"""The cache key rule and the cacheability rule.

Example:
    >>> from tinyllm.cache import cache_key, is_cacheable
    >>> params = {"prompt": "What is 2+2?", "temperature": 0, "max_tokens": 8}
    >>> is_cacheable(params)
    True
    >>> cache_key("ollama", "gemma3:270m", params) == cache_key(
    ...     "ollama", "gemma3:270m", {"max_tokens": 8, "temperature": 0.0,
    ...                               "prompt": "What is 2+2?"})
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["KEY_VERSION", "cache_key", "is_cacheable"]

#: Part of every key: bump it when the key material changes, so old entries are never
#: read back under the new rule (they simply expire).
KEY_VERSION = 1


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, so equal requests serialise to equal bytes."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        # 0 and 0.0 (and 1 and 1.0) are the same parameter to every backend; Python's
        # json would write them differently and split one entry into two.
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be str, got {k!r}")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where} must hold JSON values (str, int, float, bool, None, lists, dicts), "
        f"got {type(value).__name__}"
    )


def cache_key(provider: str, model: str, request: Mapping[str, Any]) -> str:
    """The sha256 hex digest of a canonical JSON of ``provider``, ``model`` and ``request``.

    ``request`` is the full parameter set of the call (prompt or messages, system,
    temperature, top_p, max_tokens, stop, seed, options, ...): any change of any value
    gives a different key; the order of keys does not matter, nor ``0`` against
    ``0.0``, and a parameter set to None counts as not given (every backend treats a
    null parameter as its default).

    Example:
        >>> len(cache_key("openai", "gpt-4o-mini", {"messages": [], "temperature": 0}))
        64
    """
    for name, value in (("provider", provider), ("model", model)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty str, got {value!r}")
    if not isinstance(request, Mapping):
        raise TypeError(f"request must be a mapping of parameters, got {type(request).__name__}")
    params = _canonical({k: v for k, v in request.items() if v is not None}, "request")
    material = {"v": KEY_VERSION, "provider": provider, "model": model, "request": params}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_cacheable(params: Mapping[str, Any]) -> bool:
    """True only for a deterministic call: ``temperature`` given and equal to 0.

    A missing temperature means the backend's default (0.7-1.0 for most), which samples,
    so it is not cacheable. ``temperature`` is read at the top level, else from an
    ``options`` mapping (Ollama's shape). A call with ``stream`` true is not cacheable:
    the model clients cache non-streamed calls only (a streamed answer's timing is the
    point of streaming, and replaying it would fake TTFT and inter-token metrics).

    Example:
        >>> is_cacheable({"prompt": "hi", "temperature": 0.0})
        True
        >>> is_cacheable({"prompt": "hi"}), is_cacheable({"prompt": "hi", "temperature": 0.2})
        (False, False)
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameters, got {type(params).__name__}")
    if params.get("stream"):
        return False
    temperature = params.get("temperature")
    options = params.get("options")
    if temperature is None and isinstance(options, Mapping):
        temperature = options.get("temperature")
    if temperature is None:
        return False
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a number, got {temperature!r}")
    return temperature == 0
