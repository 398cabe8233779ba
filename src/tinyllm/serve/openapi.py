"""The gateway's HTTP APIs as OpenAPI 3.1 data: the OpenAI API under ``/v1`` and the
Ollama API under ``/api``, beside tinyllm's own routes (``tinyllm.http.openapi``).

The request schemas say what the gateway itself checks (``tinyllm.serve.requests``,
``tinyllm.serve.ollama_api``) and no more: every other field goes to the upstream as it
came. ``model`` is one of the models this gateway serves (another is a 404). Errors are
OpenAI's shape under ``/v1`` and Ollama's (``{"error": "..."}``) under ``/api``.

Example:
    >>> from tinyllm.serve.config import default_config
    >>> paths = gateway_paths(default_config())
    >>> paths["/v1/chat/completions"]["post"]["requestBody"]["required"]
    True
"""

from __future__ import annotations

from typing import Any

from tinyllm.http.openapi import SIMPLE_ERROR, json_answer
from tinyllm.serve.config import GatewayConfig
from tinyllm.serve.requests import MAX_TOKEN_ID, MAX_TOKENS_LIMIT, ROLES

__all__ = ["OPENAI_ERROR", "gateway_paths", "with_keys"]

#: OpenAI's error shape, what every ``/v1`` error answers.
OPENAI_ERROR: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}},
}

_MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"type": "string", "enum": list(ROLES)},
    "content": {"type": ["string", "array", "null"]}}}
_MESSAGES = {"type": "array", "minItems": 1, "items": _MESSAGE}
_TOKENS = {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS_LIMIT}
_STREAM_OPTIONS = {"type": ["object", "null"],
                   "properties": {"include_usage": {"type": "boolean"}}}
_STRINGS = {"type": "array", "minItems": 1, "items": {"type": "string"}}
_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}
_TOKEN_IDS = {"type": "array", "items": _TOKEN_ID}

# What each status means, for the OpenAI and the Ollama API alike.
_STATUSES = {
    "400": "malformed JSON, a missing or mistyped field, max_tokens out of range; an "
           "upstream 400/404/413/422",
    "401": "no key, or an unknown one (with keys configured)",
    "403": "the key may not use this model",
    "404": "an unknown model",
    "405": "a method the path does not take",
    "408": "the body did not arrive within 10 s",
    "413": "a body over 1 MiB",
    "429": "the key's rpm, tpm or budget is used up, or the upstream rate-limited",
    "431": "more than 16 KiB of headers",
    "501": "the model's provider cannot serve this (embeddings from the embedded model)",
    "502": "the upstream failed or answered something that is not JSON / SSE",
    "503": "the model is busy or loading, or its circuit breaker is open",
    "504": "the upstream did not answer in time",
}
_CALL_ERRORS = ("400", "404", "405", "408", "413", "429", "431", "501", "502", "503", "504")
_KEY_ERRORS = ("401", "403")


def _errors(statuses: tuple[str, ...], schema: dict[str, Any]) -> dict[str, Any]:
    return {s: json_answer(_STATUSES[s], schema) for s in statuses}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _post(summary: str, tag: str, schema: dict[str, Any], ok: dict[str, Any],
          error: dict[str, Any], keyed: bool) -> dict[str, Any]:
    statuses = _CALL_ERRORS + (_KEY_ERRORS if keyed else ())
    return {"post": {"summary": summary, "tags": [tag], "requestBody": _body(schema),
                     "responses": {"200": ok, **_errors(statuses, error)}}}


def _get(summary: str, tag: str, ok: dict[str, Any], error: dict[str, Any], keyed: bool,
         extra: tuple[str, ...] = ()) -> dict[str, Any]:
    statuses = ("405", "431", *extra) + (("401",) if keyed else ())
    return {"get": {"summary": summary, "tags": [tag],
                    "responses": {"200": ok, **_errors(statuses, error)}}}


# One server-sent event: its data is a JSON chunk, an error or [DONE].
_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}


def _whole_or_stream(description: str, stream_type: str) -> dict[str, Any]:
    stream = _EVENT if stream_type == "text/event-stream" else {"type": "string"}
    return {"description": description, "content": {
        "application/json": {"schema": {"type": "object"}},
        stream_type: {"schema": stream}}}


_MODEL_CARD = {"type": "object", "required": ["id", "object", "created", "owned_by"],
               "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                              "created": {"type": "integer"},
                              "owned_by": {"type": "string"}}}
_OLLAMA_MODELS = {"type": "object", "required": ["models"],
                  "properties": {"models": {"type": "array", "items": {"type": "object"}}}}


