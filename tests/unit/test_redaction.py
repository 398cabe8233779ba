"""tinyllm.redaction: secret keys, secret-looking text, content capture, the process-wide policy."""

from __future__ import annotations

import copy
import json
import re
import string
import warnings
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm.redaction import (
    REDACTED,
    RedactionPolicy,
    _policy,
    configure_redaction,
    get_redaction_policy,
    redact,
    redact_text,
    reset_redaction,
)
from tinyllm.settings import ENV_CAPTURE_CONTENT


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_CAPTURE_CONTENT, raising=False)
    reset_redaction()
    yield
    reset_redaction()


POLICY = RedactionPolicy()


# -- secret keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "authorization", "Authorization", "PROXY-AUTHORIZATION", "proxy_authorization",
        "api_key", "api-key", "apikey", "X-API-Key", "x_api_key", "openai_api_key",
        "ANTHROPIC-API-KEY", "password", "Passwd", "secret", "client_secret", "client-secret",
        "token", "access_token", "Refresh-Token", "id_token", "cookie", "Set-Cookie",
        "private_key", "db_password", "webhook_secret", "http.request.header.authorization",
    ],
)  # fmt: skip
def test_secret_keys_are_redacted_whatever_the_value(key: str) -> None:
    assert POLICY.is_secret_key(key)
    for value in ("s3cr3t", 12345, ["a", "b"], {"nested": "x"}):
        assert POLICY.redact({key: value}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "input_tokens", "tokens_used", "token_count", "cache_key", "model",
     "idempotency_key", "status", "monkey", "passage"],
)  # fmt: skip
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not POLICY.is_secret_key(key)
    assert POLICY.redact({key: "plain value"}) == {key: "plain value"}


def test_empty_secret_values_stay_visible() -> None:
    assert POLICY.redact({"api_key": None, "password": ""}) == {"api_key": None, "password": ""}


def test_seed_request_example() -> None:
    headers = {"Authorization": "Bearer sk-abc123"}
    body = {"prompt": "Hello", "api_key": "secret"}
    assert POLICY.redact(headers) == {"Authorization": REDACTED}
    assert POLICY.redact(body) == {"prompt": "[NOT CAPTURED: 5 chars]", "api_key": REDACTED}


# -- secret-looking text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer sk-abc123", "Authorization: [REDACTED]"),
        ("sent bearer abc.def-ghi_jkl== upstream", "sent bearer [REDACTED] upstream"),
        ("key sk-proj-AbCdEf1234567890xyz in use", "key [REDACTED] in use"),
        ("key sk-ant-api03-abcdefghij-klm ok", "key [REDACTED] ok"),
        ("id AKIAIOSFODNN7EXAMPLE!", "id [REDACTED]!"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc_DEF-123 ok",
            "jwt [REDACTED] ok",
        ),
        ("https://user:hunter2@db.example.com/x", "https://user:[REDACTED]@db.example.com/x"),
        ("redis://:pw@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        (
            "GET /login?user=ann&password=hunter2&next=/",
            "GET /login?user=ann&password=[REDACTED]&next=/",
        ),
        ("/cb?code=1&access_token=abc#frag", "/cb?code=1&access_token=[REDACTED]#frag"),
        ('{"api_key": "abc", "n": 1}', '{"api_key": "[REDACTED]", "n": 1}'),
        ("{'password': 'hunter2', 'user': 'ann'}", "{'password': '[REDACTED]', 'user': 'ann'}"),
        ("Client(api_key='sk-xx', timeout=3)", "Client(api_key=[REDACTED], timeout=3)"),
        ("Cookie: a=1; b=2\nAccept: */*", "Cookie: [REDACTED]\nAccept: */*"),
        ("ghp_0123456789abcdefghijABCDEFGHIJ0123", REDACTED),
        ("hf_abcdefghijklmnopqrstuvwxyz0123", REDACTED),
    ],
)
def test_secret_looking_text(text: str, expected: str) -> None:
    assert POLICY.redact_text(text) == expected
    assert POLICY.redact({"note": text}) == {"note": expected}


