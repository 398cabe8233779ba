"""Prometheus metrics for LLM workloads: the catalog, the collector, inference tracking,
GPU gauges, and (from ``tinyllm.http``) the metrics server.

Example:
    >>> from tinyllm.metrics import get_metrics_collector
    >>> metrics = get_metrics_collector()
    >>> metrics.increment_request_count(model="model", graph="graph", request_type="generate")
"""

import typing

from tinyllm.metrics.catalog import ALERTS, CATALOG, AlertRule, Kind, MetricSpec
from tinyllm.metrics.collector import (
    BREAKER_STATES,
    OTHER,
    MetricsCollector,
    get_metrics_collector,
    reset_metrics_collector,
)
from tinyllm.metrics.gpu import GPUSampler, GPUStatus, gpu_status, update_gpu_metrics
from tinyllm.metrics.inference import (
    InferenceContext,
    track_inference_request,
    track_token_generation,
)

if typing.TYPE_CHECKING:
    from tinyllm.http.threaded import MetricsServer, start_metrics_server

__all__ = [
    "ALERTS",
    "BREAKER_STATES",
    "CATALOG",
    "OTHER",
    "AlertRule",
    "GPUSampler",
    "GPUStatus",
    "InferenceContext",
    "Kind",
    "MetricSpec",
    "MetricsCollector",
    "MetricsServer",
    "get_metrics_collector",
    "gpu_status",
    "reset_metrics_collector",
    "start_metrics_server",
    "track_inference_request",
    "track_token_generation",
    "update_gpu_metrics",
]


def __getattr__(name: str) -> typing.Any:
    # The metrics server is a surface (tinyllm.http), a layer above this package: it is
    # re-exported on first use, so that importing the metrics core never imports the
    # HTTP surface, whichever of the two a program happens to import first.
    if name in ("MetricsServer", "start_metrics_server"):
        from tinyllm.http import threaded

        return getattr(threaded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
