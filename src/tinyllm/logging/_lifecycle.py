"""``RequestLogObserver``: one log line per finished LLM request, from the lifecycle."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tinyllm.logging._config import get_logger

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request

__all__ = ["RequestLogObserver"]


class RequestLogObserver:
    """Logs ``llm_request`` (INFO), ``llm_request_cancelled`` (INFO: the client went away)
    or ``llm_request_failed`` (WARNING) when a request ends.

    The line carries model, graph, provider, request type, status, duration and TTFT in
    milliseconds, token counts, the classified ``error_type`` and the request's trace id
    (also outside the ``with`` block, where the span is not current). It never carries
    prompt or completion text. Below the configured level the call is nearly free.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tinyllm.lifecycle import RequestLifecycle
        >>> from tinyllm.logging import capture_logs
        >>> from tinyllm.metrics import MetricsCollector
        >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
        >>> lc.add_observer(RequestLogObserver())
        >>> with capture_logs() as logs, lc.start("m", provider="local") as req:
        ...     req.token(3)
        >>> logs[0]["event"], logs[0]["output_tokens"]
        ('llm_request', 3)
    """

    __slots__ = ("_logger",)

    def __init__(self, logger_name: str = "tinyllm.requests") -> None:
        self._logger = get_logger(logger_name)

    def on_start(self, request: Request) -> None:
        """Nothing until the request ends: one line per request."""

    def on_end(self, request: Request) -> None:
        """Write the request's line."""
        failed = request.error is not None
        # Below the level the line would be dropped anyway; asking first skips building
        # its fields (most of the cost of a filtered line: ~5 µs per request).
        if not self._logger.is_enabled_for(logging.WARNING if failed else logging.INFO):
            return
        fields: dict[str, Any] = {
            "model": request.model,
            "graph": request.graph,
            "provider": request.provider or "tinyllm",
            "request_type": request.request_type,
            "status": request.status,
            "duration_ms": round((request.duration or 0.0) * 1000, 3),
            "input_tokens": request.input_tokens,
            "output_tokens": request.output_tokens,
        }
        if request.ttft is not None:
            fields["ttft_ms"] = round(request.ttft * 1000, 3)
        if request.cached_input_tokens:
            fields["cached_input_tokens"] = request.cached_input_tokens
        if request.cost_usd is not None:
            fields["cost_usd"] = request.cost_usd
        if request.slo is not None:
            fields["slo_met"] = request.slo["all"]
        trace_id = request.trace_id
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if request.request_id is not None:
            fields["request_id"] = request.request_id
        if failed:
            fields["error_type"] = request.error_type
            fields["error"] = f"{type(request.error).__name__}: {request.error}"
            self._logger.warning("llm_request_failed", **fields)
        elif request.status == "cancelled":
            self._logger.info("llm_request_cancelled", **fields)
        else:
            self._logger.info("llm_request", **fields)