@pytest.mark.parametrize(
    "text",
    [
        "task_started",
        "max_tokens=50 input_tokens=3 token_count=4",
        "12:30:45 error: connection refused",
        "uses sk-learn and a ghp_ prefix",
        "https://example.com/api/generate?model=llama3",
        "ValueError: bad input",
        "sent by the bearer",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert POLICY.redact_text(text) == text


def test_redact_text_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="text must be a str"):
        POLICY.redact_text(b"bytes")  # type: ignore[arg-type]


# -- content -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["prompt", "completion", "messages", "input_messages", "output_messages",
     "system_instructions", "gen_ai.prompt", "gen_ai.completion", "gen_ai.input.messages",
     "gen_ai.output.messages", "gen_ai.prompt.0.content", "Prompt"],
)  # fmt: skip
def test_content_is_not_captured_by_default(key: str) -> None:
    out = POLICY.redact(
        {key: "Hello", "k2": {key: ["a", "b"]}, "k3": {key: {"x": 1}}, "k4": {key: 3}}
    )
    assert out == {
        key: "[NOT CAPTURED: 5 chars]",
        "k2": {key: "[NOT CAPTURED: 2 items]"},
        "k3": {key: "[NOT CAPTURED: 1 keys]"},
        "k4": {key: "[NOT CAPTURED]"},
    }


def test_captured_content_is_still_redacted() -> None:
    policy = RedactionPolicy(capture_content=True)
    value = {"prompt": "my key is sk-AbCdEf123456", "messages": [{"role": "user", "api_key": "k"}]}
    assert policy.redact(value) == {
        "prompt": "my key is [REDACTED]",
        "messages": [{"role": "user", "api_key": REDACTED}],
    }


# -- shapes, copies ------------------------------------------------------------------------


def test_containers_keep_their_kind_and_input_is_untouched() -> None:
    Pair = namedtuple("Pair", "name value")
    original: dict[str, Any] = {
        "list": ["Bearer abc", 1, None, 2.5, True],
        "tuple": ("password=x", {"token": "t"}),
        "named": Pair("n", "Bearer abc"),
        "set": {"Bearer abc"},
        "mapping": OrderedDict(secret="s"),
        "bytes": b"Bearer raw",
        "obj": object,
    }
    snapshot = copy.deepcopy(original)
    out = POLICY.redact(original)
    assert original == snapshot
    assert out["list"] == ["Bearer [REDACTED]", 1, None, 2.5, True]
    assert out["tuple"] == ("password=[REDACTED]", {"token": REDACTED})
    assert out["named"] == Pair("n", "Bearer [REDACTED]") and isinstance(out["named"], Pair)
    assert out["set"] == {"Bearer [REDACTED]"}
    assert out["mapping"] == {"secret": REDACTED} and type(out["mapping"]) is dict
    assert out["bytes"] == b"Bearer raw"  # a scalar: passes through (see the docs)
    assert out["obj"] is object


def test_cycles_do_not_hang() -> None:
    loop: list[Any] = ["x"]
    loop.append(loop)
    out = POLICY.redact(loop)
    assert out[0] == "x"


def test_event_walk_stringifies_objects_so_reprs_are_redacted() -> None:
    class Client:
        def __str__(self) -> str:
            return "Client(api_key='sk-abcdef123456')"

    out = POLICY._redact_event({"client": Client(), "raw": b"token=abc"})
    assert out == {"client": "Client(api_key=[REDACTED])", "raw": "token=[REDACTED]"}


# -- extra keys and patterns ------------------------------------------------------------------


