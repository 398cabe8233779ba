"""Secrets to plant, and the two ways of looking for them in what tinyllm wrote.

A *case* is one secret of a known shape (an OpenAI or Anthropic key, an AWS key id or
secret key, a JWT, a bearer token, a key in a URL, a URL's password, an email address)
placed in a field and in free text, the way application code hands secrets to a logger
by accident. ``CORPUS`` is a fixed list of realistic ones; ``cases()`` is a Hypothesis
strategy that makes random ones of the same shapes. ``Case.planted`` is exactly the text
that must never appear in any output.

Two detectors: ``leaks_in`` (exact substring search for every planted secret) and
``detect_secrets_findings`` (the ``detect-secrets`` scanner with its default plugins,
whose findings are attributed to a planted secret when they share 8 characters with it).

Example:
    >>> case = CORPUS[0]
    >>> case.planted in case.text
    True
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hypothesis import assume
from hypothesis import strategies as st

__all__ = [
    "CORPUS",
    "KINDS",
    "NON_SECRET_FIELDS",
    "SECRET_FIELDS",
    "Case",
    "Finding",
    "LeakIndex",
    "attributed",
    "cases",
    "detect_secrets_findings",
    "jwt",
    "leaks_in",
]

#: Field names that say "secret": redacted by name whatever the value looks like.
SECRET_FIELDS = (
    "api_key", "Authorization", "X-Api-Key", "password", "client_secret", "token",
    "access_token", "openai_api_key", "ANTHROPIC_API_KEY", "aws_secret_access_key",
    "refresh_token", "proxy-authorization", "db_password", "session_token",
)  # fmt: skip
#: Field names that say nothing: the value is found by its shape alone.
NON_SECRET_FIELDS = (
    "note", "detail", "url", "msg", "description", "error_detail", "user_input", "header",
    "config", "context", "upstream_body", "remark", "x", "line",
)  # fmt: skip

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0234567"
_URLSAFE = _ALNUM + "-_"
_B64 = _ALNUM + "/+"
_TOKEN = _ALNUM + "-._~"
_PASSWORD = _ALNUM + "!$*-_.~"


@dataclass(frozen=True)
class Case:
    """One planted secret: ``planted`` (what must not leak), ``kind`` (its shape),
    ``text`` (free text carrying it, wrapped so its shape says what it is) and
    ``bare`` (the value to put under a field whose *name* says secret)."""

    kind: str
    planted: str
    text: str
    bare: str
    secret_field: str = "api_key"
    plain_field: str = "note"
    extra: dict[str, str] = field(default_factory=dict)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwt(payload: dict[str, object], signature: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(payload).encode())}.{_b64url(signature)}"


def _wrapped(kind: str, secret: str, host: str = "api.example.com") -> str:
    """The secret as text whose shape (or wrapper) says it is one."""
    if kind == "bearer":
        return f"Authorization: Bearer {secret}"
    if kind == "url_api_key":
        return f"https://{host}/v1/models?api_key={secret}&limit=5"
    if kind == "url_key":
        return f"GET https://{host}/v1beta/models?key={secret}"
    if kind == "url_token":
        return f"https://{host}/cb?code=1&access_token={secret}"
    if kind == "url_userinfo":
        return f"https://svc-user:{secret}@{host}/db"
    if kind == "aws_secret_access_key":
        return f"aws_secret_access_key = {secret}"
    return secret  # the self-describing shapes: sk-..., AKIA..., JWTs, bare AWS secrets, emails


_SIG = bytes(range(7, 39))
CORPUS: tuple[Case, ...] = tuple(
    Case(kind, secret, f"request failed with {_wrapped(kind, secret)} (retrying)", secret)
    for kind, secret in (
        ("openai", "sk-Xq9LmP2vR7tYw3ZbK8nA" + "T3BlbkFJ" + "c4Hd6Jf1Gs5Ue0Vi9Oy2"),
        ("openai_project", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0fGH3iJK6lMN9o"
                           "PQ2rST5uVW8xYZ1aBc4dEf7gHi0jKl3mNo6pQr9sTu2vWx5yZa8bCd1eFg"),
        ("anthropic", "sk-ant-api03-" + "Zx8Cv7Bn6Ma5Sd4Fg3Hj2Kl1Qw0Er9Ty8Ui7Op6As5Dfg4Hj3Kl2Zx1Cv"
                      "0Bn9Mq8We7Rt6Yu5Io4Pa3Sd2Fg1Hj0Kl9Zx8Cv7Bn6Mq5We4Rt3Yu-AA"),
        ("aws_access_key_id", "AKIA4HWRZ5PQ2XN7TLEB"),
        ("aws_access_key_id", "ASIAY3KLZ9QW8RT2VX6M"),
        ("aws_secret_access_key", "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"),
        ("aws_secret_access_key_bare", "Jm7Qz2Wx9Rk4Tp1Lv8Nc3Hb6Fd0Gs5Ye+Ua2Oi9E"),
        ("jwt", jwt({"sub": "1234567890", "name": "Ann", "iat": 1516239022}, _SIG)),
        ("bearer", "dGhpc2lzYW5vcGFxdWV0b2tlbl9mb3J0ZXN0cw"),
        ("bearer", "ya29.a0AfH6SMBx7Kq2Lm9Pz3Nw1Bc6Df5Gj0Ys"),
        ("url_api_key", "k7Pz2Lm9Qx4Wv8Nr3Tb6Yc1"),
        ("url_key", "AIzaSyD4kP9vL2mQ7xW3nR8tB6yC1fH5jG0sK2e"),
        ("url_token", "at_9Kq2Lm7Pz3Nw1Bc6Df5Gj"),
        ("url_userinfo", "hunter2-Xq9Lm-P2vR"),
        ("email", "ann.lee+llm@example-corp.com"),
    )
)


# -- random cases ------------------------------------------------------------------------

def _chars(alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=size, max_size=max_size or size)


def _secret(kind: str) -> st.SearchStrategy[str]:
    # A secret has entropy: "aaaaaaaaaaaaaaaa" is no key. And it mixes digits with both
    # cases, as real keys do: Hypothesis also draws strings from the constants in the code
    # under test, and "llm_request_failed" planted as a "key" is found in every log line
    # that names the event, which is no leak.
    strategy = _shape(kind).filter(lambda s: len(set(s)) >= 8)
    if kind in ("aws_access_key_id", "email", "jwt"):
        return strategy  # shapes whose own structure makes them unlike any constant
    return strategy.filter(lambda s: any(c.isdigit() for c in s)
                           and any(c.isupper() for c in s) and any(c.islower() for c in s))


def _shape(kind: str) -> st.SearchStrategy[str]:
    if kind == "openai":
        return st.builds(lambda a, b: f"sk-{a}T3BlbkFJ{b}", _chars(_ALNUM, 20), _chars(_ALNUM, 20))
    if kind == "openai_project":
        return st.builds(lambda a: f"sk-proj-{a}", _chars(_URLSAFE, 40, 120).filter(
            lambda s: s[0] in _ALNUM))
    if kind == "anthropic":
        return st.builds(lambda a: f"sk-ant-api03-{a}AA", _chars(_URLSAFE, 93))
    if kind == "aws_access_key_id":
        return st.builds(lambda p, a: p + a, st.sampled_from(("AKIA", "ASIA")),
                         _chars(_UPPER_DIGITS, 16))
    if kind in ("aws_secret_access_key", "aws_secret_access_key_bare"):
        # Real ones always mix cases and digits; a 40-character run of one letter is not a key.
        return _chars(_B64, 40).filter(
            lambda s: any(c.isupper() for c in s) and any(c.islower() for c in s)
            and any(c.isdigit() for c in s))
    if kind == "jwt":
        return st.builds(
            lambda sub, sig: jwt({"sub": sub, "scope": "llm"}, sig),
            _chars(_ALNUM, 4, 24), st.binary(min_size=32, max_size=32))
    if kind == "bearer":
        return _chars(_TOKEN, 20, 80).filter(lambda s: s[0] in _ALNUM and s[-1] in _ALNUM)
    if kind in ("url_api_key", "url_key", "url_token"):
        return _chars(_URLSAFE, 16, 64)
    if kind == "url_userinfo":
        return _chars(_PASSWORD, 10, 40)
    if kind == "email":
        return st.builds(lambda u, d: f"{u}@{d}.com", _chars(_ALNUM + "._+", 3, 20).filter(
            lambda s: s[0] in _ALNUM and s[-1] in _ALNUM),
            _chars("abcdefghijklmnopqrstuvwxyz0123456789", 4, 12))
    raise ValueError(kind)


KINDS = (
    "openai", "openai_project", "anthropic", "aws_access_key_id", "aws_secret_access_key",
    "aws_secret_access_key_bare", "jwt", "bearer", "url_api_key", "url_key", "url_token",
    "url_userinfo", "email",
)  # fmt: skip

# Prose around the secret: short words (some of them the words redaction keys on), ASCII
# punctuation that is no secret's character, and non-ASCII text, joined by spaces. It can
# hold no run of 8 characters a secret is made of, so no prose can contain, or share 8
# characters with, any case's secret: Hypothesis reuses strings across examples, and one
# case's prose must never carry another case's secret unwrapped.
_VOCAB = (
    "request", "failed", "retry", "model", "key", "token", "Bearer", "api_key", "note",
    "url", "error", "GET", "POST", "said", "user", "secret", "sk", "AKIA", "eyJ", "pass",
    "the", "on", "at", "with", "https", "Key:", "key=", "token:", "=", ":", "@",
)  # fmt: skip
_PUNCT = "\"'=:,;()[]{}#%&?|<>^` "
_WORDS = st.lists(
    st.one_of(
        st.sampled_from(_VOCAB),
        st.text(st.sampled_from(_PUNCT), min_size=1, max_size=3),
        st.text(st.characters(min_codepoint=0x80, exclude_categories=("Cs", "Cc")),
                min_size=1, max_size=8),
    ),
    max_size=6,
).map(" ".join)
_SEPARATORS = st.sampled_from((" ", "\n", ", ", "; ", " (", ": ", "\t", " | ", "\r\n"))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A random secret of one of ``KINDS``, in random text, under random field names."""
    kind = draw(st.sampled_from(KINDS))
    secret = draw(_secret(kind))
    host = draw(st.sampled_from(("api.openai.com", "api.anthropic.com", "10.0.0.7:8080",
                                  "llm.internal")))
    before, after = draw(_WORDS), draw(_WORDS)
    # Prose that happens to hold the secret itself holds it unwrapped: not this case.
    assume(secret not in before and secret not in after)
    sep1, sep2 = draw(_SEPARATORS), draw(_SEPARATORS)
    text = f"{before}{sep1}{_wrapped(kind, secret, host)}{sep2}{after}"
    return Case(kind, secret, text, secret, draw(st.sampled_from(SECRET_FIELDS)),
                draw(st.sampled_from(NON_SECRET_FIELDS)))


