"""GPU gauges: ``update_gpu_metrics`` (the inference-server API) and an NVML sampler.

``update_gpu_metrics`` takes whatever the caller knows (for a PyTorch server:
``torch.cuda.memory_allocated`` as used and ``memory_reserved`` as reserved, which is
the inference-server API's meaning of "memory efficiency"). ``GPUSampler`` reads every
NVIDIA device through NVML (``pip install 'tinyllm[gpu]'``) on a background thread; it
reports the device's memory in use as *used* and the device's total memory as
*reserved*, so there the efficiency ratio is the device's fill level. Without
nvidia-ml-py or without a GPU, ``gpu_status()`` says why and nothing else changes.

Example:
    >>> from tinyllm.metrics import update_gpu_metrics
    >>> update_gpu_metrics("gpt4", 0, used_bytes=6e9, reserved_bytes=8e9, utilization=75)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tinyllm._validation import check_amount
from tinyllm.metrics.collector import MetricsCollector, get_metrics_collector

__all__ = ["GPUSampler", "GPUStatus", "gpu_status", "update_gpu_metrics"]


def update_gpu_metrics(
    model: str,
    gpu_id: int | str,
    used_bytes: float,
    reserved_bytes: float,
    utilization: float,
    *,
    collector: MetricsCollector | None = None,
) -> None:
    """Set the GPU gauges of ``model`` on ``gpu_id``; efficiency = used / reserved.

    Raises ValueError (naming the argument, changing nothing) for negative or non-finite
    byte counts and for a utilization outside 0-100.
    """
    check_amount("used_bytes", used_bytes)
    check_amount("reserved_bytes", reserved_bytes)
    check_amount("utilization", utilization)
    if utilization > 100:
        raise ValueError(f"utilization is a percentage (0-100), got {utilization!r}")
    c = collector or get_metrics_collector()
    key = (model, str(gpu_id))
    c._child("gpu_memory_used_bytes", key).set(used_bytes)
    c._child("gpu_memory_reserved_bytes", key).set(reserved_bytes)
    c._child("gpu_utilization_percent", key).set(utilization)
    if reserved_bytes > 0:
        c._child("memory_efficiency_ratio", key).set(min(1.0, used_bytes / reserved_bytes))


@dataclass(frozen=True)
class GPUStatus:
    """Whether GPU figures can be had here, and if not, why."""

    available: bool
    devices: int
    reason: str


def _nvml() -> Any:
    import pynvml  # from nvidia-ml-py, the 'gpu' extra

    return pynvml


def gpu_status() -> GPUStatus:
    """Probe NVML once: how many GPUs there are, or why there are no GPU figures."""
    try:
        nvml = _nvml()
    except ImportError:
        return GPUStatus(False, 0, "nvidia-ml-py is not installed (pip install 'tinyllm[gpu]')")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return GPUStatus(False, 0, f"NVML is not usable here: {exc} (no NVIDIA driver or GPU)")
    try:
        count = int(nvml.nvmlDeviceGetCount())
    finally:
        nvml.nvmlShutdown()
    if count == 0:
        return GPUStatus(False, 0, "NVML found no NVIDIA GPU")
    return GPUStatus(True, count, f"{count} NVIDIA GPU(s) via NVML")


class GPUSampler:
    """Samples every NVIDIA GPU every ``interval`` seconds into the GPU gauges.

    ``model`` is the label value the samples carry (default ``all``: the device as a
    whole). ``start()`` returns False, and does nothing, when ``gpu_status()`` says no
    GPU figures can be had; a failing sample is counted in ``errors`` and skipped.

    Example:
        >>> sampler = GPUSampler(interval=5.0)
        >>> started = sampler.start()   # False on a machine without NVIDIA GPUs
        >>> sampler.stop()
    """

    def __init__(
        self,
        interval: float = 5.0,
        model: str = "all",
        *,
        collector: MetricsCollector | None = None,
    ) -> None:
        check_amount("interval", interval)
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.model = model
        self.collector = collector
        self.errors = 0
        self.samples = 0
        self.status: GPUStatus | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> int:
        """Read every device once and update the gauges; returns devices sampled."""
        nvml = _nvml()
        count = int(nvml.nvmlDeviceGetCount())
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util = nvml.nvmlDeviceGetUtilizationRates(handle)
            update_gpu_metrics(
                self.model, index, float(memory.used), float(memory.total), float(util.gpu),
                collector=self.collector,
            )
        self.samples += 1
        return count

    def start(self) -> bool:
        """Start sampling in a daemon thread; False when there is no GPU to sample."""
        self.status = gpu_status()
        if not self.status.available:
            return False
        _nvml().nvmlInit()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tinyllm-gpu", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # a driver hiccup must not kill the host application
                self.errors += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and release NVML."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=self.interval + 1)
        try:
            _nvml().nvmlShutdown()
        except Exception:
            self.errors += 1
