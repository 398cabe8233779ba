"""``get_client``: a client by provider name (what graphs and the CLI use)."""

from __future__ import annotations

from typing import Any

from tinyllm.models._base import ModelClient
from tinyllm.models.local import DEFAULT_LOCAL_MODEL, LocalClient
from tinyllm.models.ollama import DEFAULT_OLLAMA_URL, OllamaClient
from tinyllm.models.openai import OpenAIClient

__all__ = ["PROVIDERS", "get_client"]

#: The providers ``get_client`` knows.
PROVIDERS = ("local", "ollama", "openai")


def get_client(
    provider: str = "local",
    *,
    model: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> ModelClient:
    """A client for ``provider`` (one of ``PROVIDERS``).

    ``model`` is the model name (Ollama, OpenAI) or a GGUF path (local; None or
    ``"gemma3-270m"`` is the default embedded model). ``options`` go to the client's constructor.

    Example:
        >>> get_client("bard")
        Traceback (most recent call last):
        ...
        ValueError: unknown provider 'bard'; valid: local, ollama, openai
    """
    if provider == "local":
        if base_url is not None:
            raise ValueError("base_url does not apply to provider 'local' (it runs in-process)")
        path = None if model in (None, DEFAULT_LOCAL_MODEL) else model
        return LocalClient(path, **options)
    if provider == "ollama":
        return OllamaClient(base_url or DEFAULT_OLLAMA_URL, model or "llama3.2", **options)
    if provider == "openai":
        return OpenAIClient(base_url or "http://127.0.0.1:8000/v1", model or "default", **options)
    raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(PROVIDERS)}")
