"""GenAI spans and metrics for every lifecycle request (OpenTelemetry GenAI conventions).

One observer on the request lifecycle: ``on_start`` opens a CLIENT span named
``"{gen_ai.operation.name} {gen_ai.request.model}"``, ``on_end`` adds usage, finish
reasons, TTFT and the outcome and ends it; with GenAI metrics on it also records the
conventions' histograms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Tracer

from tinyllm.telemetry._spans import _record_error

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from tinyllm.lifecycle import Request

#: request_type -> gen_ai.operation.name. Other request types are used as they are.
OPERATIONS: dict[str, str] = {
    "generate": "text_completion",
    "completion": "text_completion",
    "stream": "text_completion",
    "chat": "chat",
    "embed": "embeddings",
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "response": "chat",  # OpenAI's Responses API
}


def operation_of(request_type: str) -> tuple[str, bool]:
    """The GenAI operation of a request type, and whether it is streamed
    (``chat_stream``, the gateway's, is a streamed ``chat``).

    Example:
        >>> operation_of("chat_stream"), operation_of("generate")
        (('chat', True), ('text_completion', False))
    """
    streamed = request_type == "stream" or request_type.endswith("_stream")
    base = request_type[:-7] if request_type.endswith("_stream") else request_type
    return OPERATIONS.get(base, base), streamed


#: gen_ai.provider.name when the request does not name its backend.
DEFAULT_PROVIDER = "tinyllm"

# The conventions' advisory bucket boundaries (ExplicitBucketBoundaries).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                    20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

_ATTR_CACHE_MAX = 1024


class _GenAIMetrics:
    """The four GenAI histograms, recorded once per request at its end."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token", unit="s",
            description="Time to generate first token for successful responses.",
            explicit_bucket_boundaries_advisory=list(TTFT_BUCKETS),
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token", unit="s",
            description="Time per output token generated after the first token for "
            "successful responses.",
            explicit_bucket_boundaries_advisory=list(TPOT_BUCKETS),
        )
        # (request_type, model, provider, error) -> (base, input, output) attribute sets,
        # built once: the same few combinations repeat for every request.
        self._attrs: dict[tuple[str, str, str, str | None], tuple[dict[str, Any], ...]] = {}

    def _attributes(self, request: Request) -> tuple[dict[str, Any], ...]:
        error = None if request.error is None else type(request.error).__qualname__
        provider = request.provider or DEFAULT_PROVIDER
        key = (request.request_type, request.model, provider, error)
        found = self._attrs.get(key)
        if found is None:
            base: dict[str, Any] = {
                "gen_ai.operation.name": operation_of(request.request_type)[0],
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": request.model,
            }
            if error is not None:
                base["error.type"] = error
            found = (base, {**base, "gen_ai.token.type": "input"},
                     {**base, "gen_ai.token.type": "output"})
            if len(self._attrs) < _ATTR_CACHE_MAX:
                self._attrs[key] = found
        return found

    def record(self, request: Request) -> None:
        base, inp, out = self._attributes(request)
        duration = request.duration or 0.0
        self.duration.record(duration, base)
        if request.input_tokens:
            self.tokens.record(request.input_tokens, inp)
        output = request.output_tokens
        if output:
            self.tokens.record(output, out)
        ttft = request.ttft
        if request.error is None and ttft is not None:
            self.ttft.record(ttft, base)
            tpot = request.tpot  # the lifecycle's figure, the one the tpot objective judges
            if tpot is not None:
                self.tpot.record(tpot, base)


class _GenAIObserver:
    """The lifecycle observer: a span per request, and the metrics when enabled."""

    def __init__(self, tracer: Tracer | None, metrics: _GenAIMetrics | None) -> None:
        self._tracer = tracer
        self._metrics = metrics

    def on_start(self, request: Request) -> None:
        tracer = self._tracer
        if tracer is None:
            return
        rtype = request.request_type
        operation, streamed = operation_of(rtype)
        provider = request.provider or DEFAULT_PROVIDER
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": request.model,
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,  # the older name, still read by many backends
            "tinyllm.graph": request.graph,
            "tinyllm.request_type": rtype,
        }
        if streamed:
            attrs["tinyllm.stream"] = True
            attrs["gen_ai.request.stream"] = True
        if request.request_id is not None:
            attrs["tinyllm.request.id"] = request.request_id
        span = tracer.start_span(
            f"{operation} {request.model}", kind=SpanKind.CLIENT, attributes=attrs
        )
        request.span = span
        ctx = span.get_span_context()
        if ctx.trace_flags.sampled:
            # Only a kept trace is worth linking from a histogram bucket.
            request.exemplar = {"trace_id": format(ctx.trace_id, "032x")}

    def on_end(self, request: Request) -> None:
        span = request.span
        if span is not None and self._tracer is not None:
            if span.is_recording():
                # One set_attributes call: the SDK takes its span lock once.
                attrs: dict[str, Any] = {"gen_ai.usage.output_tokens": request.output_tokens}
                if request.input_tokens:
                    attrs["gen_ai.usage.input_tokens"] = request.input_tokens
                if request.finish_reasons:
                    attrs["gen_ai.response.finish_reasons"] = request.finish_reasons
                if request.response_model:
                    attrs["gen_ai.response.model"] = request.response_model
                if request.ttft is not None:
                    attrs["gen_ai.response.time_to_first_chunk"] = request.ttft
                if request.cached_input_tokens:
                    attrs["gen_ai.usage.cache_read.input_tokens"] = request.cached_input_tokens
                if request.cost_usd is not None:
                    # Not (yet) in the GenAI conventions' registry; the name the
                    # instrumentations that record cost agree on (OpenLIT, Traceloop).
                    attrs["gen_ai.usage.cost"] = request.cost_usd
                if request.slo is not None:
                    attrs["tinyllm.slo.met"] = request.slo["all"]
                if request.error is not None:
                    attrs["tinyllm.error_type"] = request.error_type or "unknown"
                elif request.status == "cancelled":  # not an error: the client went away
                    attrs["tinyllm.request.status"] = "cancelled"
                span.set_attributes(attrs)
                if request.error is not None:
                    _record_error(span, request.error)
            span.end()
        metrics = self._metrics
        if metrics is not None:
            metrics.record(request)
