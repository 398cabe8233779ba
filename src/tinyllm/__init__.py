"""tinyllm: production observability for anything that runs LLMs.

Example:
    >>> from tinyllm import get_metrics_collector, start_metrics_server
    >>> metrics = get_metrics_collector()
"""

from tinyllm import _composition  # noqa: F401  (wires the default sinks into the core)
from tinyllm._version import __version__
from tinyllm.errors import MetricsServerError, ModelError, TinyLLMError, classify_error
from tinyllm.http import MetricsServer, start_metrics_server
from tinyllm.instrumentation import instrument, uninstrument
from tinyllm.lifecycle import Request, RequestLifecycle, get_lifecycle
from tinyllm.metrics import (
    InferenceContext,
    MetricsCollector,
    get_metrics_collector,
    track_inference_request,
    track_token_generation,
    update_gpu_metrics,
)

__all__ = [
    "InferenceContext",
    "MetricsCollector",
    "MetricsServer",
    "MetricsServerError",
    "ModelError",
    "Request",
    "RequestLifecycle",
    "TinyLLMError",
    "__version__",
    "classify_error",
    "get_lifecycle",
    "get_metrics_collector",
    "instrument",
    "start_metrics_server",
    "track_inference_request",
    "track_token_generation",
    "uninstrument",
    "update_gpu_metrics",
]
