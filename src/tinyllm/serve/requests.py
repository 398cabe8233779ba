"""What a client sent, checked: the body of an OpenAI chat or completion request.

Only what the gateway itself relies on is checked (the model, the messages or prompt,
``stream``, ``max_tokens``, ``stream_options``); every other field goes to the upstream
unchanged (vendor parameters such as ``top_k`` included). A bad request is a 400 in
OpenAI's shape naming the field and what is valid, never echoing the input.

Example:
    >>> call = parse_call(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}',
    ...                   "chat")
    >>> call.model, call.stream, call.wants_usage
    ('m', False, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tinyllm.serve.errors import GatewayError

__all__ = ["MAX_TOKENS_LIMIT", "MAX_TOKEN_ID", "ROLES", "Call", "parse_call"]

#: No model reaches this far: a larger ``max_tokens`` is a mistake, answered 400.
MAX_TOKENS_LIMIT = 1_048_576
#: The largest token id an embeddings ``input`` may hold (no vocabulary is larger).
MAX_TOKEN_ID = 2**32 - 1
#: The message roles a chat request may use.
ROLES = ("assistant", "developer", "function", "system", "tool", "user")
_ROLES = ROLES


@dataclass
class Call:
    """One chat or completion request: its kind, the model asked for, its body."""

    kind: str  # "chat" | "completion" | "embedding"
    model: str
    body: dict[str, Any]
    stream: bool  # the upstream is asked for a stream
    wants_usage: bool  # the client asked for the usage chunk of a stream
    client_stream: bool | None = None  # when the client's answer differs (Ollama's API)

    @property
    def request_type(self) -> str:
        """The lifecycle's request type, as the client sees the call: ``chat``,
        ``chat_stream``, ``completion``..."""
        stream = self.stream if self.client_stream is None else self.client_stream
        return f"{self.kind}_stream" if stream else self.kind


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_call(raw: bytes, kind: str) -> Call:
    """The ``kind`` (``chat``, ``completion`` or ``embedding``) request in ``raw``;
    ``GatewayError`` 400 naming the field otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).split(":", 1)[0]
        raise _bad(f"the body is not valid JSON (UTF-8): {reason[:100]}") from None
    if not isinstance(body, dict):
        raise _bad(f"the body must be a JSON object, got {_type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model is required: the name of a model this gateway serves "
                   "(GET /v1/models lists them)", "model")
    if kind == "chat":
        _check_messages(body.get("messages"))
    elif kind == "completion":
        _check_prompt(body.get("prompt"))
    else:
        body["input"] = _check_input(body.get("input"))
        if body.get("stream"):
            raise _bad("embeddings are not streamed; leave stream out", "stream")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad(f"stream must be true or false, got {_type_name(stream)}", "stream")
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if type(value) is float and value.is_integer() and 1 <= value <= MAX_TOKENS_LIMIT:
            # 5.0 is the whole number JSON Schema calls an integer: the upstream gets 5
            value = body[field] = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(f"{field} must be a whole number >= 1, got {_type_name(value)}", field)
        if value > MAX_TOKENS_LIMIT:
            raise _bad(f"{field} must be at most {MAX_TOKENS_LIMIT:,} (no model generates "
                       f"more), got {value:,}", field)
    options = body.get("stream_options")
    wants_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _bad(f"stream_options must be an object, got {_type_name(options)}",
                       "stream_options")
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise _bad("stream_options.include_usage must be true or false",
                       "stream_options.include_usage")
        wants_usage = include
    return Call(kind, model, body, stream, wants_usage and stream)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list of {role, content} objects",
                   "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object with role and content, got "
                       f"{_type_name(message)}", f"messages[{i}]")
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(_ROLES)}",
                       f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(f"messages[{i}].content must be a string, a list of parts or null, "
                       f"got {_type_name(content)}", f"messages[{i}].content")


def _check_input(value: Any) -> Any:
    """``value`` if it is a valid ``input`` (token ids as ``int``: 7.0 is the whole
    number JSON Schema calls an integer, and the upstream gets 7); else 400."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value:
        out: list[Any] = []
        for v in value:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, list):
                ids = [_token_id(t) for t in v]
                if None in ids:
                    break
                out.append(ids)
            elif (token := _token_id(v)) is not None:
                out.append(token)
            else:
                break
        else:
            return out
    raise _bad("input must be a non-empty string, or a list of strings or of token ids "
               f"(whole numbers from 0 to {MAX_TOKEN_ID:,})", "input")


def _token_id(value: Any) -> int | None:
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and 0 <= value <= MAX_TOKEN_ID else None


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return
    raise _bad("prompt must be a string or a non-empty list of strings", "prompt")
