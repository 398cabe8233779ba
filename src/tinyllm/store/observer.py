"""``StoreObserver``: one performance event per request, from the request lifecycle.

Attach it once; every request that ends is queued as an event (``event_type`` =
``event_prefix + request_type``, the model, the duration, the tokens, success and
``error_type``). ``record_event`` costs a few microseconds and never touches the disk
on the request's thread.

Example:
    >>> from tinyllm.lifecycle import get_lifecycle
    >>> get_lifecycle().add_observer(StoreObserver(db))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinyllm.lifecycle import Request
    from tinyllm.store.database import MetricsDatabase

__all__ = ["StoreObserver"]


def _endpoint(request_type: str) -> str:
    # The request type IS the endpoint (no product prefix to drop), streamed as "/stream".
    if request_type.endswith("_stream") and len(request_type) > 7:
        return request_type[:-7] + "/stream"
    return request_type


class StoreObserver:
    """A ``RequestObserver`` that records each finished request in ``db``.

    ``event_prefix`` is prepended to the request type (``"diffusion_"`` gives the
    diffusion service's ``diffusion_generate``); the endpoint is stored explicitly, so the
    product-prefix rule never has to guess.
    """

    __slots__ = ("_endpoints", "_prefix", "_record", "db")

    def __init__(self, db: MetricsDatabase, event_prefix: str = "") -> None:
        if not isinstance(event_prefix, str):
            raise TypeError(f"event_prefix must be a str, got {type(event_prefix).__name__}")
        self.db = db
        self._prefix = event_prefix
        self._record = db.record_event
        self._endpoints: dict[str, tuple[str, str]] = {}

    def on_start(self, request: Request) -> None:
        """Nothing to do until the request ends."""

    def on_end(self, request: Request) -> None:
        """Queue the finished request as one event."""
        names = self._endpoints.get(request.request_type)
        if names is None:
            rt = request.request_type
            names = self._endpoints[rt] = (self._prefix + rt, _endpoint(rt))
        metadata: dict[str, Any] = {"endpoint": names[1], "token_count": request.output_tokens,
                                    "input_tokens": request.input_tokens, "graph": request.graph}
        status = request.status
        if status == "cancelled":
            # Neither a success nor an error: the store counts it as a request, not a
            # failure, and keeps why it ended short.
            metadata["status"] = status
        else:
            metadata["success"] = status == "success"
        if request.error_type is not None:
            metadata["error_type"] = request.error_type
        if request.request_id is not None:
            metadata["request_id"] = request.request_id
        if request.cost_usd is not None:
            metadata["cost_usd"] = request.cost_usd
        if request.slo is not None:
            metadata["slo_met"] = request.slo["all"]
        self._record(names[0], request.duration or 0.0, model_id=request.model,
                     metadata=metadata)
