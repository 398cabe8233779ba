"""What a graph runs on: the model-client protocol the executor calls, and the factory that
makes a client for each node's ``ClientSpec``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from tinyllm.graph.model import ClientSpec

__all__ = ["ClientFactory", "GraphCompletion", "GraphModelClient", "default_client_factory"]


class GraphCompletion(Protocol):
    """What ``GraphModelClient.generate`` returns; the executor reads only ``text``."""

    @property
    def text(self) -> str:
        """The generated text."""


class GraphModelClient(Protocol):
    """The model client a graph runs on (``tinyllm.models`` clients fit it).

    Structural: anything with these members works, which is also the test seam.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Done:
        ...     text: str
        >>> class Echo:
        ...     provider, model = "echo", "echo-1"
        ...     def generate(self, prompt, *, graph="default", max_tokens=None,
        ...                  temperature=None, **params):
        ...         return Done(prompt)
        ...     def stream(self, prompt, *, graph="default", max_tokens=None,
        ...                temperature=None, **params):
        ...         yield prompt
    """

    @property
    def provider(self) -> str:
        """The backend: local, ollama, openai."""

    @property
    def model(self) -> str:
        """The model name, as metrics label it."""

    def generate(
        self, prompt: str, *, graph: str = "default", max_tokens: int | None = None,
        temperature: float | None = None, **params: Any,
    ) -> GraphCompletion:
        """The whole completion of ``prompt``."""

    def stream(
        self, prompt: str, *, graph: str = "default", max_tokens: int | None = None,
        temperature: float | None = None, **params: Any,
    ) -> Iterator[str]:
        """The completion of ``prompt`` as text pieces."""


#: Makes the client for a node's ``ClientSpec``; called once per distinct spec per executor.
ClientFactory = Callable[[ClientSpec], GraphModelClient]


def default_client_factory(spec: ClientSpec) -> GraphModelClient:
    """``tinyllm.models.get_client(spec.provider, model=spec.model, base_url=spec.base_url)``.

    ``None`` fields mean ``get_client``'s defaults (provider ``local``, the embedded
    model). Imported on first use, so loading and validating graphs never needs the
    model clients (or their extras).

    Example:
        >>> client = default_client_factory(ClientSpec("ollama", "llama3"))  # doctest: +SKIP
    """
    # importlib rather than an import statement: tinyllm.models is a layer above this
    # one (with optional extras), and graphs must load and validate without it.
    models = importlib.import_module("tinyllm.models")
    if spec.provider is None:  # get_client's own default provider (the embedded model)
        client = models.get_client(model=spec.model, base_url=spec.base_url)
    else:
        client = models.get_client(spec.provider, model=spec.model, base_url=spec.base_url)
    return cast(GraphModelClient, client)

