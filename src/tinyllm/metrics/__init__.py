"""Prometheus metrics for LLM workloads: the catalog, the collector, inference tracking,
GPU gauges and the metrics server.

Example:
    >>> from tinyllm.metrics import get_metrics_collector
    >>> metrics = get_metrics_collector()
    >>> metrics.increment_request_count(model="model", graph="graph", request_type="generate")
"""

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
from tinyllm.metrics.server import MetricsServer, start_metrics_server

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