def test_extra_keys_and_patterns() -> None:
    policy = RedactionPolicy(
        extra_keys=["X-Tenant-Secret"], extra_patterns=[r"acct-\d+", re.compile("PIN\\d{4}")]
    )
    out = policy.redact({"x_tenant_secret": "v", "note": "acct-42 PIN1234 ok"})
    assert out == {"x_tenant_secret": REDACTED, "note": "[REDACTED] [REDACTED] ok"}
    assert "acct" in repr(policy)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"extra_patterns": ["ok", "("]}, ValueError, r"extra_patterns: '\(' is not a valid"),
        ({"extra_patterns": [""]}, ValueError, "empty pattern"),
        ({"extra_patterns": "abc"}, TypeError, "iterable of patterns"),
        ({"extra_patterns": [3]}, TypeError, "str or re.Pattern"),
        ({"extra_patterns": [re.compile(b"x")]}, TypeError, "bytes pattern"),
        ({"extra_keys": "api"}, TypeError, "extra_keys must be an iterable"),
        ({"extra_keys": [""]}, ValueError, "extra_keys items"),
        ({"capture_content": "yes"}, TypeError, "capture_content must be True or False"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RedactionPolicy(**kwargs)
    with pytest.raises(error, match=match):
        configure_redaction(**kwargs)


# -- the process-wide policy ------------------------------------------------------------------


def test_module_functions_use_the_process_wide_policy() -> None:
    assert redact({"prompt": "hi"}) == {"prompt": "[NOT CAPTURED: 2 chars]"}
    policy = configure_redaction(
        extra_keys=["tenant"], extra_patterns=[r"zz\d"], capture_content=True
    )
    assert get_redaction_policy() is policy
    assert redact({"prompt": "hi", "tenant": "t"}) == {"prompt": "hi", "tenant": REDACTED}
    assert redact_text("a zz9 b") == "a [REDACTED] b"
    configure_redaction()
    assert redact({"tenant": "t"}) == {"tenant": "t"}


@pytest.mark.parametrize("value", ["true", "1", "YES", "on"])
def test_env_opts_in_to_content(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_CAPTURE_CONTENT, value)
    assert get_redaction_policy().capture_content is True
    assert redact({"prompt": "hi"}) == {"prompt": "hi"}
    assert configure_redaction().capture_content is True
    assert configure_redaction(capture_content=False).capture_content is False


def test_bad_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CAPTURE_CONTENT, "maybe")
    with pytest.raises(ValueError, match=ENV_CAPTURE_CONTENT):
        configure_redaction()
    # First use on a hot path: warn, do not capture, do not raise.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert get_redaction_policy().capture_content is False
    assert any(ENV_CAPTURE_CONTENT in str(w.message) for w in caught)


def test_safe_cache_is_bounded_and_never_holds_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_policy, "_SAFE_CACHE_MAX", 10)
    policy = RedactionPolicy()
    for i in range(25):
        policy.redact_text(f"plain-{i}")
        policy.redact_text(f"password={i}")
    assert 0 < len(policy._safe) <= 10
    assert not any("password" in s for s in policy._safe)


# -- properties --------------------------------------------------------------------------------

FREE_TEXT = st.text(alphabet=string.ascii_lowercase + " .,;:=/-_'\"@?&", max_size=30)
BODY = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=30)
B64URL = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=8, max_size=30)
MARK = "Q7"  # an upper-case letter and a digit: FREE_TEXT can never produce it

SECRET_KEYS = [
    "Authorization", "api_key", "X-Api-Key", "password", "client_secret", "token",
    "refresh_token", "Cookie", "set-cookie", "private_key", "my_service_api_key",
]  # fmt: skip


