"""GPU sampler: without NVML it says why; with NVML it feeds every device's gauges.

No NVIDIA GPU exists on the CI machine, so NVML itself is replaced by a small stand-in
module with pynvml's call signatures; the real library is exercised on a GPU machine
(docs/performance.md records that run).
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from tinyllm.metrics import GPUSampler, MetricsCollector, gpu_status


def _fake_pynvml(devices: int, fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    state = {"init": 0}

    def nvmlInit() -> None:
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["init"] -= 1

    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: devices  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=(h + 1) * 2**30, total=80 * 2**30, free=0
    )
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        gpu=10 * (h + 1), memory=0
    )
    mod.state = state  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    mod = _fake_pynvml(devices=2)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    yield mod


def test_without_nvidia_ml_py_status_says_how_to_get_it(no_pynvml: None) -> None:
    status = gpu_status()
    assert not status.available
    assert "pip install 'tinyllm[gpu]'" in status.reason
    assert GPUSampler().start() is False


def test_without_driver_status_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(0, fail_init=True))
    status = gpu_status()
    assert not status.available and "NVML is not usable" in status.reason


def test_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(0))
    assert gpu_status().reason == "NVML found no NVIDIA GPU"


def test_sampler_feeds_every_device(fake_nvml: types.ModuleType) -> None:
    reg = CollectorRegistry()
    sampler = GPUSampler(interval=0.01, collector=MetricsCollector(registry=reg))
    assert sampler.start() is True
    try:
        deadline = time.monotonic() + 5
        while sampler.samples < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sampler.stop()
    assert sampler.errors == 0
    for gpu in (0, 1):
        labels = {"model": "all", "gpu_id": str(gpu)}
        assert reg.get_sample_value("tinyllm_gpu_memory_used_bytes", labels) == (gpu + 1) * 2**30
        assert reg.get_sample_value("tinyllm_gpu_memory_reserved_bytes", labels) == 80 * 2**30
        assert reg.get_sample_value("tinyllm_gpu_utilization_percent", labels) == 10 * (gpu + 1)
    assert fake_nvml.state["init"] == 0  # every nvmlInit was shut down


def test_sampler_survives_a_failing_driver_call(fake_nvml: types.ModuleType) -> None:
    def broken(handle: int) -> None:
        raise RuntimeError("GPU is lost")

    fake_nvml.nvmlDeviceGetMemoryInfo = broken  # type: ignore[attr-defined]
    sampler = GPUSampler(interval=0.01, collector=MetricsCollector(registry=CollectorRegistry()))
    sampler.start()
    time.sleep(0.1)
    sampler.stop()
    assert sampler.errors >= 1


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        GPUSampler(interval=0)
