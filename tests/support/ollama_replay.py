"""A stand-in Ollama server that replays recorded real responses byte for byte.

No Ollama server can run on the test machines, so ``OllamaReplayServer`` answers
``POST /api/generate`` and ``POST /api/chat`` with the recordings in
``tests/fixtures/ollama`` (see the README there for where each came from). It picks the
recording by endpoint and by the request's ``"stream"`` flag (Ollama streams unless the
flag is false), and sends it the way Ollama does: a stream as chunked
``application/x-ndjson``, one flushed line at a time (optionally ``line_delay`` seconds
apart); a whole answer as ``application/json; charset=utf-8`` with a Content-Length.
Every request body is recorded, so a test can check what the client sent.

Example:
    >>> with OllamaReplayServer() as ollama:                            # doctest: +SKIP
    ...     client = OllamaClient(ollama.url, "granite3.3:2b")
    ...     client.generate("Describe a rabbit in 2 short sentences").text
    ...     ollama.bodies[-1]["stream"]
    False

``use(...)`` swaps a recording (the ``thinking`` one, say); ``script(...)`` queues
one-off answers ahead of the recordings (``recorded_error(404)`` is Ollama's real
"model not found").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_server import Exchange, FaultServer, Reply

__all__ = [
    "DEFAULT_RECORDINGS",
    "FIXTURES",
    "OllamaReplayServer",
    "ollama_replay",
    "read_recording",
]

#: Where the recordings live.
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ollama"

#: (endpoint, streamed) -> recording file.
DEFAULT_RECORDINGS: dict[tuple[str, bool], str] = {
    ("/api/generate", True): "generate_stream.ndjson",
    ("/api/generate", False): "generate.json",
    ("/api/chat", True): "chat_stream.ndjson",
    ("/api/chat", False): "chat.json",
}

_NDJSON = "application/x-ndjson"
_JSON = "application/json; charset=utf-8"  # what gin's c.JSON sends


def read_recording(name: str) -> bytes:
    """The bytes of recording ``name`` (a file name in ``FIXTURES``)."""
    return (FIXTURES / name).read_bytes()


class OllamaReplayServer(FaultServer):
    """Replays recorded Ollama answers on a real socket; see the module docstring.

    Args:
        line_delay: seconds between the lines of a streamed answer.
        recordings: (endpoint, streamed) -> file, replacing ``DEFAULT_RECORDINGS``.
    """

    def __init__(
        self, *, line_delay: float = 0.0,
        recordings: dict[tuple[str, bool], str] | None = None,
    ) -> None:
        super().__init__()
        self.line_delay = line_delay
        self.recordings = dict(DEFAULT_RECORDINGS if recordings is None else recordings)

    def use(self, endpoint: str, *, stream: bool, recording: str) -> None:
        """Answer (``endpoint``, ``stream``) with ``recording`` from now on."""
        if not (FIXTURES / recording).is_file():
            raise ValueError(f"no recording {recording!r} in {FIXTURES}")
        self.recordings[(endpoint, stream)] = recording

    @staticmethod
    def recorded_error(status: int = 404,
                       recording: str = "error_model_not_found.json") -> Reply:
        """Ollama's error answer: ``status`` with a recorded ``{"error": ...}`` body."""
        return Reply(status=status, body=read_recording(recording), content_type=_JSON)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests received, oldest first."""
        return [e.json for e in self.exchanges]

    def respond(self, exchange: Exchange) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if exchange.method != "POST":
            return Reply(status=405, body=b"405 method not allowed", content_type="text/plain")
        try:
            body = exchange.json
        except ValueError as exc:
            error = json.dumps({"error": str(exc)}, separators=(",", ":"))
            return Reply(status=400, body=error.encode(), content_type=_JSON)
        streamed = not (isinstance(body, dict) and body.get("stream") is False)
        name = self.recordings.get((exchange.path, streamed))
        if name is None:  # Go's mux answer to an unknown path
            return Reply(status=404, body=b"404 page not found",
                         content_type="text/plain; charset=utf-8")
        data = read_recording(name)
        if streamed:
            return Reply(body=tuple(data.splitlines(keepends=True)), content_type=_NDJSON,
                         stall_between=self.line_delay)
        return Reply(body=data, content_type=_JSON)


@pytest.fixture
def ollama_replay() -> Iterator[OllamaReplayServer]:
    """A started ``OllamaReplayServer`` with the default recordings, closed after the test."""
    with OllamaReplayServer() as server:
        yield server
