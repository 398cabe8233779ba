"""``OllamaClient``: Ollama's own API (``/api/generate``, ``/api/chat``), streamed
NDJSON or whole, with token counts and timings taken from Ollama's fields.

Ollama reports, on the last line of every answer, ``prompt_eval_count`` (input tokens),
``eval_count`` (output tokens), ``load_duration``, ``prompt_eval_duration``,
``eval_duration`` and ``total_duration`` (nanoseconds). The counts become the request's
usage (they win over counted chunks); a ``load_duration`` of 100 ms or more means Ollama
loaded the model for this request, and is observed in
``tinyllm_model_load_duration_seconds`` (a warm model reports a few milliseconds,
which is not a load).

Example:
    >>> client = OllamaClient(model="qwen2.5:0.5b")              # doctest: +SKIP
    >>> client.generate("Why is the sky blue?").text           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from tinyllm.errors import ModelError
from tinyllm.models._http import HTTPModelClient, count_field, parse_json_line
from tinyllm.models._types import Delta, GenerationRequest
from tinyllm.resilience import Deadline

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaClient"]

DEFAULT_OLLAMA_URL = "http://localhost:11434"

#: Ollama's load_duration at or above this is a real model load (seconds).
_REAL_LOAD_SECONDS = 0.1


class OllamaClient(HTTPModelClient):
    """A client for an Ollama server. Options as for every ``ModelClient``; ``options``
    passes Ollama's own model options (``num_ctx``, ``repeat_penalty``, ...) through."""

    provider: ClassVar[str] = "ollama"

    def __init__(
        self,
        base_url: str = DEFAULT_OLLAMA_URL,
        model: str = "llama3.2",
        *,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | None = None,
        transport: Any = None,
        **client_options: Any,
    ) -> None:
        super().__init__(base_url, model, transport=transport, **client_options)
        self._options = dict(options or {})
        self._keep_alive = keep_alive

    def _payload(self, request: GenerationRequest, streamed: bool) -> tuple[str, dict[str, Any]]:
        options = dict(self._options)
        for ours, theirs in (("max_tokens", "num_predict"), ("temperature", "temperature"),
                             ("top_p", "top_p"), ("seed", "seed")):
            value = getattr(request, ours)
            if value is not None:
                options[theirs] = value
        if request.stop:
            options["stop"] = list(request.stop)
        payload: dict[str, Any] = {"model": self.model, "stream": streamed}
        if request.is_chat:
            path = "/api/chat"
            payload["messages"] = request.chat_messages()
        else:
            path = "/api/generate"
            payload["prompt"] = request.prompt
            if request.system is not None:
                payload["system"] = request.system
        if options:
            payload["options"] = options
        if self._keep_alive is not None:
            payload["keep_alive"] = self._keep_alive
        payload.update(request.extra)
        return path, payload

    def _deltas(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> Iterator[Delta]:
        path, payload = self._payload(request, streamed)
        url = self.base_url + path
        chat = request.is_chat
        objects: Iterator[dict[str, Any]]
        if streamed:
            objects = (parse_json_line(line, url) for line in
                       self._http.post_lines(path, payload, deadline, streamed=True))
        else:
            objects = iter((self._http.post_json(path, payload, deadline),))
        for data in objects:
            error = data.get("error")
            if error is not None:  # Ollama reports mid-stream failures as a line
                raise ModelError(f"{url} reported an error: {error}", error_type="server_error")
            part = data.get("message") if chat else data
            if not isinstance(part, dict):
                part = {}
            text = part.get("content" if chat else "response") or ""
            # Thinking models stream their reasoning in "thinking": those are generated
            # tokens (eval_count includes them) but not part of the answer's text.
            thinking = part.get("thinking") or ""
            if not isinstance(text, str) or not isinstance(thinking, str):
                raise ModelError(f"{url} sent a non-text answer: {str(data)[:80]!r}",
                                 error_type="server_error")
            tokens = 1 if streamed and (text or thinking) else 0
            if not data.get("done"):
                yield Delta(text=text, tokens=tokens)
                continue
            self._record_load(data.get("load_duration"))
            yield Delta(
                text=text, tokens=tokens,
                finish_reason=data.get("done_reason") or "stop",
                input_tokens=count_field(data.get("prompt_eval_count")),
                output_tokens=count_field(data.get("eval_count")),
            )
            return
        raise ModelError(f"{url} ended the answer without a final 'done' line",
                         error_type="server_error")

    def _record_load(self, nanoseconds: Any) -> None:
        if isinstance(nanoseconds, int) and nanoseconds >= _REAL_LOAD_SECONDS * 1e9:
            self._collector.record_model_load(nanoseconds / 1e9, self.model)
