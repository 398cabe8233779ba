"""``RedactionPolicy``: the three rules applied to a copy of a value, with the caches that
make the common case (keys and strings seen before) cheap."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tinyllm.redaction._rules import (
    NOT_CAPTURED,
    REDACTED,
    _builtin_redact_text,
    _is_content_name,
    _is_secret_name,
    _normalize,
)

__all__ = ["RedactionPolicy"]

_PLAIN, _SECRET, _CONTENT = 0, 1, 2
_KEY_CACHE_MAX = 4096
_PLACEHOLDER_RE: Final = re.compile(r"\[NOT CAPTURED(?:: \d+ (?:chars|items|keys))?\]")
# Strings up to this long that came out of redact_text unchanged are remembered as safe:
# event names, logger names and context values repeat endlessly in logs. Only *unchanged*
# strings are kept, so the cache never holds a secret.
_SAFE_CACHE_MAX_LEN = 96
_SAFE_CACHE_MAX = 4096


def _compile_patterns(patterns: Iterable[str | re.Pattern[str]], argument: str) -> list[
    re.Pattern[str]
]:
    if isinstance(patterns, str | bytes | re.Pattern):
        raise TypeError(f"{argument} must be an iterable of patterns, not a single pattern")
    compiled: list[re.Pattern[str]] = []
    for p in patterns:
        if isinstance(p, re.Pattern):
            if not isinstance(p.pattern, str):
                raise TypeError(f"{argument}: {p!r} is a bytes pattern; use a str pattern")
            compiled.append(p)
        elif isinstance(p, str):
            if not p:
                raise ValueError(f"{argument}: an empty pattern would match everywhere")
            try:
                compiled.append(re.compile(p))
            except re.error as exc:
                raise ValueError(
                    f"{argument}: {p!r} is not a valid regular expression: {exc}"
                ) from exc
        else:
            raise TypeError(
                f"{argument} items must be str or re.Pattern, got {type(p).__name__} {p!r}"
            )
    return compiled


class RedactionPolicy:
    """What to hide before anything is written: secret keys, secret-looking text, content.

    Args:
        extra_keys: more key names whose values are secrets (same matching as the built-in
            ones: case-insensitive, ``-``/``_`` alike).
        extra_patterns: regular expressions (str or compiled) for more secret-looking text;
            every match is replaced by ``[REDACTED]``.
        capture_content: record prompt/completion text (default: do not).

    Example:
        >>> policy = RedactionPolicy(extra_keys=["x-tenant-secret"], extra_patterns=[r"acct-\\d+"])
        >>> policy.redact({"X-Tenant-Secret": "s3", "note": "for acct-42"})
        {'X-Tenant-Secret': '[REDACTED]', 'note': 'for [REDACTED]'}
        >>> policy.is_secret_key("OPENAI_API_KEY")
        True
    """

    __slots__ = (
        "_extra_keys", "_key_cache", "_plain_keys", "_safe", "capture_content", "extra_patterns"
    )

    def __init__(
        self,
        extra_keys: Iterable[str] = (),
        extra_patterns: Iterable[str | re.Pattern[str]] = (),
        capture_content: bool = False,
    ) -> None:
        if isinstance(extra_keys, str):
            raise TypeError("extra_keys must be an iterable of key names, not a single string")
        keys: set[str] = set()
        for k in extra_keys:
            if not isinstance(k, str) or not k.strip():
                raise ValueError(f"extra_keys items must be non-empty strings, got {k!r}")
            keys.add(_normalize(k))
        if not isinstance(capture_content, bool):
            raise TypeError(f"capture_content must be True or False, got {capture_content!r}")
        self._extra_keys = frozenset(keys)
        self.extra_patterns: tuple[re.Pattern[str], ...] = tuple(
            _compile_patterns(extra_patterns, "extra_patterns")
        )
        self.capture_content = capture_content
        self._safe: set[str] = set()
        # Key -> _PLAIN/_SECRET/_CONTENT. Log keys repeat endlessly, so each is classified
        # once; bounded so that a stream of unique keys cannot grow it without limit.
        self._key_cache: dict[str, int] = {}
        # The cached keys whose kind is _PLAIN, as a set: is_clean() tests a whole dict's
        # keys against it in one C-level call.
        self._plain_keys: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"RedactionPolicy(extra_keys={sorted(self._extra_keys)!r}, "
            f"extra_patterns={[p.pattern for p in self.extra_patterns]!r}, "
            f"capture_content={self.capture_content!r})"
        )

    # -- keys ------------------------------------------------------------------------
    def _classify(self, key: str) -> int:
        kind = self._key_cache.get(key)
        if kind is not None:
            return kind
        norm = _normalize(key)
        if _is_secret_name(norm) or norm in self._extra_keys:
            kind = _SECRET
        elif _is_content_name(norm):
            kind = _CONTENT
        else:
            kind = _PLAIN
        if len(self._key_cache) < _KEY_CACHE_MAX:
            self._key_cache[key] = kind
            if kind == _PLAIN:
                self._plain_keys.add(key)
        return kind

    def is_secret_key(self, key: str) -> bool:
        """Whether the value under ``key`` is a secret (replaced by ``[REDACTED]``).

        Example:
            >>> policy = RedactionPolicy()
            >>> policy.is_secret_key("Proxy-Authorization"), policy.is_secret_key("max_tokens")
            (True, False)
        """
        if not isinstance(key, str):
            return False
        return self._classify(key) == _SECRET

    # -- text ------------------------------------------------------------------------
    def redact_text(self, text: str) -> str:
        """``text`` with every secret-looking substring replaced.

        Example:
            >>> RedactionPolicy().redact_text("key AKIAIOSFODNN7EXAMPLE in use")
            'key [REDACTED] in use'
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._text(text)

    def _text(self, text: str) -> str:
        if text in self._safe:
            return text
        out = _builtin_redact_text(text)
        for pattern in self.extra_patterns:
            out = pattern.sub(REDACTED, out)
        if out == text and len(text) <= _SAFE_CACHE_MAX_LEN:
            safe = self._safe
            if len(safe) >= _SAFE_CACHE_MAX:
                safe.clear()  # cheaper than LRU bookkeeping, and a miss only costs a scan
            safe.add(text)
        return out

    def is_clean(self, value: Any) -> bool:
        """True when ``redact(value)`` would equal ``value``, decided cheaply; else False.

        Only the commonest case is recognised: a ``dict`` whose keys this policy has
        already classified as plain (not secret, not content) and whose values are
        ``None``, bools, ints, floats, or strings it has already seen pass through
        unchanged. Anything else (nesting, new keys or strings, other types) answers
        False, which means "call :meth:`redact`", not "holds a secret". A caller that
        owns ``value`` may then keep it as is instead of taking a redacted copy.

        Example:
            >>> policy = RedactionPolicy()
            >>> event = {"token_count": 5, "alg": "entropy"}
            >>> policy.is_clean(event)  # keys and strings not seen yet
            False
            >>> policy.redact(event) == event, policy.is_clean(event)
            (True, True)
            >>> policy.is_clean({"api_key": "k"}), policy.is_clean({"token_count": [1]})
            (False, False)
        """
        # Measured: one C-level superset test for the keys, then a plain loop over the
        # values (building sets of the values' types cost more than it saved).
        if type(value) is not dict or not self._plain_keys.issuperset(value):
            return False
        safe = self._safe
        for v in value.values():
            t = type(v)
            if t is str:
                if v not in safe:
                    return False
            elif t is not float and t is not int and t is not bool and v is not None:
                return False
        return True

    # -- values ----------------------------------------------------------------------
    def redact(self, value: Any) -> Any:
        """A redacted copy of ``value``; dicts (any Mapping), lists and tuples are walked.

        Mappings come back as dicts, lists as lists, tuples (named ones too) as tuples,
        sets as sets; strings go through :meth:`redact_text`; other values are returned
        as they are.

        Example:
            >>> RedactionPolicy().redact([{"password": "p"}, ("Bearer abc",)])
            [{'password': '[REDACTED]'}, ('Bearer [REDACTED]',)]
        """
        return self._walk(value, False, 0)

    def _redact_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        # The logging processor's entry point: like redact(), but anything that a renderer
        # would turn into text with str()/repr() is turned into redacted text here, so an
        # object whose repr carries a secret cannot slip past the policy.
        return self._walk_mapping(event, True, 0)

    def _walk(self, value: Any, stringify: bool, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return value if value in self._safe else self._text(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if depth > 64:  # a cycle or absurd nesting: stop walking, keep nothing of it
            return REDACTED
        if isinstance(value, Mapping):
            return self._walk_mapping(value, stringify, depth + 1)
        if isinstance(value, list):
            return [self._walk(v, stringify, depth + 1) for v in value]
        if isinstance(value, tuple):
            items = [self._walk(v, stringify, depth + 1) for v in value]
            if hasattr(value, "_fields"):  # a namedtuple keeps its type
                return type(value)(*items)
            return tuple(items)
        if isinstance(value, set | frozenset):
            return type(value)(self._walk(v, stringify, depth + 1) for v in value)
        if isinstance(value, str):  # a str subclass (an enum.StrEnum, ...)
            return self._text(str(value))
        if stringify and not isinstance(value, int | float):
            if isinstance(value, bytes):
                return self._text(value.decode("utf-8", "replace"))
            try:
                text = str(value)
            except Exception:  # a user object's __str__ must not break a log call
                return f"<unprintable {type(value).__name__}>"
            return self._text(text)
        return value

    def _walk_mapping(
        self, value: Mapping[Any, Any], stringify: bool, depth: int
    ) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        cache = self._key_cache
        safe = self._safe
        for k, v in value.items():
            kind = cache.get(k)
            if kind is None:
                kind = self._classify(k) if type(k) is str else _PLAIN
            if kind == _PLAIN:
                # Inlined fast paths for what log events are mostly made of.
                t = type(v)
                if t is str:
                    out[k] = v if v in safe else self._text(v)
                elif t is int or t is float or t is bool or v is None:
                    out[k] = v
                else:
                    out[k] = self._walk(v, stringify, depth)
            elif kind == _SECRET:
                out[k] = v if v is None or v == "" else REDACTED
            elif self.capture_content:
                out[k] = self._walk(v, stringify, depth)
            else:
                out[k] = _placeholder(v)
        return out


def _placeholder(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        if _PLACEHOLDER_RE.fullmatch(value):  # already a placeholder: keep (idempotence)
            return value
        return f"{NOT_CAPTURED}: {len(value)} chars]"
    if isinstance(value, list | tuple):
        return f"{NOT_CAPTURED}: {len(value)} items]"
    if isinstance(value, Mapping):
        return f"{NOT_CAPTURED}: {len(value)} keys]"
    return f"{NOT_CAPTURED}]"
