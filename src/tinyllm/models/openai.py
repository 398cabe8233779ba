"""``OpenAIClient``: any OpenAI-compatible server (vLLM, llama.cpp's server, LM Studio,
OpenAI itself), ``/chat/completions`` or ``/completions``, streamed SSE or whole.

Usage comes from the server: ``usage`` on a whole answer, and on a stream the final
chunk that ``stream_options.include_usage`` asks for. Servers that ignore that option
(llama.cpp's) send no usage on a stream; then each chunk with text counts as one token,
which is how those servers send them.

``base_url`` is the API root including its version, as OpenAI's own SDK takes it:
``http://127.0.0.1:8000/v1``. ``api_key`` goes in the ``Authorization`` header, which
every tinyllm sink redacts.

Example:
    >>> client = OpenAIClient("http://127.0.0.1:8000/v1", model="gemma-3-270m")  # doctest: +SKIP
    >>> client.generate("Question: What is 2+2?\\nAnswer:", max_tokens=8).text   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from tinyllm.errors import ModelError
from tinyllm.models._http import HTTPModelClient, count_field, parse_json_line
from tinyllm.models._types import Delta, GenerationRequest
from tinyllm.resilience import Deadline

__all__ = ["OpenAIClient"]

_APIS = ("chat", "completions")


class OpenAIClient(HTTPModelClient):
    """A client for an OpenAI-compatible server.

    ``api="chat"`` (default) sends a plain prompt as one user message; ``"completions"``
    sends it as raw text to ``/completions`` (what base models answer best).
    """

    provider: ClassVar[str] = "openai"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "default",
        api_key: str | None = None,
        *,
        api: Literal["chat", "completions"] = "chat",
        transport: Any = None,
        **client_options: Any,
    ) -> None:
        if api not in _APIS:
            raise ValueError(f"api={api!r}; valid: {', '.join(_APIS)}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        super().__init__(base_url, model, headers=headers, transport=transport,
                         **client_options)
        self._api_key = api_key or None
        self.api = api

    def _payload(self, request: GenerationRequest, streamed: bool) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"model": self.model, "stream": streamed}
        chat = request.is_chat or self.api == "chat"
        if chat:
            path = "/chat/completions"
            payload["messages"] = request.chat_messages()
        else:
            path = "/completions"
            prompt = request.prompt or ""
            if request.system is not None:
                prompt = f"{request.system}\n\n{prompt}"
            payload["prompt"] = prompt
        for name in ("max_tokens", "temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                payload[name] = value
        if request.stop:
            payload["stop"] = list(request.stop)
        if streamed:
            payload["stream_options"] = {"include_usage": True}
        payload.update(request.extra)
        return path, payload

    def _deltas(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> Iterator[Delta]:
        try:
            yield from self._read(request, streamed, deadline)
        except ModelError as exc:
            key = self._api_key
            if key is None or key not in str(exc):
                raise
            # A server may quote the key it refused ("Incorrect API key provided: ...");
            # the message goes on to logs, events and spans, so the key leaves it here.
            # The original is dropped (from None): it holds the key too.
            raise ModelError(
                str(exc).replace(key, "[REDACTED]"), error_type=exc.error_type,
                status_code=exc.status_code, retry_after=exc.retry_after,
            ) from None

    def _read(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> Iterator[Delta]:
        path, payload = self._payload(request, streamed)
        url = self.base_url + path
        chat = path == "/chat/completions"
        if not streamed:
            yield _answer(self._http.post_json(path, payload, deadline), chat, url,
                          streamed=False)
            return
        finished = False
        for line in self._http.post_lines(path, payload, deadline, streamed=True):
            if not line.startswith("data:"):
                continue  # SSE comments, "event:" and "id:" lines carry nothing for us
            data = line[5:].strip()
            if data == "[DONE]":
                return
            delta = _answer(parse_json_line(data, url), chat, url, streamed=True)
            finished = finished or delta.finish_reason is not None
            yield delta
        if not finished:  # the body ended before the answer did: cut short, not done
            raise ModelError(f"{url} ended the stream before 'data: [DONE]'",
                             error_type="server_error")


def _answer(body: dict[str, Any], chat: bool, url: str, *, streamed: bool) -> Delta:
    """One response object (a whole answer or a stream chunk) as a ``Delta``."""
    if "error" in body:
        error = body["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ModelError(f"{url} reported an error: {message}", error_type="server_error")
    choices = body.get("choices")
    text, finish = "", None
    if isinstance(choices, list) and choices:
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ModelError(f"{url} sent a malformed choice: {choice!r:.80}",
                             error_type="server_error")
        if chat:
            part = choice.get("delta" if streamed else "message") or {}
            text = part.get("content") or "" if isinstance(part, dict) else ""
        else:
            text = choice.get("text") or ""
        finish = choice.get("finish_reason")
    elif choices is None and "usage" not in body:
        raise ModelError(f"{url} sent an answer without choices: {str(body)[:80]!r}",
                         error_type="server_error")
    if not isinstance(text, str):
        raise ModelError(f"{url} sent a non-text answer", error_type="server_error")
    usage = body.get("usage")
    input_tokens = output_tokens = cached = None
    if isinstance(usage, dict):
        input_tokens = count_field(usage.get("prompt_tokens"))
        output_tokens = count_field(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):  # prompt-cache hits, priced apart
            cached = count_field(details.get("cached_tokens"))
    return Delta(
        text=text, tokens=1 if streamed and text else 0,
        finish_reason=finish if isinstance(finish, str) else None,
        input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached,
    )
