"""One instrumented SDK call: the lifecycle request it opens, and how it ends, once.

Everything here is built never to raise into the caller: the SDK's result and
exceptions pass through untouched, and a fault of ours (an SDK that changed the shape
of its objects) is logged once per place, counted in ``FAULTS``, and the call goes on
unobserved from there.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from tinyllm.lifecycle import RequestLifecycle
    >>> from tinyllm.metrics.collector import MetricsCollector
    >>> lc = RequestLifecycle(MetricsCollector(registry=CollectorRegistry()))
    >>> call = Call.begin(lc, "gpt-x", "chat", "openai")
    >>> call.request.usage(3, 5)
    >>> call.finish()
    >>> call.request.status, call.request.output_tokens
    ('success', 5)
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from time import perf_counter
from typing import Any

from tinyllm._observed import open_request
from tinyllm.lifecycle import Request, RequestLifecycle

__all__ = ["FAULTS", "Call", "OnItem", "fault", "observe_items", "observe_items_async"]

log = logging.getLogger("tinyllm.instrumentation")

#: Faults of the instrumentation itself, by place (never the SDK's own errors).
FAULTS: Counter[str] = Counter()


def fault(where: str, exc: BaseException) -> None:
    """Note a fault of ours at ``where``: counted always, logged the first time."""
    FAULTS[where] += 1
    if FAULTS[where] == 1:
        log.warning("tinyllm instrumentation: %s failed (%s: %s); that call goes on "
                    "unobserved", where, type(exc).__name__, exc)


class Call:
    """The lifecycle request of one SDK call."""

    __slots__ = ("hide_usage", "reasons", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        # True when we asked the server for usage and the caller did not: the
        # usage-only chunk is ours, not theirs.
        self.hide_usage = False
        self.reasons: list[str] = []

    @classmethod
    def begin(cls, lifecycle: RequestLifecycle, model: Any, request_type: str,
              provider: str) -> Call | None:
        """Open the request, or None where the call is already observed (inside an open
        lifecycle request) or opening failed."""
        if open_request.get() is not None:
            return None
        try:
            name = model if isinstance(model, str) and model else "unknown"
            return cls(lifecycle.start(name, "default", request_type, provider=provider))
        except Exception as exc:
            fault("opening the request", exc)
            return None

    def restart_clock(self) -> None:
        """Count from now (an SDK that sends a streamed request on first iteration)."""
        request = self.request
        if request.output_tokens == 0 and request.status is None:
            request.start_time = perf_counter()

    def finish(self) -> None:
        """The call ran to its end."""
        try:
            if self.reasons:
                self.request.set_finish_reasons(*self.reasons)
            self.request.end()
        except Exception as exc:
            fault("ending the request", exc)

    def fail(self, error: BaseException) -> None:
        """The call raised ``error`` (a cancellation ends it as ``cancelled``)."""
        try:
            self.request.end(error)
        except Exception as exc:
            fault("ending the request", exc)

    def cancel(self) -> None:
        """The caller stopped (break, close, never iterated): ``cancelled``, once."""
        try:
            self.request.cancel()
        except Exception as exc:
            fault("ending the request", exc)

    def cancel_when_released(self, owner: object) -> None:
        """End as ``cancelled`` when ``owner`` is garbage-collected unfinished (a stream
        never iterated); ending before that makes this a no-op."""
        # The finalizer holds the request, not this call: the call usually dies in the
        # same collection as the owner, and a weak reference to it would be gone.
        with contextlib.suppress(TypeError):  # no weak references: close/exit still end it
            weakref.finalize(owner, _cancel, self.request)


def _cancel(request: Request) -> None:
    try:
        request.cancel()
    except Exception as exc:
        fault("ending the request", exc)


#: Reads one chunk of a stream into the call; False hides the chunk from the caller.
OnItem = Callable[[Call, Any], bool]


def observe_items(call: Call, items: Iterator[Any], on_item: OnItem,
                  sent_on_first: bool = False) -> Iterator[Any]:
    """``items``, each read into ``call``; the request ends once: at the end
    (``success``), on the SDK's error, or as ``cancelled`` when the caller stops (the
    generator closed: a ``break``, ``close()``, an exception in the caller's loop).
    ``sent_on_first``: the SDK sends the request on the first iteration (the clock
    starts there)."""
    if sent_on_first:
        call.restart_clock()
    try:
        for item in items:
            try:
                keep = on_item(call, item)
            except Exception as exc:  # shaped unlike any we know: show it, count ours
                fault("reading a chunk", exc)
                keep = True
            if keep:
                yield item
    except GeneratorExit:
        call.cancel()
        raise
    except BaseException as exc:  # the SDK's own error, raised unchanged
        call.fail(exc)
        raise
    call.finish()


async def observe_items_async(call: Call, items: AsyncIterator[Any], on_item: OnItem,
                              sent_on_first: bool = False) -> AsyncIterator[Any]:
    """``observe_items`` for an async stream (a cancelled task ends it as cancelled)."""
    if sent_on_first:
        call.restart_clock()
    try:
        async for item in items:
            try:
                keep = on_item(call, item)
            except Exception as exc:
                fault("reading a chunk", exc)
                keep = True
            if keep:
                yield item
    except GeneratorExit:
        call.cancel()
        raise
    except BaseException as exc:
        call.fail(exc)
        raise
    call.finish()
