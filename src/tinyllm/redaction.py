"""One redaction policy for all that tinyllm records: logs, events, span attributes, metadata.

Example:
    >>> from tinyllm.redaction import RedactionPolicy
    >>> policy = RedactionPolicy()
    >>> policy.redact({"headers": {"Authorization": "Bearer sk-abc123"}, "prompt": "Hello"})
    {'headers': {'Authorization': '[REDACTED]'}, 'prompt': '[NOT CAPTURED: 5 chars]'}
    >>> policy.redact_text("curl -H 'Authorization: Bearer abc.def' https://u:hunter2@host/?token=x")
    "curl -H 'Authorization: Bearer [REDACTED]' https://u:[REDACTED]@host/?token=[REDACTED]"

Three rules, applied to a *copy* (the input is never changed):

1. **Secret keys.** A mapping key that names a credential (``authorization``, ``api_key``,
   ``password``, ``token``, ``cookie``, anything ending in ``_api_key``, ...; compared
   case-insensitively with ``-`` and ``_`` treated alike, and for dotted attribute names
   such as ``http.request.header.authorization`` by the last segment too) has its value
   replaced by ``[REDACTED]``, whatever its type. ``None`` and ``""`` stay as they are:
   they hold no secret, and "no key was sent" is worth seeing.
2. **Secret-looking text.** Every string, under any key, is scanned for ``Bearer <token>``
   (the word ``Bearer`` is kept), ``sk-...`` style API keys (and GitHub, Hugging Face,
   Slack, Stripe, Google and GitLab tokens), AWS access key ids, JWTs, basic-auth
   credentials in URLs (``https://user:[REDACTED]@host``), and ``name=value``,
   ``"name": "value"`` and ``Name: value`` pairs whose name is a secret key.
3. **Content.** Prompt and completion text is not recorded unless ``capture_content=True``
   (or ``TINYLLM_CAPTURE_CONTENT=true``), following OpenTelemetry's GenAI conventions.
   The value under a content key (``prompt``, ``completion``, ``messages``,
   ``gen_ai.input.messages``, ...) becomes ``[NOT CAPTURED: 5 chars]`` for a string,
   ``[NOT CAPTURED: 2 items]`` for a list or tuple, ``[NOT CAPTURED: 3 keys]`` for a
   mapping, ``[NOT CAPTURED]`` otherwise: its size is kept because it is useful (and not
   sensitive), its text is not. With ``capture_content=True`` content is kept but still
   goes through rules 1 and 2.

Redaction is idempotent: redacting a redacted value changes nothing.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final

from tinyllm.settings import ENV_CAPTURE_CONTENT

__all__ = [
    "NOT_CAPTURED",
    "REDACTED",
    "RedactionPolicy",
    "configure_redaction",
    "get_redaction_policy",
    "redact",
    "redact_text",
    "reset_redaction",
]

#: What a secret is replaced with.
REDACTED: Final = "[REDACTED]"
#: The start of every content placeholder (``[NOT CAPTURED: 5 chars]``).
NOT_CAPTURED: Final = "[NOT CAPTURED"

# Compared after _normalize(): lower case, "-" -> "_".
_SECRET_KEYS: Final = frozenset(
    {
        "authorization", "proxy_authorization", "www_authenticate",
        "api_key", "apikey", "x_api_key", "api_token", "x_auth_token", "auth_token",
        "password", "passwd", "pwd", "passphrase",
        "secret", "client_secret", "secret_key", "secret_access_key",
        "aws_secret_access_key", "aws_session_token", "x_amz_security_token",
        "token", "access_token", "refresh_token", "id_token", "session_token",
        "bearer_token", "csrf_token", "xsrf_token", "x_csrf_token", "x_xsrf_token",
        "cookie", "set_cookie", "private_key", "credentials", "credential",
        "hf_token", "github_token",
    }
)  # fmt: skip
# Deliberately not "_token" or "_key": "input_tokens", "max_token", "cache_key" and
# "idempotency_key" are everyday LLM-service fields, not credentials.
_SECRET_SUFFIXES: Final = (
    "_api_key", "_apikey", "_password", "_passwd", "_secret", "_secret_key",
    "_private_key", "_access_token", "_refresh_token", "_auth_token", "_session_token",
)  # fmt: skip

# OpenTelemetry GenAI semantic conventions (gen_ai.*) plus the plain names used in bodies.
_CONTENT_KEYS: Final = frozenset(
    {
        "prompt", "prompts", "completion", "completions", "messages",
        "input_messages", "output_messages", "system_instructions", "system_prompt",
        "gen_ai.prompt", "gen_ai.completion", "gen_ai.input.messages",
        "gen_ai.output.messages", "gen_ai.system_instructions",
    }
)  # fmt: skip
# OpenLLMetry-style indexed attributes: gen_ai.prompt.0.content, gen_ai.completion.0.content.
_CONTENT_PREFIXES: Final = ("gen_ai.prompt.", "gen_ai.completion.")

_PLAIN, _SECRET, _CONTENT = 0, 1, 2
_KEY_CACHE_MAX = 4096
_PLACEHOLDER_RE: Final = re.compile(r"\[NOT CAPTURED(?:: \d+ (?:chars|items|keys))?\]")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _normalize(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _is_secret_name(norm: str) -> bool:
    if norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES):
        return True
    # Span attributes name headers as http.request.header.<name>.
    if "." in norm:
        last = norm.rsplit(".", 1)[1]
        return last in _SECRET_KEYS or last.endswith(_SECRET_SUFFIXES)
    return False


def _is_content_name(norm: str) -> bool:
    return norm in _CONTENT_KEYS or norm.startswith(_CONTENT_PREFIXES)


# -- text rules -----------------------------------------------------------------------
# Each pattern is guarded by cheap substring tests that must hold for it to be able to
# match at all; most log strings ("task_started") pass none of them, so the common case
# costs a few `in` checks and no regex.

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*):([^/\s@]+)@")
# The lookahead makes "bearer Bearer <token>" redact the token, not the second word.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?!bearer\b)[A-Za-z0-9\-._~+/]+=*")
_VENDOR_KEYS = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-[A-Za-z0-9][A-Za-z0-9_\-]{5,}"  # OpenAI, Anthropic (sk-ant-), DeepSeek, ...
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"  # Stripe secret/restricted keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"  # AWS access key ids
    r")"
)
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"
)
# "name": "value" / 'name': 'value' (JSON, Python reprs).
_QUOTED_PAIR = re.compile(
    r"""(["'])([A-Za-z_][\w.\-]*)\1(\s*:\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}\]]+)"""
)
# name=value (query strings, kwargs reprs, CLI flags).
_KV_PAIR = re.compile(
    r"""(?<![\w.\-])([A-Za-z_][\w.\-]*)(\s*=\s*)("[^"]*"|'[^']*'|[^\s&;,#"')]+)"""
)
# Name: value, to the end of the line (HTTP header dumps).
_HEADER = re.compile(r"(?m)(?:^|(?<=[\s,;{(\[]))([A-Za-z][\w\-]*)([ \t]*:[ \t]*)([^\r\n]+)")

_URL_REPL = rf"\1:{REDACTED}@"
_BEARER_REPL = rf"\1\2{REDACTED}"
# Strings up to this long that came out of redact_text unchanged are remembered as safe:
# event names, logger names and context values repeat endlessly in logs. Only *unchanged*
# strings are kept, so the cache never holds a secret.
_SAFE_CACHE_MAX_LEN = 96
_SAFE_CACHE_MAX = 4096


def _sub_quoted(m: re.Match[str]) -> str:
    if not _is_secret_name(_normalize(m.group(2))):
        return m.group(0)
    value = m.group(4)
    quote = value[0] if value[:1] in ('"', "'") else m.group(1)
    return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{quote}{REDACTED}{quote}"


def _sub_kv(m: re.Match[str]) -> str:
    if not _is_secret_name(_normalize(m.group(1))):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def _sub_header(m: re.Match[str]) -> str:
    if not _is_secret_name(_normalize(m.group(1))):
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def _builtin_redact_text(t: str) -> str:
    colon = ":" in t
    if colon and "://" in t and "@" in t:
        t = _URL_USERINFO.sub(_URL_REPL, t)
    # "Bearer", "bearer" and "BEARER"; the pattern itself ignores case.
    if "earer" in t or "EARER" in t:
        t = _BEARER.sub(_BEARER_REPL, t)
    if (
        ("-" in t or "_" in t)
        and ("sk" in t or "rk_" in t or "gh" in t or "hf_" in t or "xox" in t or "glpat" in t)
    ) or "AIza" in t or "AKIA" in t or "ASIA" in t:
        t = _VENDOR_KEYS.sub(REDACTED, t)
    if "eyJ" in t:
        t = _JWT.sub(REDACTED, t)
    if colon and ('"' in t or "'" in t):
        t = _QUOTED_PAIR.sub(_sub_quoted, t)
    if "=" in t:
        t = _KV_PAIR.sub(_sub_kv, t)
    if colon:
        t = _HEADER.sub(_sub_header, t)
    return t


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


# -- the process-wide policy -------------------------------------------------------------

_lock = threading.Lock()
_policy: RedactionPolicy | None = None


def _env_capture_content(strict: bool) -> bool:
    raw = os.environ.get(ENV_CAPTURE_CONTENT, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    message = (
        f"{ENV_CAPTURE_CONTENT}={raw!r} is not a boolean; use true/false (1/0, yes/no, on/off)"
    )
    if strict:
        raise ValueError(message)
    # Not at configuration time (first use on some hot path): do not break the host;
    # the safe reading of a garbled opt-in is "no".
    warnings.warn(message + "; content will not be captured", RuntimeWarning, stacklevel=3)
    return False


def get_redaction_policy() -> RedactionPolicy:
    """The process-wide policy (built on first use from ``TINYLLM_CAPTURE_CONTENT``).

    Example:
        >>> get_redaction_policy().redact({"api_key": "k"})
        {'api_key': '[REDACTED]'}
    """
    found = _policy
    if found is not None:
        return found
    return _make_default()


def _make_default() -> RedactionPolicy:
    global _policy
    with _lock:
        if _policy is None:
            _policy = RedactionPolicy(capture_content=_env_capture_content(strict=False))
        return _policy


def configure_redaction(
    extra_keys: Iterable[str] = (),
    extra_patterns: Iterable[str | re.Pattern[str]] = (),
    capture_content: bool | None = None,
) -> RedactionPolicy:
    """Replace the process-wide policy; returns the new one.

    ``capture_content=None`` means ``$TINYLLM_CAPTURE_CONTENT``, else False. Raises
    ValueError naming a pattern that does not compile, TypeError for a wrong type.

    Example:
        >>> policy = configure_redaction(extra_keys=["x-tenant-secret"], capture_content=False)
        >>> redact({"x_tenant_secret": "v"})
        {'x_tenant_secret': '[REDACTED]'}
        >>> _ = configure_redaction()  # back to the defaults
    """
    global _policy
    if capture_content is None:
        capture_content = _env_capture_content(strict=True)
    policy = RedactionPolicy(extra_keys, extra_patterns, capture_content)
    with _lock:
        _policy = policy
    return policy


def reset_redaction() -> None:
    """Forget the process-wide policy; the next use rebuilds it from the environment (tests)."""
    global _policy
    with _lock:
        _policy = None


def redact(value: Any) -> Any:
    """Redact ``value`` with the process-wide policy (see :meth:`RedactionPolicy.redact`).

    Example:
        >>> redact({"user": "ann", "password": "hunter2"})
        {'user': 'ann', 'password': '[REDACTED]'}
    """
    return get_redaction_policy().redact(value)


def redact_text(text: str) -> str:
    """Redact ``text`` with the process-wide policy (see :meth:`RedactionPolicy.redact_text`).

    Example:
        >>> redact_text("GET /cb?code=1&access_token=abc")
        'GET /cb?code=1&access_token=[REDACTED]'
    """
    return get_redaction_policy().redact_text(text)
