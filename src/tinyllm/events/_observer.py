"""``RequestErrorObserver``: a failed LLM request of the request lifecycle as an event."""

from __future__ import annotations

from typing import Any

from tinyllm.events._emitter import emit_event
from tinyllm.events._model import EventCategory, EventSeverity

__all__ = ["RequestErrorObserver"]


class RequestErrorObserver:
    """A lifecycle observer that emits an ``llm.request.failed`` event (category
    ``model``, severity error) for each failed LLM request: model, graph, provider,
    request type and the classified ``error_kind`` beside the exception's class name,
    correlated with the request's trace.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.events import BufferedEventHandler, get_event_emitter
        >>> from tinyllm.lifecycle import RequestLifecycle
        >>> from tinyllm.metrics import MetricsCollector
        >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
        >>> lc.add_observer(RequestErrorObserver())
        >>> buffer = BufferedEventHandler()
        >>> get_event_emitter().add_handler(buffer)
        >>> try:
        ...     with lc.start("m"):
        ...         raise TimeoutError("no answer")
        ... except TimeoutError:
        ...     pass
        >>> buffer.get_events()[-1].data["error_kind"]
        'timeout'
        >>> get_event_emitter().remove_handler(buffer)
    """

    __slots__ = ()

    def on_start(self, request: Any) -> None:
        """Nothing to do: only failures become events."""

    def on_end(self, request: Any) -> None:
        """Emit the event when the request failed."""
        error = request.error
        if error is None:
            return
        try:
            text = str(error)
        except Exception:  # a broken __str__ must not turn reporting into a second failure
            text = f"<unprintable {type(error).__name__}>"
        # No traceback: a classified backend failure is an outcome, not a bug in the
        # caller, and its stack would bury the message (the span keeps the stack).
        emit_event(
            "llm.request.failed", EventCategory.MODEL, EventSeverity.ERROR,
            f"LLM request to {request.model} failed ({request.error_type})",
            {"model": request.model, "graph": request.graph,
             "provider": request.provider or "tinyllm", "request_type": request.request_type,
             "error_kind": request.error_type, "error_type": type(error).__name__,
             "error_message": text,
             "duration_ms": round((request.duration or 0.0) * 1000, 3)},
            trace_id=request.trace_id,
        )
