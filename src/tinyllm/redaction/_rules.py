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


def _sub_quoted(m: re.Match[str]) -> str:
    if not _is_secret_name(_normalize(m.group(2))):
        return m.group(0)
    value = m.group(4)
    quote = value[0] if value[:1] in ('"', "'") else m.group(1)
    return f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{quote}{REDACTED}{quote}"


def _sub_pair(m: re.Match[str]) -> str:
    """A ``name=value`` or ``Name: value`` match, its value redacted if the name is a secret."""
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
        t = _KV_PAIR.sub(_sub_pair, t)
    if colon:
        t = _HEADER.sub(_sub_pair, t)
    return t
