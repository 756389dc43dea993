"""Device figures while a run trains: the process (CPU, RSS), the machine (memory) and each visible NVIDIA GPU
through NVML (utilisation, memory, temperature, power; ``gpu0`` is ``cuda:0``). :func:`read_devices` measures
once as flat scalars, the names used in ``metrics.jsonl``, the trackers and the report; :class:`DeviceSampler`
measures on a background thread so training never waits on NVML, and the training thread writes the samples
itself. Without an NVIDIA driver only the process and memory figures are recorded.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

__all__ = ["DeviceSampler", "Nvml", "read_devices"]

GB = 1024**3


class Nvml:
    """The GPUs NVML reports, in CUDA order; no handles (not an error) without an NVIDIA driver."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.error: str | None = None
        try:
            import pynvml
        except ImportError:
            self.error = "nvidia-ml-py is not installed"
            return
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.error = f"NVML did not initialise ({exc})"
            return
        try:
            self.handles = self._visible()
        except pynvml.NVMLError as exc:
            self.error = f"NVML lists no GPUs ({exc})"

    def _visible(self) -> list[Any]:
        nv = self.nvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            return [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        handles = []
        for item in (v.strip() for v in visible.split(",")):
            if not item or item == "-1":
                break  # CUDA stops at the first invalid entry
            if item.isdigit():
                handles.append(nv.nvmlDeviceGetHandleByIndex(int(item)))
            else:
                handles.append(nv.nvmlDeviceGetHandleByUUID(item))
        return handles

    def read(self) -> dict[str, float]:
        """Utilisation, memory, temperature and power per GPU, as far as each reports them."""
        out: dict[str, float] = {}
        if not self.handles:
            return out
        nv = self.nvml
        for i, h in enumerate(self.handles):
            readers = {
                "util": lambda h=h: float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
                "mem_used_gb": lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).used / GB,
                "mem_total_gb": lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).total / GB,
                "temp_c": lambda h=h: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                "power_w": lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            }
            for name, read in readers.items():
                try:
                    out[f"gpu{i}_{name}"] = round(read(), 3)
                except nv.NVMLError:  # e.g. power on a GPU without a sensor: that figure only is missing
                    pass
        return out

    def close(self) -> None:
        if self.handles:
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass
            self.handles = []


class _Process:
    """psutil's view of this process (CPU % since the last reading: the first primes it) and the machine."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)

    def read(self) -> dict[str, float]:
        mem = self.psutil.virtual_memory()
        return {
            "cpu_percent": round(self.proc.cpu_percent(None), 1),
            "rss_gb": round(self.proc.memory_info().rss / GB, 4),
            "sys_mem_used_gb": round((mem.total - mem.available) / GB, 4),
            "sys_mem_total_gb": round(mem.total / GB, 4),
        }


def read_devices(nvml: Nvml | None = None, process: Any = None) -> dict[str, float]:
    """One measurement: the process and memory figures, then each GPU's (see the module docstring)."""
    out = (process or _Process()).read()
    if nvml is not None:
        out.update(nvml.read())
    return out


class DeviceSampler:
    """Measure every ``every`` seconds on a daemon thread; :meth:`drain` hands the samples over."""

    def __init__(self, every: float, gpus: bool = True, keep: int = 10_000) -> None:
        if not every > 0:
            raise ValueError(f"the sampling interval must be > 0 seconds, got {every}")
        self.every = float(every)
        self.process = _Process()
        self.nvml = Nvml() if gpus else None
        self._samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> dict[str, Any]:
        """Measure now (on the calling thread) and queue the sample."""
        record = {"time": round(time.time(), 3), **read_devices(self.nvml, self.process)}
        self._samples.append(record)
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failing sensor must never stop training
                continue

    def start(self) -> DeviceSampler:
        self._thread = threading.Thread(target=self._run, name="mswelu-device-sampler", daemon=True)
        self._thread.start()
        return self

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while self._samples:
            out.append(self._samples.popleft())
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.nvml is not None:
            self.nvml.close()
