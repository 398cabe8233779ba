"""The embedded model as an upstream: llama.cpp in-process, one generation at a time.

llama.cpp's context serves one generation at a time, so requests wait in a bounded
``RequestQueue`` (one worker thread; the ``tinyllm_queue_*`` families show its depth and
waits) and a full queue answers 503 at once. The worker streams llama-cpp-python's own
OpenAI-shaped chunks to the event loop as they come; a client that goes away stops the
generation at the next token.

Example:
    >>> from tinyllm.serve.config import default_config
    >>> up = LocalUpstream(default_config().models["gemma3-270m"])   # doctest: +SKIP
    >>> await up.start()                                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from tinyllm.models.local import LocalClient
from tinyllm.queue import RequestQueue
from tinyllm.serve.config import ModelRoute

__all__ = ["DEFAULT_MAX_TOKENS", "LocalUpstream"]

#: The answer's length when a request gives no ``max_tokens`` (llama.cpp's own default
#: of 16 cuts most answers short).
DEFAULT_MAX_TOKENS = 256
_END = object()
# Parameters llama-cpp-python's create_*_completion take beyond messages / prompt.
_PASSED = ("frequency_penalty", "logit_bias", "logprobs", "max_tokens", "min_p",
           "presence_penalty", "repeat_penalty", "seed", "stop", "temperature", "top_k",
           "top_logprobs", "top_p", "typical_p")


class LocalUpstream:
    """The embedded model behind ``route`` (the default Gemma 3 270M)."""

    provider = "local"

    def __init__(self, route: ModelRoute, *, max_queue: int = 64,
                 client: LocalClient | None = None) -> None:
        self.route = route
        self._client = client or LocalClient(model=route.name, progress=False)
        self._queue = RequestQueue(max_size=max_queue, workers=1,
                                   name=f"gateway:{route.name}")
        self._llama: Any = None
        self.n_ctx = 2048
        self.ready = False
        self.load_error: str | None = None

    async def start(self) -> None:
        """Load the model (off the event loop); readiness waits for it."""
        try:
            self._llama = await asyncio.to_thread(self._client.load)
            self.n_ctx = int(self._llama.n_ctx())
            self.ready = True
        except Exception as exc:  # reported by readiness and by each request
            self.load_error = str(exc)

    async def close(self) -> None:
        await asyncio.to_thread(self._queue.shutdown, True, True)

    def prompt_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True))

    def open(self, kind: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        """Queue a generation for a ``chat`` or ``completion`` body; its pieces, as they
        come: first the prompt's token count (an int), then llama-cpp-python's
        OpenAI-shaped chunks.

        Raises ``QueueFullError`` (a 503) at once when the queue is full; the model's
        own errors are raised by the iterator.
        """
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        params = {k: body[k] for k in _PASSED if body.get(k) is not None}
        params.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        llama = self._llama

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, item)

        def generate() -> None:
            try:
                if kind == "chat":
                    messages = body["messages"]
                    # The chat template's own tokens are not counted: llama-cpp-python
                    # reports no usage for a streamed chat, so the contents stand in.
                    text = "\n".join(str(m.get("content") or "") for m in messages)
                    put(self.prompt_tokens(text))
                    gen = llama.create_chat_completion(messages, stream=True, **params)
                else:
                    prompt = body["prompt"]
                    prompt = prompt if isinstance(prompt, str) else "".join(prompt)
                    put(self.prompt_tokens(prompt))
                    gen = llama.create_completion(prompt, stream=True, **params)
                try:
                    for chunk in gen:
                        if stop.is_set():
                            break
                        put(chunk)
                finally:
                    gen.close()
            except Exception as exc:  # the model's own failure, raised on the loop side
                put(exc)
            put(_END)

        future = self._queue.submit(generate)

        async def drain() -> AsyncIterator[Any]:
            try:
                while True:
                    item = await pieces.get()
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                future.cancel()  # still waiting in the queue: it never runs

        return drain()
