"""Model clients: one interface, three backends, every call observed once.

* ``LocalClient`` — an embedded GGUF model in-process (default: Gemma 3 270M).
* ``OllamaClient`` — an Ollama server's own API.
* ``OpenAIClient`` — any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenAI).

Each has ``generate``/``stream`` and ``agenerate``/``astream``, and each call goes
through the one flow in ``ModelClient`` (cache, rate limiter, circuit breaker, retries,
timeouts) and the one request lifecycle (metrics, span, log line, error event, store row).

Example:
    >>> from tinyllm.models import get_client
    >>> client = get_client("local")                                  # doctest: +SKIP
    >>> client.generate("Question: What is 2+2?\\nAnswer:", max_tokens=8).text  # doctest: +SKIP
"""

from tinyllm.models._base import AsyncTextStream, ModelClient, TextStream
from tinyllm.models._factory import PROVIDERS, get_client
from tinyllm.models._types import Completion, GenerationRequest, Message
from tinyllm.models.local import DEFAULT_LOCAL_MODEL, LocalClient, default_model_path
from tinyllm.models.ollama import DEFAULT_OLLAMA_URL, OllamaClient
from tinyllm.models.openai import OpenAIClient

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_OLLAMA_URL",
    "PROVIDERS",
    "AsyncTextStream",
    "Completion",
    "GenerationRequest",
    "LocalClient",
    "Message",
    "ModelClient",
    "OllamaClient",
    "OpenAIClient",
    "TextStream",
    "default_model_path",
    "get_client",
]