def gateway_paths(config: GatewayConfig) -> dict[str, Any]:
    """The OpenAPI path items of the gateway's model APIs for ``config`` (its models
    are the ``model`` values allowed; with keys, 401/403 are answered too)."""
    keyed = bool(config.keys)
    model = {"type": "string", "enum": sorted(config.models)}
    common = {"model": model, "stream": {"type": ["boolean", "null"]},
              "max_tokens": _TOKENS, "max_completion_tokens": _TOKENS,
              "stream_options": _STREAM_OPTIONS}
    chat = {"type": "object", "required": ["model", "messages"],
            "properties": {**common, "messages": _MESSAGES}}
    completion = {"type": "object", "required": ["model", "prompt"],
                  "properties": {**common, "prompt": {"anyOf": [
                      {"type": "string"}, _STRINGS]}}}
    embedding = {"type": "object", "required": ["model", "input"], "properties": {
        "model": model, "stream": {"enum": [False, None]},
        "input": {"anyOf": [{"type": "string", "minLength": 1}, {
            "type": "array", "minItems": 1,
            "items": {"anyOf": [{"type": "string"}, _TOKEN_ID, _TOKEN_IDS]}}]}}}
    # num_predict -1 (until a stop) and -2 (until the context is full) set no limit.
    options = {"type": ["object", "null"], "properties": {"num_predict": {
        "anyOf": [_TOKENS, {"enum": [-1, -2]}]}}}
    ollama_common = {"model": model, "stream": {"type": "boolean"}, "options": options}
    ollama_chat = {"type": "object", "required": ["model", "messages"],
                   "properties": {**ollama_common, "messages": _MESSAGES}}
    ollama_generate = {"type": "object", "required": ["model", "prompt"], "properties": {
        **ollama_common, "prompt": {"type": "string"},
        "system": {"type": ["string", "null"]}}}
    embed = {"type": "object", "required": ["model", "input"], "properties": {
        "model": model, "input": {"anyOf": [{"type": "string", "minLength": 1}, {
            "type": "array", "minItems": 1, "items": {"type": "string"}}]},
        "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": 2**31 - 1}}}
    embeddings = {"type": "object", "required": ["model", "prompt"], "properties": {
        "model": model, "prompt": {"type": "string", "minLength": 1}}}
    error, simple = OPENAI_ERROR, SIMPLE_ERROR
    return {
        "/v1/chat/completions": _post(
            "A chat completion, whole or streamed (SSE)", "openai", chat,
            _whole_or_stream("the completion, or its stream", "text/event-stream"),
            error, keyed),
        "/v1/completions": _post(
            "A text completion, whole or streamed (SSE)", "openai", completion,
            _whole_or_stream("the completion, or its stream", "text/event-stream"),
            error, keyed),
        "/v1/embeddings": _post(
            "Embeddings, from an OpenAI-compatible or Ollama upstream", "openai",
            embedding, json_answer("the embeddings", {
                "type": "object", "required": ["data"],
                "properties": {"data": {"type": "array"}}}), error, keyed),
        "/v1/models": _get("The models served (a key sees its own)", "openai", json_answer(
            "the list", {"type": "object", "required": ["object", "data"], "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _MODEL_CARD}}}), error, keyed),
        "/v1/models/{id}": {**_get("One model served", "openai", json_answer(
            "its card", _MODEL_CARD), error, keyed, ("404",)), "parameters": [
                {"name": "id", "in": "path", "required": True,
                 "schema": {"type": "string"}}]},
        "/api/chat": _post(
            "Ollama's chat: NDJSON lines while streaming (the default), or one object",
            "ollama", ollama_chat,
            _whole_or_stream("the answer, or its lines", "application/x-ndjson"),
            simple, keyed),
        "/api/generate": _post(
            "Ollama's generate: NDJSON lines while streaming (the default), or one object",
            "ollama", ollama_generate,
            _whole_or_stream("the answer, or its lines", "application/x-ndjson"),
            simple, keyed),
        "/api/embed": _post(
            "Ollama's embeddings of one input or several", "ollama", embed,
            json_answer("the embeddings", {
                "type": "object", "required": ["model", "embeddings"], "properties": {
                    "model": {"type": "string"},
                    "embeddings": {"type": "array", "items": {"type": "array"}}}}),
            simple, keyed),
        "/api/embeddings": _post(
            "Ollama's older embeddings call: one prompt", "ollama", embeddings,
            json_answer("the embedding", {
                "type": "object", "required": ["embedding"],
                "properties": {"embedding": {"type": "array"}}}), simple, keyed),
        "/api/show": {"post": {
            "summary": "One configured model, as Ollama describes it", "tags": ["ollama"],
            "requestBody": _body({"type": "object", "properties": {
                "model": {"type": "string"}, "name": {"type": "string"}}}),
            "responses": {"200": json_answer("the model"),
                          **_errors(("400", "404", "405", "408", "413", "431")
                                    + (("401",) if keyed else ()), simple)}}},
        "/api/tags": _get("The configured models, as Ollama lists them", "ollama",
                          json_answer("the models", _OLLAMA_MODELS), simple, keyed),
        "/api/ps": _get("The models loaded now (the embedded model, once loaded)", "ollama",
                        json_answer("the models", _OLLAMA_MODELS), simple, keyed),
        "/api/version": _get("The Ollama API version spoken", "ollama", json_answer(
            "the version", {"type": "object", "required": ["version"],
                            "properties": {"version": {"type": "string"}}}), simple, keyed),
        "/": {"get": {"summary": "What Ollama clients probe", "tags": ["ollama"],
                      "responses": {"200": {"description": "Ollama is running", "content": {
                          "text/plain": {"schema": {"const": "Ollama is running"}}}}}}},
    }


def with_keys(document: dict[str, Any], gateway: dict[str, Any]) -> dict[str, Any]:
    """``document`` for a gateway with keys: a bearer scheme on the model APIs (whose
    ``gateway`` path items already list their 401/403) and on the store's routes, which
    answer a missing or unknown key 401 in OpenAI's shape; ``/metrics``, ``/health``,
    ``/ready`` and the dashboard stay open."""
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "Authorization: Bearer <a key from the config>"}}
    for path, item in document["paths"].items():
        if not path.startswith(("/v1/", "/api/")):
            continue
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation["security"] = [{"bearer": []}]
            if path not in gateway:  # the store's routes, behind the gateway's keys
                operation["responses"]["401"] = json_answer(_STATUSES["401"], OPENAI_ERROR)
    return document