# -- detector (a): exact substring search ------------------------------------------------

def leaks_in(output: str, planted: Iterable[str]) -> list[str]:
    """The planted secrets that occur in ``output``, exactly."""
    return [s for s in planted if s in output]


class LeakIndex:
    """Exact search for many planted secrets in a large text, in one pass over it.

    Indexes each secret by its first 8 characters; walks the text once.
    """

    def __init__(self, planted: Iterable[str]) -> None:
        self._by_head: dict[str, list[str]] = {}
        for s in set(planted):
            self._by_head.setdefault(s[:8], []).append(s)

    def search(self, text: str) -> list[str]:
        found: list[str] = []
        heads = self._by_head
        for i in range(len(text) - 7):
            hit = heads.get(text[i:i + 8])
            if hit:
                found.extend(s for s in hit if text.startswith(s, i))
        return found


# -- detector (b): detect-secrets --------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One detect-secrets finding: its plugin's type, the value, the line it was on."""

    type: str
    value: str
    line: str


def detect_secrets_findings(lines: Sequence[str]) -> list[Finding]:
    """Every finding of ``detect-secrets`` (default plugins and filters) in ``lines``."""
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import default_settings

    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False,
                                     encoding="utf-8") as f:
        f.write("\n".join(line.replace("\r", " ") for line in lines))
        path = f.name
    try:
        with default_settings():
            collection = SecretsCollection()
            collection.scan_file(path)
        out: list[Finding] = []
        for _, secret in collection:
            n = secret.line_number - 1
            out.append(Finding(secret.type, secret.secret_value or "",
                               lines[n] if 0 <= n < len(lines) else ""))
        return out
    finally:
        os.unlink(path)


# Public prefixes that are not the secret part: sharing them is no leak.
_PUBLIC = ("sk-proj-", "sk-ant-api03-", "T3BlbkFJ", "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9")


def _grams(secret: str) -> set[str]:
    body = secret
    for prefix in _PUBLIC:
        body = body.replace(prefix, "\0")
    return {g for part in body.split("\0") for i in range(len(part) - 7)
            for g in (part[i:i + 8],)}


def attributed(findings: Iterable[Finding], planted: Iterable[str]) -> list[tuple[Finding, str]]:
    """The findings that share at least 8 characters with a planted secret."""
    owner: dict[str, str] = {}
    for s in planted:
        for g in _grams(s):
            owner.setdefault(g, s)
    out: list[tuple[Finding, str]] = []
    for f in findings:
        v = f.value
        for i in range(len(v) - 7):
            hit = owner.get(v[i:i + 8])
            if hit is not None:
                out.append((f, hit))
                break
    return out
