"""What counts as a secret or as content: the key names, and the patterns of
secret-looking text that ``_builtin_redact_text`` applies. Data and pure functions over
it; ``RedactionPolicy`` is what callers use."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["NOT_CAPTURED", "REDACTED"]

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

# Names that are secrets only as query parameters (``?key=``, ``&sig=``): as a mapping key
# or a log field, "key" is a cache key or a config name far more often than a credential.
_SECRET_PARAMS: Final = frozenset({"key", "sig", "signature", "auth"})

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

# Where a token may also start: right after an escape sequence, in text that went through
# repr() or JSON ("...\\nsk-abc": an exception's args, a dict's str()). The escape's
# letter would otherwise glue onto the token ("nsk-abc") and hide it from the rules below.
# Each such rule has a second pattern starting there, run only on text with a backslash,
# so the common case keeps the plain pattern (and its speed).
_ESC = (
    r"(?:(?<=\\[nrtfvab0])|(?<=\\x[0-9a-fA-F]{2})|(?<=\\u[0-9a-fA-F]{4})"
    r"|(?<=\\U[0-9a-fA-F]{8}))"
)
_ESCAPE_LETTERS: Final = frozenset("nrtfvab0")


def _twice(start: str, body: str, flags: str = "") -> tuple[re.Pattern[str], re.Pattern[str]]:
    """``body`` after ``start`` (the plain pattern), and after an escape sequence."""
    return re.compile(flags + start + body), re.compile(flags + _ESC + body)


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^/\s:@]*):([^/\s@]+)@")
# The lookahead makes "bearer Bearer <token>" redact the token, not the second word.
_BEARER, _BEARER_ESC = _twice(r"\b", r"(bearer)(\s+)(?!bearer\b)[A-Za-z0-9\-._~+/]+=*", "(?i)")
_VENDOR_KEYS, _VENDOR_KEYS_ESC = _twice(
    r"(?<![A-Za-z0-9_\-])",
    r"(?:"
    r"sk-[A-Za-z0-9][A-Za-z0-9_\-]{5,}"  # OpenAI, Anthropic (sk-ant-), DeepSeek, ...
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}"  # Stripe secret/restricted keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Za-z])"  # AWS access key ids
    r")",
)
# An AWS secret access key: a run of exactly 40 base64 characters that mixes upper and
# lower case letters and digits (checked in _sub_aws_secret; a hex digest has no upper
# case, a word or a path no such run). Not followed by "=": that is a longer blob's padding.
_AWS_SECRET, _AWS_SECRET_ESC = _twice(
    r"(?<![A-Za-z0-9/+])", r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
# Email addresses: personal data, never worth a log line's while.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
    r"\.[A-Za-z]{2,}(?![A-Za-z0-9\-])"
)
_JWT, _JWT_ESC = _twice(
    r"(?<![A-Za-z0-9_\-])", r"eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")
# "name": "value" / 'name': 'value' (JSON, Python reprs).
_QUOTED_PAIR = re.compile(
    r"""(["'])([A-Za-z_][\w.\-]*)\1(\s*:\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}\]]+)"""
)
# name=value (query strings, kwargs reprs, CLI flags).
_KV_PAIR = re.compile(
    r"""(?<![\w.\-])([A-Za-z_][\w.\-]*)(\s*=\s*)("[^"]*"|'[^']*'|[^\s&;,#"')]+)"""
)
# Name: value, to the end of the line (HTTP header dumps).
_HEADER = re.compile(r"(?m)(?:^|(?<=[\s,;{(\[\\]))([A-Za-z][\w\-]*)([ \t]*:[ \t]*)([^\r\n]+)")

_URL_REPL = rf"\1:{REDACTED}@"
_BEARER_REPL = rf"\1\2{REDACTED}"


def _sub_quoted(m: re.Match[str]) -> str:
    if not _is_secret_name(_normalize(m.group(2))):
        return m.group(0)
    value = m.group(4)
    quote = value[0] if value[:1] in ('"', "'") else m.group(1)
    return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{quote}{REDACTED}{quote}"


def _names(m: re.Match[str]) -> tuple[str, ...]:
    """The normalised name of a pair match; also without its first letter when that
    letter ends an escape sequence ("\\napi_key=..." names api_key, not napi_key)."""
    name = _normalize(m.group(1))
    start = m.start(1)
    if start and m.string[start - 1] == "\\" and name[:1] in _ESCAPE_LETTERS:
        return (name, name[1:])
    return (name,)


def _sub_header(m: re.Match[str]) -> str:
    """A ``Name: value`` match, its value redacted if the name is a secret."""
    if not any(_is_secret_name(n) for n in _names(m)):
        # The match ran to the end of the line: look inside it for the next pair
        # ("note: password: hunter2").
        return f"{m.group(1)}{m.group(2)}{_HEADER.sub(_sub_header, m.group(3))}"
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def _sub_param(m: re.Match[str]) -> str:
    """A ``name=value`` match (query strings too), its value redacted if the name is a
    secret key or a secret query parameter (``?key=``)."""
    if not any(n in _SECRET_PARAMS or _is_secret_name(n) for n in _names(m)):
        value = m.group(3)
        if value[:1] in ('"', "'") or "=" in value:
            # The value was consumed whole, and may hold pairs of its own: a repr such as
            # text='... api_key=sk', a URL in a parameter (next=https://h/?key=sk).
            return f"{m.group(1)}{m.group(2)}{_KV_PAIR.sub(_sub_param, value)}"
        return m.group(0)
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def _sub_aws_secret(m: re.Match[str]) -> str:
    """A run of exactly 40 base64 characters, redacted when it mixes upper and lower case
    letters and digits (checked here: three lookaheads in the pattern cost 4x as much)."""
    v = m.group(0)
    if not (any(c.isupper() for c in v) and any(c.islower() for c in v)
            and any(c.isdigit() for c in v)):
        return v
    return REDACTED


def _builtin_redact_text(t: str) -> str:
    colon = ":" in t
    if colon and "://" in t and "@" in t:
        t = _URL_USERINFO.sub(_URL_REPL, t)
    escaped = "\\" in t
    # "Bearer", "bearer" and "BEARER"; the pattern itself ignores case.
    if "earer" in t or "EARER" in t:
        t = _BEARER.sub(_BEARER_REPL, t)
        if escaped:
            t = _BEARER_ESC.sub(_BEARER_REPL, t)
    if (
        ("-" in t or "_" in t)
        and ("sk" in t or "rk_" in t or "gh" in t or "hf_" in t or "xox" in t or "glpat" in t)
    ) or "AIza" in t or "AKIA" in t or "ASIA" in t:
        t = _VENDOR_KEYS.sub(REDACTED, t)
        if escaped:
            t = _VENDOR_KEYS_ESC.sub(REDACTED, t)
    if "eyJ" in t:
        t = _JWT.sub(REDACTED, t)
        if escaped:
            t = _JWT_ESC.sub(REDACTED, t)
    if len(t) >= 40:
        t = _AWS_SECRET.sub(_sub_aws_secret, t)
        if escaped:
            t = _AWS_SECRET_ESC.sub(_sub_aws_secret, t)
    if "@" in t:
        t = _EMAIL.sub(REDACTED, t)
    if colon and ('"' in t or "'" in t):
        t = _QUOTED_PAIR.sub(_sub_quoted, t)
    if "=" in t:
        t = _KV_PAIR.sub(_sub_param, t)
    if colon:
        t = _HEADER.sub(_sub_header, t)
    return t
