"""What an event means: its endpoint, whether it failed, how many tokens it produced,
what it cost and whether it met its SLO.

One place, read by the writer (roll-ups), the summary's exact edges and the exports,
so the three can never disagree.

**Endpoint rule** (used only when the event's metadata has no ``endpoint``):

1. Split the event type on ``_`` into words.
2. If there are at least two words and the last is ``stream``, drop it and remember
   to append ``/stream``.
3. If at least two words remain, the first one is the *product prefix*
   (``diffusion``, ``llm``, ...): drop it.
4. Join what remains with ``_``, then append ``/stream`` if step 2 said so.

So ``diffusion_generate`` -> ``generate``, ``diffusion_generate_stream`` ->
``generate/stream``, ``diffusion_infill_stream`` -> ``infill/stream``, ``generate``
-> ``generate``, ``generate_stream`` -> ``generate/stream``, ``stream`` -> ``stream``,
``acme_chat_completion`` -> ``chat_completion``. A multi-word name *without* a product
prefix (``chat_completion``) would lose its first word: give such events an explicit
``endpoint`` in their metadata (the lifecycle observer always does).

**Errors**: an event failed when its metadata says ``success: false``, or carries a
non-empty ``error`` or ``error_type``.

**Tokens**: ``token_count`` from the metadata when it is a whole number >= 0, else 0.
``estimate_tokens`` is for callers that only have the text.

**Spend** (``spend``): ``cost_usd`` from the metadata when it is a finite number >= 0
(an int or a float, not a bool): the request is *priced*; anything else (absent,
``None``, negative, NaN, text) makes it *unpriced*, its cost unknown rather than 0, as
``tinyllm_unpriced_requests_total`` counts it. ``slo_met`` when it is ``True`` or
``False``: the request was *judged* against its model's SLO (every objective that
applies; ``StoreObserver`` writes ``request.slo["all"]``) and met it or not; anything
else: not judged.

Example:
    >>> derive_endpoint("diffusion_generate_stream")
    'generate/stream'
    >>> estimate_tokens("twelve chars")
    3
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["classify", "derive_endpoint", "estimate_tokens", "spend"]

_STREAM = "stream"
#: Costs at or past this are not a price (and an int this big would not fit a float).
_COST_MAX = 1e300


def derive_endpoint(event_type: str) -> str:
    """The endpoint an event type stands for (the rule in the module docstring).

    Example:
        >>> derive_endpoint("diffusion_infill_stream"), derive_endpoint("generate")
        ('infill/stream', 'generate')
    """
    if not isinstance(event_type, str):
        raise TypeError(f"event_type must be a str, got {type(event_type).__name__}")
    words = event_type.split("_")
    stream = len(words) >= 2 and words[-1] == _STREAM
    if stream:
        words = words[:-1]
    if len(words) >= 2:
        words = words[1:]
    base = "_".join(words)
    return f"{base}/{_STREAM}" if stream else base


def estimate_tokens(text: str) -> int:
    """The diffusion service's token estimate, ``max(1, len(text) // 4)``: only when no real
    count is known.

    Example:
        >>> estimate_tokens(""), estimate_tokens("a" * 100)
        (1, 25)
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return max(1, len(text) // 4)


def classify(metadata: Mapping[str, Any] | None) -> tuple[str | None, bool, int]:
    """``(endpoint or None, is_error, tokens)`` read from an event's metadata.

    Example:
        >>> classify({"success": False, "token_count": 7})
        (None, True, 7)
    """
    if not metadata:
        return None, False, 0
    get = metadata.get
    endpoint = get("endpoint")
    # Identity tests first: this runs once per event written.
    if endpoint is not None and not (type(endpoint) is str and endpoint) and \
            not (isinstance(endpoint, str) and endpoint):
        endpoint = None
    error = get("success") is False or bool(get("error") or get("error_type"))
    raw: Any = get("token_count")
    kind = type(raw)
    tokens = 0  # bools, strings, fractions, NaN, negatives: not a count
    if kind is int:
        tokens = raw if raw > 0 else 0
    elif kind is float and math.isfinite(raw) and raw >= 0 and raw.is_integer():
        tokens = int(raw)
    return endpoint, error, tokens


def spend(metadata: Mapping[str, Any] | None) -> tuple[float | None, bool | None]:
    """``(cost_usd or None when unpriced, slo_met or None when not judged)`` read from an
    event's metadata (the rule in the module docstring).

    The writer inlines this rule in ``writer.fold_events`` (it runs once per event
    written); a test checks the two agree.

    Example:
        >>> spend({"cost_usd": 0.0025, "slo_met": True}), spend({"cost_usd": None})
        ((0.0025, True), (None, None))
    """
    if not metadata:
        return None, None
    raw: Any = metadata.get("cost_usd")
    kind = type(raw)
    cost = None
    if (kind is float or kind is int) and 0 <= raw < _COST_MAX:  # NaN fails the bound
        cost = float(raw)
    met: Any = metadata.get("slo_met")
    return cost, met if met is True or met is False else None