@st.composite
def text_secret(draw: st.DrawFn) -> tuple[str, str]:
    """(text holding a secret, the secret part that must not survive)."""
    body = MARK + draw(BODY)
    kind = draw(st.sampled_from(["bearer", "sk", "sk-proj", "aws", "jwt", "url", "query", "json"]))
    if kind == "bearer":
        secret, text = body, f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {body}"
    elif kind == "sk":
        secret = text = f"sk-{body}"
    elif kind == "sk-proj":
        secret = text = f"sk-proj-{body}"
    elif kind == "aws":
        upper = string.ascii_uppercase + string.digits
        tail = draw(st.text(alphabet=upper, min_size=14, max_size=14))
        secret = text = f"AKIA{MARK}{tail}"
    elif kind == "jwt":
        secret = f"eyJ{MARK}{draw(B64URL)}.{draw(B64URL)}.{draw(B64URL)}"
        text = secret
    elif kind == "url":
        secret, text = body, f"https://user:{body}@example.com/path"
    elif kind == "query":
        key = draw(st.sampled_from(["password", "api_key", "access_token", "client_secret"]))
        secret, text = body, f"/p?x=1&{key}={body}&y=2"
    else:
        key = draw(st.sampled_from(["password", "api_key", "token"]))
        secret, text = body, json.dumps({key: body, "n": 1})
    return f"{draw(FREE_TEXT)} {text} {draw(FREE_TEXT)}", secret


@st.composite
def nested_with_secrets(draw: st.DrawFn) -> tuple[Any, list[str]]:
    secrets: list[str] = []

    def leaf() -> Any:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            text, secret = draw(text_secret())
            secrets.append(secret)
            return text
        if choice == 1:
            return draw(FREE_TEXT)
        return draw(st.one_of(st.integers(), st.none(), st.booleans()))

    def node(depth: int) -> Any:
        shape = draw(st.integers(0, 4)) if depth < 4 else 0
        if shape == 0:
            return leaf()
        if shape == 1:
            return [node(depth + 1) for _ in range(draw(st.integers(0, 3)))]
        if shape == 2:
            return tuple(node(depth + 1) for _ in range(draw(st.integers(0, 3))))
        out: dict[str, Any] = {}
        for _ in range(draw(st.integers(0, 4))):
            if draw(st.booleans()):
                key = draw(st.sampled_from(SECRET_KEYS))
                value = MARK + draw(BODY)
                secrets.append(value)
                out[key] = draw(st.sampled_from([value, [value], {"v": value}]))
            else:
                out[draw(FREE_TEXT)] = node(depth + 1)
        return out

    return node(0), secrets


@settings(max_examples=300, deadline=None)
@given(nested_with_secrets(), st.booleans())
def test_no_generated_secret_survives(data: tuple[Any, list[str]], capture: bool) -> None:
    value, secrets = data
    out = RedactionPolicy(capture_content=capture).redact(value)
    dumped = repr(out)
    for secret in secrets:
        assert secret not in dumped


# Fragments that trigger every rule, mixed with free text: the hardest inputs for idempotence.
FRAGMENTS = st.sampled_from(
    ["Bearer", "bearer", " ", "sk-", "sk-proj-", "AKIA", "eyJ", "://", "@", ":", "=", "&",
     "password", "token", "api_key", "'", '"', "\n", "{", "}", "abcdef123456", "ABCDEF012345",
     ".", "-", "_", "[REDACTED]", "[NOT CAPTURED: 3 chars]", "prompt", "https"]
)  # fmt: skip
TRICKY_TEXT = st.lists(st.one_of(FRAGMENTS, FREE_TEXT), max_size=12).map("".join)
KEYS = st.one_of(st.sampled_from([*SECRET_KEYS, "prompt", "messages", "gen_ai.prompt"]), FREE_TEXT)
JSONISH = st.recursive(
    st.one_of(TRICKY_TEXT, st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSONISH, st.booleans())
def test_redact_never_mutates_and_is_idempotent(value: Any, capture: bool) -> None:
    policy = RedactionPolicy(capture_content=capture)
    snapshot = copy.deepcopy(value)
    once = policy.redact(value)
    assert value == snapshot
    assert policy.redact(once) == once


@settings(max_examples=400, deadline=None)
@given(TRICKY_TEXT)
def test_redact_text_is_idempotent(text: str) -> None:
    once = POLICY.redact_text(text)
    assert POLICY.redact_text(once) == once
