"""The ``metadata`` column's JSON, both ways: the writer's encoder and ``parse_metadata``.

orjson where it gives the same answer as the stdlib ``json`` module, the stdlib where it
would not (non-str keys, ints past 64 bits, NaN literals): the stored text is always
valid JSON, and reading it back gives what ``json.loads`` would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

__all__ = ["parse_metadata"]


def _make_encoder() -> Callable[[Any], str]:
    """``encode(obj) -> str``: JSON like ``json.dumps(obj, default=str, ensure_ascii=False)``
    (compact: orjson's separators).

    ``json.dumps`` builds a new C encoder object on every call; for a metadata dict of a
    few keys that set-up cost more than the encoding (measured: ~40 % of the call). One
    encoder, built once and called directly, does the same work without it. No cycle
    check: redaction hands over a fresh tree, and a cyclic one fails its event alone.
    """
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the _json accelerator
        return json.JSONEncoder(default=str, ensure_ascii=False, check_circular=False).encode
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
    # skipkeys, allow_nan): what JSONEncoder(default=str, ensure_ascii=False,
    # check_circular=False) hands the C encoder.
    encoder = make(None, str, _json_encoder.encode_basestring, None, ": ", ", ", False,
                   False, True)
    join = "".join

    def stdlib(obj: Any) -> str:
        return join(encoder(obj, 0))

    try:
        import orjson
    except ImportError:  # pragma: no cover - a dependency; kept optional for embedders
        return stdlib
    dumps, fallback_errors = orjson.dumps, (TypeError, orjson.JSONEncodeError)
    options = orjson.OPT_NON_STR_KEYS

    def encode(obj: Any) -> str:
        # orjson encodes a metadata dict in ~0.7 us against the C encoder's ~5 us: the
        # biggest share of the writer's GIL-bound work. Plain dumps() first: passing
        # default= and option= costs another ~0.25 us per call, and only a dict with
        # non-str keys or values orjson does not know needs them. What orjson refuses
        # even then (an int past 64 bits; NaN is fine: it writes null) goes through the
        # stdlib encoder, so the stored text is always valid JSON and no event is lost.
        try:
            return dumps(obj).decode()
        except fallback_errors:
            pass
        try:
            return dumps(obj, default=str, option=options).decode()
        except fallback_errors:
            return stdlib(obj)

    return encode


#: orjson reads an int outside [-2**63, 2**64) as a float: a float at or past these
#: bounds may have been such an int (NaN, compared, is caught too).
_I64_MIN, _U64_END = -(2.0**63), 2.0**64


def _no_wide_floats(obj: Any) -> bool:
    """False when ``obj`` (parsed JSON) holds a float orjson may have made of a wide int."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if not _I64_MIN < item < _U64_END:
                return False
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
    return True


def _make_loads() -> Callable[[str], Any]:
    try:
        import orjson
    except ImportError:  # pragma: no cover - a dependency; kept optional for embedders
        return json.loads
    fast, stdlib, refused = orjson.loads, json.loads, (orjson.JSONDecodeError, UnicodeError)

    def loads(text: str) -> Any:
        # orjson plus the check reads a metadata dict in 1.6 us, the stdlib in 3.3. The
        # stdlib reads what orjson refuses (NaN/Infinity literals, which the stdlib
        # writes; lone surrogates) and any text whose result holds a float past 64-bit
        # int range, because orjson reads an int past 64 bits as a float: both read the
        # same objects.
        try:
            obj = fast(text)
        except refused:
            return stdlib(text)
        return obj if _no_wide_floats(obj) else stdlib(text)

    return loads


_loads = _make_loads()


def parse_metadata(text: str | None) -> Any:
    """A stored ``metadata`` column back as an object; unparsable text as ``None``.

    Example:
        >>> parse_metadata('{"token_count": 3, "t": NaN}')["token_count"], parse_metadata("{")
        (3, None)
    """
    if not text:
        return None
    try:
        return _loads(text)
    except ValueError:
        return None
