"""The values a model client takes and returns: ``GenerationRequest``, ``Completion``,
and ``Delta`` (what a backend yields to the shared flow).

Validation happens once, when the request is built, so a bad argument raises at the
call site with a message naming it — before any socket is opened or metric touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Completion", "Delta", "GenerationRequest", "Message"]

Message = Mapping[str, Any]

_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One call's parameters, validated.

    Exactly one of ``prompt`` (plain completion) and ``messages`` (chat) is set.

    Example:
        >>> GenerationRequest(prompt="Question: 2+2?\\nAnswer:", max_tokens=8).max_tokens
        8
        >>> GenerationRequest(prompt="")
        Traceback (most recent call last):
        ...
        ValueError: prompt must be a non-empty str
    """

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt= and messages=")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt):
            raise ValueError("prompt must be a non-empty str")
        if self.messages is not None:
            _check_messages(self.messages)
        if self.system is not None and not isinstance(self.system, str):
            raise TypeError(f"system must be a str, got {type(self.system).__name__}")
        if self.max_tokens is not None and (
            isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
            or self.max_tokens < 1
        ):
            raise ValueError(f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")
        _check_float("temperature", self.temperature, 0.0, 100.0)
        _check_float("top_p", self.top_p, 0.0, 1.0)
        if self.top_p is not None and self.top_p == 0:
            raise ValueError("top_p must be in (0, 1], got 0")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if self.seed is not None and (
                isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")

    @property
    def is_chat(self) -> bool:
        """True when the request carries chat messages rather than a prompt."""
        return self.messages is not None

    def chat_messages(self) -> list[dict[str, Any]]:
        """The request as chat messages (a prompt becomes one user message)."""
        out: list[dict[str, Any]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        if self.messages is not None:
            out.extend(dict(m) for m in self.messages)
        else:
            out.append({"role": "user", "content": self.prompt})
        return out

    def cache_params(self) -> dict[str, Any]:
        """Every parameter that shapes the answer, for the response-cache key."""
        return {
            "prompt": self.prompt,
            "messages": None if self.messages is None else [dict(m) for m in self.messages],
            "system": self.system,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "seed": self.seed,
            **{f"extra.{k}": v for k, v in sorted(self.extra.items())},
        }


def _check_float(name: str, value: float | None, low: float, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} mappings")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a mapping, got {type(message).__name__}")
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] is {role!r}; valid: {', '.join(_ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}]['content'] must be a str")


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished answer and what it cost.

    ``input_tokens``/``output_tokens`` are the backend's own counts where it reports
    them (Ollama's ``prompt_eval_count``/``eval_count``, OpenAI ``usage``, llama.cpp's
    tokenizer), else the counted stream chunks. ``ttft`` is None when the answer was not
    streamed (no first token was seen arriving). ``cached`` answers cost no model call.

    Example:
        >>> c = Completion(text="4", model="m", provider="local", output_tokens=2, duration=0.5)
        >>> c.tokens_per_second
        4.0
    """

    text: str
    model: str
    provider: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    ttft: float | None = None
    duration: float = 0.0
    cached: bool = False

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over the whole duration, or None when either is unknown."""
        if not self.output_tokens or self.duration <= 0:
            return None
        return self.output_tokens / self.duration


@dataclass(slots=True)
class Delta:
    """One piece a backend yields: text, how many tokens it carries, and (on the last
    piece, usually) the finish reason and the backend's own token counts.

    ``tokens`` drives TTFT and inter-token timing; a non-streamed answer arrives as one
    delta with ``tokens=0`` (no token was seen arriving) and its usage counts.
    """

    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: The part of ``input_tokens`` the provider served from its prompt cache.
    cached_input_tokens: int | None = None
