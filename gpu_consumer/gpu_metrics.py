"""GPU memory and utilisation as Prometheus gauges, read from torch.cuda at each scrape.

Registered by the GPU consumer after its engine loaded, only when that engine uses torch and CUDA is
available, so a CPU-only worker exports no GPU series at all (absent rather than zero). Utilisation needs
NVML (`nvidia-ml-py`); without it only the memory gauges are exported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from acefarm.infra.logging import get_logger

log = get_logger(__name__)
_registered: list[CudaCollector] = []


class CudaCollector(Collector):
    """`acefarm_gpu_memory_bytes{device,kind}` (allocated, reserved, free, total), `acefarm_gpu_utilization_ratio`."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One sample per visible CUDA device, read now."""
        import torch

        memory = GaugeMetricFamily(
            "acefarm_gpu_memory_bytes",
            "GPU memory by device: allocated/reserved by torch, free/total on the card.",
            labels=["device", "kind"],
        )
        utilization = GaugeMetricFamily(
            "acefarm_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (NVML).",
            labels=["device"],
        )
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            free, total = torch.cuda.mem_get_info(index)
            memory.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(index)))
            memory.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(index)))
            memory.add_metric([device, "free"], float(free))
            memory.add_metric([device, "total"], float(total))
            try:
                utilization.add_metric([device], torch.cuda.utilization(index) / 100.0)
            except Exception:  # no NVML (nvidia-ml-py) here: memory only
                continue
        yield memory
        if utilization.samples:
            yield utilization


def register_gpu_metrics() -> bool:
    """Export GPU gauges when the loaded engine uses torch and CUDA is available (once per process); True if
    registered. An engine that never imported torch (null, tone) has no GPU to report and pays no torch import."""
    if "torch" not in sys.modules:
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    if not _registered:
        _registered.append(CudaCollector())
        REGISTRY.register(_registered[0])
        log.info("metrics.gpu_registered", devices=torch.cuda.device_count())
    return True
